"""Presenting bench results: a rich table, a PNG of time against capacity, JSON."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ReplayTables.bench.workloads import WORKLOADS, Result

__all__ = ["format_time", "plot", "print_table", "write_json"]


def format_time(seconds: float) -> str:
    """``12.3 µs`` / ``1.20 ms`` / ``2.00 s`` with three significant figures."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def print_table(results: Sequence[Result], skipped: dict[str, str], console: Any = None) -> None:
    """One row per workload, one column per capacity: time per op and throughput."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    capacities = sorted({r.capacity for r in results})
    table = Table(title="ReplayTables: time per operation (median over repeats)")
    table.add_column("workload", style="bold")
    table.add_column("operation")
    for c in capacities:
        table.add_column(f"capacity {c:,}", justify="right")
    by_key = {(r.workload, r.capacity): r for r in results}
    for wid, w in WORKLOADS.items():
        if not any(r.workload == wid for r in results):
            continue
        cells = []
        for c in capacities:
            r = by_key.get((wid, c))
            if r is None:
                cells.append("—")
                continue
            rate = r.items_per_op / r.seconds_per_op
            cell = f"{format_time(r.seconds_per_op)}\n[dim]{rate:,.0f} items/s[/dim]"
            if "storage_bytes_per_transition" in r.extra:
                cell += f"\n[dim]{r.extra['storage_bytes_per_transition']:,.0f} B/transition[/dim]"
            cells.append(cell)
        table.add_row(wid, w.description, *cells)
    console.print(table)
    for key, why in skipped.items():
        console.print(f"[yellow]{key}: not run[/yellow] — {why}")


def plot(results: Sequence[Result], path: Path) -> None:
    """Log-log plot of time per operation against capacity, one line per workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    for wid, w in WORKLOADS.items():
        rs = sorted((r for r in results if r.workload == wid), key=lambda r: r.capacity)
        if not rs:
            continue
        ax.plot([r.capacity for r in rs], [r.us_per_op for r in rs], marker="o", label=f"{wid}: {w.description}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("capacity (items)")
    ax.set_ylabel("time per operation (µs)")
    ax.set_title("ReplayTables: time per operation against capacity")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_json(results: Sequence[Result], skipped: dict[str, str], meta: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps({"meta": meta, "results": [r.to_json() for r in results], "skipped": skipped},
                               indent=1))
