"""The ``replaytables`` command.

    replaytables bench                                   # W1-W5 and SEQ at 10k, 100k, 1M
    replaytables bench --capacities 1000 100000 --workloads W3 W4
    replaytables bench --quick                           # seconds: tiny op counts, one repeat
    replaytables bench --peers                           # other libraries side by side (peer harness)

Only argparse is imported at start-up; numpy, rich and matplotlib load when a
command needs them, so ``replaytables --help`` is instant.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

DEFAULT_CAPACITIES = [10_000, 100_000, 1_000_000]
WORKLOAD_IDS = ["W1", "W2", "W3", "W4", "W5", "SEQ"]


def _positive_int(text: str) -> int:
    try:
        value = int(float(text.replace("_", "")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"capacity {text!r}: expected a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"capacity {text!r}: expected a positive integer")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    from ReplayTables import __version__

    parser = argparse.ArgumentParser(prog="replaytables", description="ReplayTables command-line tools.")
    parser.add_argument("--version", action="version", version=f"ReplayTables {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = sub.add_parser(
        "bench", help="time the standard workloads (W1-W5, SEQ) at chosen capacities",
        description="Time the standard replay workloads on this library at the capacities you pick; print a "
                    "table, write a PNG of time against capacity and a JSON of raw results. With --peers, run "
                    "the peer harness instead (other libraries side by side; --harness or "
                    "$REPLAYTABLES_PEER_HARNESS names it).")
    bench.add_argument("--capacities", nargs="+", type=_positive_int, default=None, metavar="N",
                       help="buffer capacities (default: 10000 100000 1000000; W5 is skipped above 200000)")
    bench.add_argument("--workloads", nargs="+", default=WORKLOAD_IDS, metavar="W",
                       type=str.upper, choices=WORKLOAD_IDS, help="subset of " + " ".join(WORKLOAD_IDS))
    bench.add_argument("--scale", type=_positive_float, default=0.25,
                       help="fraction of the harness's op counts per timed loop (default 0.25)")
    bench.add_argument("--repeats", type=int, default=3, help="timed loops per figure; the median is shown")
    bench.add_argument("--quick", action="store_true", help="smoke run: scale 0.01, one repeat")
    bench.add_argument("--out", type=Path, default=Path("replaytables-bench"),
                       help="output folder for bench.png and bench.json (default ./replaytables-bench)")
    bench.add_argument("--peers", action="store_true",
                       help="run the peer harness (needs the peers' venvs under PEER_VENV_ROOT)")
    bench.add_argument("--peer-names", nargs="+", default=None, metavar="NAME",
                       help="with --peers: only these entries of the peer list")
    bench.add_argument("--harness", default=None, metavar="PATH",
                       help="with --peers: the harness folder, holding peers.py (default: "
                            "$REPLAYTABLES_PEER_HARNESS)")
    bench.add_argument("--peer-config", default=None, metavar="JSON",
                       help="with --peers: the peer list (default benchmarks/peers.json in the repository, "
                            "else the harness's own)")
    return parser


def bench_command(args: argparse.Namespace) -> int:
    if args.peers:
        from ReplayTables.bench.peers import run_peers

        return run_peers(args.harness, args.workloads, args.peer_names, args.out / "peers",
                         config_arg=args.peer_config)

    import platform
    import time

    from ReplayTables.errors import ConfigError
    from ReplayTables.optional import require

    try:  # the bench extra; say how to install it rather than fail deep inside
        require("rich", "bench", "replaytables bench")
        require("matplotlib", "bench", "replaytables bench")
    except ConfigError as e:
        print(f"replaytables: {e}", file=sys.stderr)
        return 2
    from rich.console import Console

    from ReplayTables import __version__
    from ReplayTables.bench.report import plot, print_table, write_json
    from ReplayTables.bench.workloads import WORKLOADS, Result, Unavailable, run_workload

    console = Console()
    capacities = sorted(set(args.capacities or DEFAULT_CAPACITIES))
    scale, repeats = (0.01, 1) if args.quick else (args.scale, max(1, args.repeats))
    results: list[Result] = []
    skipped: dict[str, str] = {}
    t0 = time.perf_counter()
    with console.status("") as status:
        for wid in args.workloads:
            workload = WORKLOADS[wid]
            for capacity in capacities:
                key = f"{wid} @ {capacity:,}"
                if workload.max_capacity is not None and capacity > workload.max_capacity:
                    skipped[key] = (f"capacity above {workload.max_capacity:,} (the harness's W5 size; "
                                    f"~7 KB per transition)")
                    continue
                status.update(f"running {key} ...")
                try:
                    results.append(run_workload(workload, capacity, scale, repeats))
                except Unavailable as e:
                    skipped[wid] = str(e)
                    break
    elapsed = time.perf_counter() - t0
    print_table(results, skipped, console)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"version": __version__, "python": platform.python_version(), "machine": platform.machine(),
            "scale": scale, "repeats": repeats, "capacities": capacities, "seconds": elapsed}
    write_json(results, skipped, meta, args.out / "bench.json")
    if results:
        plot(results, args.out / "bench.png")
        console.print(f"wrote {args.out / 'bench.png'} and {args.out / 'bench.json'} ({elapsed:.1f} s)")
    else:
        console.print(f"nothing ran; wrote {args.out / 'bench.json'}")
    return 0 if results else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``replaytables`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        return bench_command(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
