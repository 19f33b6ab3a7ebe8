"""Search spaces: a YAML file of ranges over dotted config keys, checked before any trial runs.

A space file::

    params:                      # what the sampler chooses, per trial
      model.dropout: {type: float, low: 0.1, high: 0.6}
      train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}     # log-uniform
      model.n_blocks: {type: int, low: 1, high: 3}                       # optional step, log
      model.dim: {type: categorical, choices: [64, 128]}
    fixed:                       # set in every trial (e.g. an epoch cap for the search)
      train.max_epochs: 30
    sampler: {seed: 0, n_startup_trials: 10}    # TPE; seed defaults to the config's seed
    pruner: {type: median, n_startup_trials: 5, n_warmup_steps: 2}
    #       {type: hyperband, min_resource: 1, reduction_factor: 3}  |  {type: none}

Every error is a ``ConfigError`` that names the file, the line (from the YAML marks) and
the key. Each bound and choice is applied to the base config while parsing, so a value
the config would refuse (``model.dim: 100`` with ``n_heads: 3``) fails here, not in
trial 17.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recsys.config import ExperimentConfig
from recsys.errors import ConfigError

PARAM_TYPES = ("float", "int", "categorical")
PRUNERS = ("median", "hyperband", "none")
_PARAM_FIELDS = {
    "float": ({"type", "low", "high"}, {"log", "step"}),
    "int": ({"type", "low", "high"}, {"log", "step"}),
    "categorical": ({"type", "choices"}, set()),
}
_TOP_LEVEL = {"params", "fixed", "sampler", "pruner"}
_SAMPLER_FIELDS = {"seed", "n_startup_trials"}
_PRUNER_FIELDS = {
    "median": {"type", "n_startup_trials", "n_warmup_steps"},
    "hyperband": {"type", "min_resource", "max_resource", "reduction_factor"},
    "none": {"type"},
}


@dataclass(frozen=True)
class Param:
    """One searched config key: a float/int range (optionally log or stepped) or a choice."""

    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        """The value an Optuna ``trial`` proposes for this key."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.key, list(self.choices))

    def to_dict(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        out = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class SearchSpace:
    """A parsed space file: searched params, fixed overrides, sampler seed and pruner."""

    params: tuple[Param, ...]
    fixed: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    n_startup_trials: int = 10
    pruner: dict[str, Any] = field(default_factory=lambda: {"type": "median"})
    source: str = "<space>"

    def suggest(self, trial) -> dict[str, Any]:
        return {p.key: p.suggest(trial) for p in self.params}

    def config_for(self, base: ExperimentConfig, params: dict[str, Any]) -> ExperimentConfig:
        """The base config with the fixed overrides and then ``params`` applied."""
        return apply_values(base, {**self.fixed, **params}, self.source)

    def to_dict(self) -> dict[str, Any]:
        """Canonical form, stored with the study to detect a changed space on resume."""
        return {
            "params": {p.key: p.to_dict() for p in self.params},
            "fixed": dict(self.fixed),
            "sampler": {"seed": self.seed, "n_startup_trials": self.n_startup_trials},
            "pruner": dict(self.pruner),
        }

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def apply_values(base: ExperimentConfig, values: dict[str, Any], source: str = "<space>") -> ExperimentConfig:
    """Set dotted keys (``model.dropout``) to Python values and re-validate the config."""
    raw = base.to_dict()
    for key, value in values.items():
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{source}: {key}: unknown config section {part!r}")
            node = node[part]
        if parts[-1] not in node or isinstance(node[parts[-1]], dict):
            raise ConfigError(f"{source}: {key}: not a config key")
        node[parts[-1]] = value
    return ExperimentConfig.from_dict(raw, source=source)


# ---- parsing ------------------------------------------------------------------------------


class _Doc:
    """A YAML mapping node kept with its marks, so errors can point at a line."""

    def __init__(self, path: Path, node: yaml.Node) -> None:
        self.path, self.node = path, node

    def where(self, node: yaml.Node | None = None) -> str:
        node = node or self.node
        return f"{self.path}:{node.start_mark.line + 1}"

    def fail(self, node: yaml.Node | None, message: str) -> ConfigError:
        return ConfigError(f"{self.where(node)}: {message}")

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """``(key, key_node, value_node)`` in file order; duplicate keys are an error."""
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        seen: dict[str, int] = {}
        out = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, f"{what}: keys must be plain strings")
            key = key_node.value
            if key in seen:
                raise self.fail(key_node, f"{what}: {key} appears twice (first on line {seen[key]})")
            seen[key] = key_node.start_mark.line + 1
            out.append((key, key_node, value_node))
        return out

    @staticmethod
    def value(node: yaml.Node) -> Any:
        return yaml.safe_load(yaml.serialize(node))


def load_space(path: str | Path, base: ExperimentConfig) -> SearchSpace:
    """Parse and check a space file against the base config it will modify."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: search space file not found") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if root is None:
        raise ConfigError(f"{path}: empty search space file; it needs a params: mapping")
    doc = _Doc(path, root)
    sections = {key: (key_node, value) for key, key_node, value in doc.mapping(root, "the search space")}
    unknown = sorted(set(sections) - _TOP_LEVEL)
    if unknown:
        raise doc.fail(sections[unknown[0]][0],
                       f"unknown section {unknown[0]!r}; allowed: {', '.join(sorted(_TOP_LEVEL))}")
    if "params" not in sections:
        raise ConfigError(f"{path}: no params: section (the keys to search)")

    allowed = _config_keys(base)
    fixed: dict[str, Any] = {}
    if "fixed" in sections:
        for key, key_node, value in doc.mapping(sections["fixed"][1], "fixed"):
            _check_key(doc, key_node, key, allowed, "fixed")
            fixed[key] = doc.value(value)
            _try_config(doc, key_node, base, {key: fixed[key]}, f"fixed: {key}")
        _try_config(doc, sections["fixed"][1], base, fixed, "fixed")
    # Bounds and choices are checked on the config every trial starts from: base + fixed.
    start = apply_values(base, fixed) if fixed else base
    params = tuple(_param(doc, key, key_node, value, start, allowed)
                   for key, key_node, value in doc.mapping(sections["params"][1], "params"))
    if not params:
        raise doc.fail(sections["params"][1], "params: is empty; name at least one config key to search")
    for key, key_node, _ in doc.mapping(sections["fixed"][1], "fixed") if fixed else ():
        if any(p.key == key for p in params):
            raise doc.fail(key_node, f"fixed: {key} is also searched in params; keep one")

    seed, n_startup = None, 10
    if "sampler" in sections:
        raw = _fields(doc, sections["sampler"][1], "sampler", _SAMPLER_FIELDS)
        seed = _integer(doc, raw, "seed", "sampler", minimum=0) if "seed" in raw else None
        if "n_startup_trials" in raw:
            n_startup = _integer(doc, raw, "n_startup_trials", "sampler", minimum=0)

    pruner = _pruner(doc, sections["pruner"][1]) if "pruner" in sections else {"type": "median"}
    return SearchSpace(params, fixed, seed, n_startup, pruner, source=str(path))


def _config_keys(cfg: ExperimentConfig) -> set[str]:
    keys = set()

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                keys.add(prefix + k)

    walk(cfg.to_dict(), "")
    return keys


def _check_key(doc: _Doc, key_node: yaml.Node, key: str, allowed: set[str], section: str) -> None:
    if key not in allowed:
        section_name = key.partition(".")[0]
        near = sorted(k for k in allowed if k.startswith(section_name + "."))
        hint = f"; keys of {section_name}: {', '.join(near)}" if near else ""
        raise doc.fail(key_node, f"{section}: {key} is not a config key (use section.key, e.g. model.dropout){hint}")


def _fields(doc: _Doc, node: yaml.Node, what: str, allowed: set[str]) -> dict[str, Any]:
    out = {}
    for name, key_node, value in doc.mapping(node, what):
        if name not in allowed:
            raise doc.fail(key_node, f"{what}: unknown field {name!r}; allowed: {', '.join(sorted(allowed))}")
        out[name] = (key_node, doc.value(value))
    return out


def _integer(doc: _Doc, raw: dict, name: str, what: str, minimum: int | None = None) -> int:
    node, value = raw[name]
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise doc.fail(node, f"{what}: {name} must be an integer{bound}, got {value!r}")
    return value


def _number(doc: _Doc, raw: dict, name: str, what: str, integer: bool) -> float | int:
    node, value = raw[name]
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string: accept it
        try:
            value = float(value)
        except ValueError:
            pass
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        kind = "an integer" if integer else "a finite number"
        raise doc.fail(node, f"{what}: {name} must be {kind}, got {value!r}")
    return value if integer else float(value)


def _param(doc: _Doc, key: str, key_node: yaml.Node, node: yaml.Node, base: ExperimentConfig,
           allowed: set[str]) -> Param:
    what = f"params: {key}"
    _check_key(doc, key_node, key, allowed, "params")
    if not isinstance(node, yaml.MappingNode):
        raise doc.fail(node, f"{what} must be a mapping like {{type: float, low: 0.1, high: 0.5}}, "
                             f"got {doc.value(node)!r}")
    kinds = {name: value for name, _, value in doc.mapping(node, what)}
    if "type" not in kinds:
        raise doc.fail(node, f"{what}: missing type (one of {', '.join(PARAM_TYPES)})")
    kind = doc.value(kinds["type"])
    if kind not in PARAM_TYPES:
        hint = " (log-uniform: type: float with log: true)" if str(kind).startswith("log") else ""
        raise doc.fail(kinds["type"], f"{what}: type must be one of {', '.join(PARAM_TYPES)}, got {kind!r}{hint}")
    required, optional = _PARAM_FIELDS[kind]
    raw = _fields(doc, node, what, required | optional)
    missing = sorted(required - set(raw))
    if missing:
        raise doc.fail(node, f"{what}: type {kind} needs {', '.join(missing)}")

    if kind == "categorical":
        choice_node, choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise doc.fail(choice_node, f"{what}: choices must be a non-empty list, got {choices!r}")
        for c in choices:
            if not (c is None or isinstance(c, (bool, int, float, str))):
                raise doc.fail(choice_node, f"{what}: choices must be scalars (number, string, bool, null), got {c!r}")
        if len(set(map(repr, choices))) != len(choices):
            raise doc.fail(choice_node, f"{what}: choices repeat a value: {choices!r}")
        for c in choices:
            _try_config(doc, choice_node, base, {key: c}, f"{what}: choice {c!r}")
        return Param(key, kind, choices=tuple(choices))

    integer = kind == "int"
    low = _number(doc, raw, "low", what, integer)
    high = _number(doc, raw, "high", what, integer)
    if not low < high:
        raise doc.fail(raw["high"][0], f"{what}: low must be < high, got low={low!r}, high={high!r}")
    log = False
    if "log" in raw:
        log_node, log = raw["log"]
        if not isinstance(log, bool):
            raise doc.fail(log_node, f"{what}: log must be true or false, got {log!r}")
        if log and low <= 0:
            raise doc.fail(raw["low"][0], f"{what}: a log range needs low > 0, got {low!r}")
    step = None
    if "step" in raw:
        step = _number(doc, raw, "step", what, integer)
        if step <= 0:
            raise doc.fail(raw["step"][0], f"{what}: step must be > 0, got {step!r}")
        if log:
            raise doc.fail(raw["step"][0], f"{what}: step and log cannot be combined")
    for bound, value in (("low", low), ("high", high)):
        _try_config(doc, raw[bound][0], base, {key: value}, f"{what}: {bound}={value!r}")
    return Param(key, kind, low, high, log, step)


def _pruner(doc: _Doc, node: yaml.Node) -> dict[str, Any]:
    entries = {name: value for name, _, value in doc.mapping(node, "pruner")}
    kind = doc.value(entries["type"]) if "type" in entries else None
    if kind not in PRUNERS:
        raise doc.fail(entries.get("type", node), f"pruner: type must be one of {', '.join(PRUNERS)}, got {kind!r}")
    raw = _fields(doc, node, f"pruner ({kind})", _PRUNER_FIELDS[kind])
    out: dict[str, Any] = {"type": kind}
    for name in sorted(set(raw) - {"type"}):
        if kind == "hyperband" and name == "max_resource" and raw[name][1] == "auto":
            out[name] = "auto"
            continue
        minimum = 2 if name == "reduction_factor" else (1 if name in ("min_resource", "max_resource") else 0)
        out[name] = _integer(doc, raw, name, f"pruner ({kind})", minimum=minimum)
    return out


def _try_config(doc: _Doc, node: yaml.Node, base: ExperimentConfig, values: dict[str, Any], what: str) -> None:
    try:
        apply_values(base, values, source="")
    except ConfigError as exc:
        reason = str(exc).removeprefix(": ")
        raise doc.fail(node, f"{what} gives an invalid config: {reason}") from None
