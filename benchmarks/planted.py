"""Planted-structure benchmark: does `recsys fit` with library defaults learn what is in the data?

    .venv/bin/python benchmarks/planted.py                    # both sizes -> benchmarks/PLANTED.md + .json
    .venv/bin/python benchmarks/planted.py --sizes small      # one size
    .venv/bin/python benchmarks/planted.py --render           # re-render the markdown from PLANTED.json

Each size is a log from ``recsys.data.synthetic.planted_mixture_log`` (per-user latent taste,
stochastic lag-1 and lag-2 successors, popularity skew, variable lengths), written as a CSV.
For its leave-one-out test targets the table shows the exact posterior-predictive oracle, the
``popularity`` and ``transitions`` baselines and ``recsys fit`` with nothing but a ``data:``
block (every model and training setting at the library default), each with test NDCG@10,
HR@10 and wall time. The defaults must reach >= 0.90 of the oracle, beat ``transitions``, and
never exceed 1.02 of the oracle (more would mean a leak).

Runs go through the public CLI, one process at a time, into ``--work`` (default
``runs/planted``); a finished run directory is reused, an unfinished one resumed
(``recsys fit --resume``), so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys import rundir  # noqa: E402
from recsys.data.synthetic import mixture_oracle_metrics, planted_mixture_log  # noqa: E402

SIZES = {  # name: (users, items, generator seed)
    "small": (6000, 3000, 1),
    "large": (20000, 10000, 2),
}
RANKERS = ("oracle", "popularity", "transitions", "defaults")
OUT_MD = ROOT / "benchmarks" / "PLANTED.md"
OUT_JSON = ROOT / "benchmarks" / "PLANTED.json"
WALL = "wall.json"  # this benchmark's own file in a run directory: the fit's wall time


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _config(name: str, csv: Path, work: Path, model: str | None) -> Path:
    """A config with a ``data:`` block only (plus ``model.name`` for a baseline)."""
    lines = [
        f"name: {name}",
        f"output_dir: {work / 'runs'}",
        "data: {name: planted-%s, format: csv, path: %s, user_col: user, item_col: item, time_col: timestamp}"
        % (csv.stem, csv),
    ]
    if model is not None:
        lines.append(f"model: {{name: {model}}}")
    path = work / f"{csv.stem}-{name}.yaml"
    _write_atomic(path, "\n".join(lines) + "\n")
    return path


def _fit(config: Path, run_dir: Path) -> tuple[dict, float]:
    """(metrics.json, wall seconds) of a finished run, fitting or resuming it as needed."""
    if not rundir.has_metrics(run_dir):
        partial = rundir.partial_dir(run_dir)
        cmd = [sys.executable, "-m", "recsys.cli", "fit"]
        cmd += ["--resume", str(partial)] if rundir.has_last_checkpoint(partial) else [
            "--config", str(config), "--run-dir", str(run_dir), "train.progress_bar=false"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        wall = time.perf_counter() - start
        _write_atomic(run_dir / WALL, json.dumps({"wall_s": wall}))
    wall = json.loads((run_dir / WALL).read_text())["wall_s"] if (run_dir / WALL).is_file() else None
    return rundir.read_metrics(run_dir), wall


def run_size(name: str, work: Path) -> dict:
    users, items, seed = SIZES[name]
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    log = planted_mixture_log(users, items, seed=seed)
    csv = work / f"{name}.csv"
    if not csv.is_file():
        tmp = csv.with_name(csv.name + ".tmp")
        log.frame.to_csv(tmp, index=False)
        os.replace(tmp, csv)
    gen_s = time.perf_counter() - start
    start = time.perf_counter()
    oracle = {"valid": mixture_oracle_metrics(log, 2, (10,)), "test": mixture_oracle_metrics(log, 1, (10,))}
    rows = {"oracle": {"valid": oracle["valid"], "test": oracle["test"], "wall_s": time.perf_counter() - start}}
    for ranker in RANKERS[1:]:
        model = None if ranker == "defaults" else ranker
        metrics, wall = _fit(_config(ranker, csv, work, model), work / "runs" / f"{name}-{ranker}")
        rows[ranker] = {"valid": metrics["valid"], "test": metrics["test"], "wall_s": wall,
                        "epochs": metrics.get("epochs"), "best_epoch": metrics.get("best_epoch")}
        print(f"{name} {ranker}: test ndcg@10 {metrics['test']['ndcg@10']:.4f}", flush=True)
    return {"users": users, "items": items, "events": int(len(log.frame)), "generator_seed": seed,
            "generate_s": gen_s, "rows": rows}


def render(doc: dict) -> str:
    out = [
        "# Planted structure: the library defaults against the exact oracle",
        "",
        "Generated by `benchmarks/planted.py` (see its docstring); do not edit by hand.",
        "",
        "The log (`recsys.data.synthetic.planted_mixture_log`, default parameters): every user has a latent",
        "taste cluster (20 clusters); event t is a draw from one of 4 fixed, weighted successors of the item one",
        "step back (weight 0.30), of the item two steps back (0.25), or from the user's taste (0.45); items carry",
        "Zipf(0.8) popularity; lengths are 5 + geometric (mean 48). The oracle ranks by the exact posterior",
        "predictive (`mixture_oracle_probs`; tests check it against brute-force enumeration). Leave-one-out, full",
        "catalogue, pessimistic ties. `defaults` is `recsys fit` with a `data:` block only.",
        "",
        f"Machine: {doc.get('machine', '?')}. Measured {doc.get('date', '?')}; {doc.get('note', '')}",
        "",
    ]
    for name, size in doc["sizes"].items():
        rows = size["rows"]
        oracle = rows["oracle"]["test"]["ndcg@10"]
        out += [
            f"## {name}: {size['users']:,} users x {size['items']:,} items, {size['events']:,} events",
            "",
            "| ranker | test NDCG@10 | test HR@10 | of oracle | valid NDCG@10 | epochs (best) | wall time |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for ranker in RANKERS:
            r = rows.get(ranker)
            if r is None:
                continue
            ep = f"{r['epochs']} ({r['best_epoch']})" if r.get("epochs") is not None else ""
            wall = f"{r['wall_s']:.0f} s" if r.get("wall_s") is not None else "?"
            out.append(
                f"| {ranker} | {r['test']['ndcg@10']:.4f} | {r['test']['hr@10']:.4f} | "
                f"{r['test']['ndcg@10'] / oracle:.3f} | {r['valid']['ndcg@10']:.4f} | {ep} | {wall} |"
            )
        d = rows.get("defaults")
        if d is not None:
            ratio = d["test"]["ndcg@10"] / oracle
            beats = d["test"]["ndcg@10"] > rows["transitions"]["test"]["ndcg@10"]
            out += ["", f"Bars: defaults >= 0.90 x oracle: {'met' if ratio >= 0.90 else 'missed'} ({ratio:.3f}); "
                    f"beat transitions: {'met' if beats else 'missed'}; <= 1.02 x oracle: "
                    f"{'met' if ratio <= 1.02 else 'missed'}."]
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=list(SIZES))
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "planted")
    ap.add_argument("--note", default="", help="what else ran on the machine meanwhile")
    ap.add_argument("--render", action="store_true", help="only re-render PLANTED.md from PLANTED.json")
    args = ap.parse_args(argv)
    doc = json.loads(OUT_JSON.read_text()) if OUT_JSON.is_file() else {"sizes": {}}
    if not args.render:
        for name in args.sizes:
            doc["sizes"][name] = run_size(name, args.work / name)
        doc["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
        doc["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        doc["note"] = args.note
        doc["sizes"] = {k: doc["sizes"][k] for k in SIZES if k in doc["sizes"]}
        _write_atomic(OUT_JSON, json.dumps(doc, indent=1))
    _write_atomic(OUT_MD, render(doc))
    print(OUT_MD.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
