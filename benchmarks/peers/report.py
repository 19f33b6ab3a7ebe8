"""The peers section's numbers from the runs' records: the target, time to it, ratios to ours, the table.

Pure functions of the JSON records the runners write (``common.write_record``), so they can be
checked by hand on made-up curves. A record with ``"status": "failed"`` carries ``"error"``.
"""

from __future__ import annotations

import math
import statistics

LIBRARIES = {"ours": "recsys (ours)", "rectools": "RecTools SASRec", "recbole": "RecBole SASRec"}
# (key, column title, unit); a ratio is peer / ours, so > 1 is slower or larger, or, for NDCG, better.
METRICS = (
    ("prepare_s", "data preparation", "s"),
    ("median_epoch_s", "median s / epoch (training)", "s"),
    ("time_to_target_s", "time to target (training s)", "s"),
    ("peak_rss_gb", "peak RSS", "GB"),
    ("eval_s", "full-ranking evaluation (median, all users)", "s"),
    ("test_ndcg10", "test NDCG@10 (best validation epoch)", ""),
)


def ok(record: dict | None) -> bool:
    return record is not None and record.get("status", "ok") == "ok"


def curve(record: dict) -> list[tuple[float, float]]:
    """(cumulative training seconds, validation NDCG@10) after each epoch, in order; a last
    epoch cut short by the budget (``partial_epoch``) counts with the seconds it ran."""
    epochs = list(record.get("epochs", []))
    if record.get("partial_epoch"):
        epochs.append(record["partial_epoch"])
    out, total = [], 0.0
    for e in epochs:
        total += e["train_s"]
        out.append((total, e["val_ndcg10"]))
    return out


def final_val(record: dict) -> float | None:
    points = curve(record)
    return points[-1][1] if points else None


def target_ndcg(records: dict[str, dict], peers: list[str]) -> tuple[float | None, str | None]:
    """The lowest final (last-epoch) validation NDCG@10 among the peers that ran (issue 6), and whose."""
    finals = [(final_val(records[p]), p) for p in peers if ok(records.get(p)) and final_val(records[p]) is not None]
    if not finals:
        return None, None
    return min(finals)


def time_to_target(record: dict, target: float | None) -> float | None:
    """Training seconds until the first epoch whose validation NDCG@10 is at least ``target``;
    None if no epoch reached it (within the run's budget and epochs)."""
    if target is None:
        return None
    for seconds, value in curve(record):
        if value >= target:
            return seconds
    return None


def median_epoch_s(record: dict) -> float | None:
    """Median training seconds of the complete epochs; None if none completed."""
    times = [e["train_s"] for e in record.get("epochs", [])]
    return statistics.median(times) if times else None


def eval_s(record: dict) -> float | None:
    times = [e["val_s"] for e in record.get("epochs", [])]
    if record.get("partial_epoch"):
        times.append(record["partial_epoch"]["val_s"])
    return statistics.median(times) if times else None


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0 or math.isnan(base):
        return None
    return value / base


def summary(record: dict, target: float | None) -> dict:
    """The table's numbers of one run; ``test_ndcg10`` as the harness recomputed it."""
    return {
        "prepare_s": record["prepare_s"],
        "median_epoch_s": median_epoch_s(record),
        "time_to_target_s": time_to_target(record, target),
        "peak_rss_gb": record["peak_rss_gb"],
        "eval_s": eval_s(record),
        "test_ndcg10": record.get("test_ndcg10_harness", record["test_ndcg10"]),
    }


def compare(records: dict[str, dict], peers: list[str], target: float | None) -> dict[str, dict]:
    """Per library: ``values`` (see ``summary``) and ``ratios`` to ours (None where either is missing)."""
    base = summary(records["ours"], target) if ok(records.get("ours")) else {}
    out = {}
    for lib in ["ours", *peers]:
        if not ok(records.get(lib)):
            continue
        values = summary(records[lib], target)
        out[lib] = {"values": values, "ratios": {k: ratio(v, base.get(k)) for k, v in values.items()}}
    return out


def seen_counts_match(records: dict[str, dict]) -> dict[str, bool]:
    """Whether each library saw ours' users, users with a training pair, evaluated users and
    catalogue (the items it scores plus those it cannot: RecTools' table holds training items only)."""
    keys = ("n_users", "n_train_users", "n_eval_users")
    ours = records.get("ours")

    def catalogue(r: dict) -> int:
        return r["n_items"] + r.get("n_items_unscorable", 0)

    return {lib: ok(ours) and all(r.get(k) == ours.get(k) for k in keys) and catalogue(r) == catalogue(ours)
            for lib, r in records.items() if ok(r) and lib != "ours"}


# Issue 6's "Done when" bars against the peers: (metric, peer, largest ours / peer allowed).
BARS = (("median_epoch_s", "rectools", 1 / 4), ("time_to_target_s", "rectools", 1 / 4),
        ("time_to_target_s", "recbole", 1 / 20))


def bars(records: dict[str, dict], target: float | None) -> list[dict]:
    """Each bar of ``BARS`` whose peer ran: ours' value, the peer's, the allowed share, and
    whether ours meets it (None when it cannot be decided). A peer that never reached the
    target took longer than all the training seconds it ran, so that total is a lower bound
    on its time. The epoch bar also needs ours' test NDCG@10 to be at least the peer's."""
    out = []
    ours = summary(records["ours"], target) if ok(records.get("ours")) else None
    for key, peer, share in BARS:
        if ours is None or not ok(records.get(peer)):
            continue
        theirs = summary(records[peer], target)
        value, bound = theirs[key], False
        if value is None and key == "time_to_target_s" and curve(records[peer]):
            value, bound = curve(records[peer])[-1][0], True
        met = None
        if ours[key] is None:
            met = False if value is not None else None  # ours never reached what the peer did
        elif value is not None:
            within = ours[key] <= share * value
            met = within if not bound else (True if within else None)  # above a lower bound: undecided
        if key == "median_epoch_s" and met is not None:
            met = met and ours["test_ndcg10"] >= theirs["test_ndcg10"]
        out.append({"metric": key, "peer": peer, "share": share, "ours": ours[key], "peer_value": value,
                    "peer_lower_bound": bound, "met": met,
                    "ndcg": (ours["test_ndcg10"], theirs["test_ndcg10"]) if key == "median_epoch_s" else None})
    return out


def markdown_bars(records: dict[str, dict], target: float | None) -> list[str]:
    rows = bars(records, target)
    if not rows:
        return []
    lines = ["Issue 6's bars:", "", "| bar | ours | peer | ours / peer | met |", "|---|---:|---:|---:|---|"]
    for b in rows:
        what = "median s / epoch" if b["metric"] == "median_epoch_s" else "time to target"
        title = f"{what} <= 1/{round(1 / b['share'])} of {LIBRARIES[b['peer']]}"
        if b["ndcg"]:
            title += f", test NDCG@10 at least its ({b['ndcg'][0]:.4f} vs {b['ndcg'][1]:.4f})"
        ours = "not reached" if b["ours"] is None else f"{b['ours']:.1f} s"
        peer = "n/a" if b["peer_value"] is None else (">" if b["peer_lower_bound"] else "") + f"{b['peer_value']:.1f} s"
        share = "" if b["ours"] is None or not b["peer_value"] else \
            ("<" if b["peer_lower_bound"] else "") + f"{b['ours'] / b['peer_value']:.3f}"
        mark = {True: "✓", False: "✗", None: "undecided"}[b["met"]]
        lines.append(f"| {title} | {ours} | {peer} | {share} | {mark} |")
    return lines + [""]


# ---- markdown ---------------------------------------------------------------------------


def _cell(key: str, value: float | None, ratio_: float | None, record: dict) -> str:
    if value is None:
        if key == "time_to_target_s":
            return f"not reached within budget ({len(curve(record))} epochs)"
        if key == "median_epoch_s" and record.get("partial_epoch"):
            p = record["partial_epoch"]
            return f"> {p['train_s']:.0f} s (no epoch completed: {p['batches_done']} of {p['batches']} batches)"
        return "n/a"
    unit = {"s": " s", "GB": " GB", "": ""}[dict((k, u) for k, _, u in METRICS)[key]]
    text = f"{value:.4f}" if key == "test_ndcg10" else f"{value:.2f}{unit}" if unit == " GB" else f"{value:.1f}{unit}"
    return text if ratio_ is None else f"{text} (x{ratio_:.2f})"


def markdown_dataset(name: str, result: dict) -> list[str]:
    records, peers, target = result["records"], result["peers"], result["target"]
    table = compare(records, peers, target)
    lines = [f"### {name}", ""]
    if target is not None:
        source = ("given with --target-ndcg" if result["target_from"] == "given" else
                  f"the lowest final (last-epoch) value among the peers: {LIBRARIES[result['target_from']]}")
        lines.append(f"Target validation NDCG@10: **{target:.4f}**, {source}.")
    else:
        lines.append("Target validation NDCG@10: none (no peer finished an epoch).")
    lines += ["", "| library | loss | " + " | ".join(t for _, t, _ in METRICS) + " | epochs (stopped by) |",
              "|---|---|" + "---:|" * len(METRICS) + "---|"]
    for lib in ["ours", *peers]:
        record = records.get(lib)
        if not ok(record):
            error = (record or {}).get("error", "not run").strip().splitlines()
            reason = (error[-1] if error else "?").replace("|", "\\|")
            lines.append(f"| {LIBRARIES[lib]} | failed: {reason} |" + " |" * (len(METRICS) + 1))
            continue
        row = table[lib]
        cells = [_cell(k, row["values"][k], None if lib == "ours" else row["ratios"][k], record) for k, _, _ in METRICS]
        loss = record["loss"].split(":")[0]
        version = f" {record['version']}" if lib != "ours" else ""
        n_epochs = len(record["epochs"]) + (1 if record.get("partial_epoch") else 0)
        lines.append(f"| {LIBRARIES[lib]}{version} | {loss} | " + " | ".join(cells)
                     + f" | {n_epochs} ({record['stopped']}) |")
    lines += [""]
    ours = records.get("ours")
    if ok(ours):
        counts = []
        for lib in ["ours", *peers]:
            r = records.get(lib)
            if ok(r):
                extra = (f" + {r['n_items_unscorable']:,} it cannot score (held-out targets only)"
                         if r.get("n_items_unscorable") else "")
                counts.append(f"{LIBRARIES[lib]} {r['n_users']:,} users ({r['n_train_users']:,} with a training "
                              f"pair) / {r['n_items']:,} items{extra} / {r['n_eval_users']:,} evaluated")
        match = seen_counts_match(records)
        verdict = "all equal to ours" if all(match.values()) else "differ: " + ", ".join(
            LIBRARIES[k] for k, v in match.items() if not v)
        lines += [f"Seen: {'; '.join(counts)} ({verdict}).", ""]
        curves = []
        for lib in ["ours", *peers]:
            r = records.get(lib)
            if ok(r):
                pts = ", ".join(f"{v:.4f}" for _, v in curve(r))
                curves.append(f"- {LIBRARIES[lib]}: {pts}")
        lines += ["Validation NDCG@10 by epoch:", "", *curves, ""]
        lines += markdown_bars(records, target)
    return lines
