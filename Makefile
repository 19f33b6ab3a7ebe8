# The two README commands: `make demo` and `make test`. Each creates or reuses .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export RECSYS_DATA_DIR ?= $(abspath ../shared/datasets)
# The library defaults (issue 18: fast path in bf16 + transition head) on S3-Rec Beauty, capped
# at 12 epochs so that set-up and training fit in about 6 minutes on a 2-core machine.
DEMO_CONFIG ?= experiments/s3rec-beauty/sasrec-mixture.yaml
DEMO_OVERRIDES ?= train.max_epochs=12

.PHONY: demo test install install-dev clean

install: $(VENV)/.base
install-dev: $(VENV)/.dev

# torch is pinned and installed first: the pin resolves to a local CPU wheel, whereas an
# unpinned torch pulled in by a dependency would fetch several GB of CUDA packages.
# The package (distribution recsys-lab, import name recsys) goes in with its `train` extra:
# the bare install serves artifacts only (see README, Install). Before issue 23 the
# distribution was called `recsys`; an old editable install of that name is removed first.
$(VENV)/.base: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip uninstall -q -y recsys 2>/dev/null || true
	$(BIN)/python -m pip install -q -e '.[train]'
	touch $@

# The test tools and every optional extra the tests exercise (`dev` includes `all`).
$(VENV)/.dev: $(VENV)/.base
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.base
	$(BIN)/recsys fit --config $(DEMO_CONFIG) $(DEMO_OVERRIDES)

test: $(VENV)/.dev
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
