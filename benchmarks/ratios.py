"""The issue's performance targets, checked on one results folder of the peer harness.

    python3 benchmarks/ratios.py benchmarks/results/<name> [more runs ...] [--ours ReplayTables-next]

Reads ``<folder>/peers.json`` (written by the peer harness's ``$BENCH_DIR/peers.py``) and prints a
markdown table: our time per op, the fastest *library* peer in the same run (the
numpy reference is a floor, not a library, so it is listed separately), the
ratios, and whether each target holds. Every ratio compares cells of the same run.
With several run folders it prints each run's table, then the median over runs of
each per-run ratio, with its min-max range. Standard library only (runs with any
``python3``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Any

NUMPY = "numpy-ref"

# workload -> (absolute bound in µs or None, min speed-up vs the fastest library peer or None,
#              max ratio to numpy-ref or None, text)
TARGETS: dict[str, tuple[float | None, float | None, float | None, str]] = {
    "W1": (2.5, 4.0, None, "single add ≤ 2.5 µs and ≥ 4× faster than the fastest peer"),
    "W2": (None, None, 1.2, "batched add of 64 within 1.2× of plain numpy"),
    "W3": (35.0, 2.5, None, "uniform sample 256 from 1M ≤ 35 µs and ≥ 2.5× faster than the fastest peer"),
    "W4": (100.0, 5.0, None, "PER sample+update 256 at 1M ≤ 100 µs and ≥ 5× faster than every peer"),
    # steady-state variants (adds into an already full buffer), same targets as W1/W2
    "W1s": (2.5, 4.0, None, "(steady state) single add ≤ 2.5 µs and ≥ 4× faster than the fastest peer"),
    "W2s": (None, None, 1.2, "(steady state) batched add of 64 within 1.2× of plain numpy"),
}


def load(folder: str) -> dict[str, Any]:
    with open(os.path.join(folder, "peers.json")) as f:
        data: dict[str, Any] = json.load(f)
    return data


def fmt(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x / 1000:.3g} ms" if x >= 1000 else f"{x:.3g} µs"


def table(data: dict[str, Any], ours: str) -> str:
    by = {(r["peer"], r["workload"]): r for r in data["results"] if r.get("ok")}
    floors = data.get("floors", {})
    lines = [
        f"Targets (issue 2), run {data['meta']['date']}; ours = {ours}; every ratio within this run.\n",
        "| workload | target | ours | fastest library peer | speed-up vs it | numpy-ref | ours / numpy-ref "
        "| floor memcpy / packed gather | ours / gather | met? |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ran = {r["workload"] for r in data["results"]}
    for w, (bound, speedup, numpy_ratio, text) in TARGETS.items():
        if w not in ran:
            continue
        r = by.get((ours, w))
        if r is None:
            lines.append(f"| {w} | {text} | not run / failed | | | | | | | no |")
            continue
        us = r["us_per_op"]
        peers = [(p, rr["us_per_op"]) for (p, ww), rr in by.items() if ww == w and p not in (ours, NUMPY)]
        best = min(peers, key=lambda t: t[1]) if peers else None
        npy = by.get((NUMPY, w))
        npy_us = npy["us_per_op"] if npy else None
        fl = floors.get(w, {})
        gather = fl.get("gather_us")
        ok = True
        if bound is not None:
            ok &= us <= bound
        if speedup is not None:
            ok &= best is not None and best[1] / us >= speedup
        if numpy_ratio is not None:
            ok &= npy_us is not None and us / npy_us <= numpy_ratio
        extra = ""
        if w == "W4":
            extra = f" (sample {r['us_sample']:.0f} + update {r['us_update']:.0f})"
        best_txt = f"{best[0]} {fmt(best[1])}" if best else "—"
        sp = f"{best[1] / us:.2f}×" if best else "—"
        nr = f"{us / npy_us:.2f}" if npy_us else "—"
        floor_txt = f"{fmt(fl.get('memcpy_us'))} / {fmt(gather)}" if fl else "—"
        gr = f"{us / gather:.2f}" if gather else "—"
        lines.append(f"| {w} | {text} | {fmt(us)}{extra} | {best_txt} | {sp} | {fmt(npy_us)} | {nr} | {floor_txt} "
                     f"| {gr} | {'yes' if ok else 'no'} |")
    return "\n".join(lines) + "\n"


def per_run(data: dict[str, Any], ours: str) -> dict[str, dict[str, float]]:
    """Workload -> {ours_us, speedup (vs fastest library peer), numpy_ratio} for one run."""
    by = {(r["peer"], r["workload"]): r for r in data["results"] if r.get("ok")}
    out: dict[str, dict[str, float]] = {}
    for w in TARGETS:
        r = by.get((ours, w))
        if r is None:
            continue
        us = r["us_per_op"]
        row = {"ours_us": us}
        peers = [rr["us_per_op"] for (p, ww), rr in by.items() if ww == w and p not in (ours, NUMPY)]
        if peers:
            row["speedup"] = min(peers) / us
        if (NUMPY, w) in by:
            row["numpy_ratio"] = us / by[(NUMPY, w)]["us_per_op"]
        out[w] = row
    return out


def merged(runs: list[dict[str, Any]], ours: str) -> str:
    rows = [per_run(d, ours) for d in runs]
    lines = [f"Over {len(runs)} runs: median [min-max] of the per-run figures.\n",
             "| workload | ours µs/op | speed-up vs fastest library peer | ours / numpy-ref |", "|---|---|---|---|"]
    for w in TARGETS:
        if not any(w in r for r in rows):
            continue
        cells = []
        for key, unit in (("ours_us", " µs"), ("speedup", "×"), ("numpy_ratio", "")):
            v = sorted(r[w][key] for r in rows if w in r and key in r[w])
            cells.append(f"{statistics.median(v):.3g}{unit} [{v[0]:.3g}-{v[-1]:.3g}]" if v else "—")
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--ours", default="ReplayTables-next")
    a = ap.parse_args(argv)
    runs = [load(f) for f in a.folders]
    for f, d in zip(a.folders, runs):
        if len(runs) > 1:
            sys.stdout.write(f"\n### {os.path.basename(os.path.normpath(f))}\n\n")
        sys.stdout.write(table(d, a.ours))
    if len(runs) > 1:
        sys.stdout.write("\n" + merged(runs, a.ours))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
