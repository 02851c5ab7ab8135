"""Present simulation results: a text or Markdown table, and a plot (matplotlib, optional).

Pure formatting apart from ``plot``, which writes a PNG. matplotlib is an optional dependency
(``pip install 'bolina-scaler[plot]'``) so the daemon image stays slim; ``plot`` raises
``PlotUnavailable`` with that advice when it is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bolina_scaler.simulator.runner import FALLBACK, Comparison, Result

__all__ = ["PlotUnavailable", "markdown_table", "plot", "text_table"]

COLUMNS = (
    ("policy", "policy"),
    ("under", "s under target"),
    ("rejected", "rejected client·h"),
    ("degraded", "degraded client·h"),
    ("replica_hours", "replica·h"),
    ("actions", "scale actions"),
    ("peak", "peak replicas"),
    ("first_up", "flash: 1st scale-up"),
    ("recovered", "flash: share back"),
    ("writes", "Consul writes/pod·h"),
)


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _seconds(value: float | None, *, applicable: bool) -> str:
    if not applicable:
        return "–"
    return "never" if value is None else f"{value:.0f} s"


def _row(result: Result, *, flash: bool) -> list[str]:
    return [
        result.scaler,
        f"{result.under_target_s:.0f}",
        f"{result.rejected_cs / 3600:.1f}",
        f"{result.degraded_cs / 3600:.1f}",
        f"{result.replica_hours:.1f}",
        str(result.actions),
        str(result.peak),
        _seconds(result.first_up_s, applicable=flash),
        _seconds(result.recovered_s, applicable=flash),
        f"{result.writes_per_server_hour:.0f}",
    ]


def _rows(comparison: Comparison) -> list[list[str]]:
    flash = comparison.trace.flash_at is not None
    return [_row(r, flash=flash) for r in comparison.results]


def text_table(comparison: Comparison) -> str:
    """A fixed-width table with a title line naming the trace and the run time."""
    header = [title for _, title in COLUMNS]
    rows = [header, *_rows(comparison)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        f"trace {comparison.trace.name} ({comparison.trace.duration / 3600:g} h virtual): "
        f"{comparison.trace.description} — simulated in {comparison.wall_s:.1f} s"
    ]
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(comparison: Comparison) -> str:
    header = [title for _, title in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(comparison)]
    return "\n".join(lines)


def plot(comparisons: Sequence[Comparison] | Comparison, path: Path | str, *, dpi: int = 100) -> Path:
    """Demand and replicas (top), Available share against the target (bottom), per trace: 900×600 px."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'bolina-scaler[plot]' (or pip install 'matplotlib>=3.7')"
        ) from None
    comparison = comparisons if isinstance(comparisons, Comparison) else comparisons[0]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), dpi=dpi, sharex=True, height_ratios=(3, 2))
    first = comparison.results[0]
    hours = [s.t / 3600 for s in first.samples]
    top.fill_between(
        hours, [s.demand for s in first.samples], step="post", color="0.85", label="demand (servers at 100 %)"
    )
    styles: dict[str, dict[str, Any]] = {
        "bolina-scaler": {"color": "tab:blue", "linewidth": 1.6},
        FALLBACK: {"color": "tab:cyan", "linewidth": 1.0},
        "oracle": {"color": "black", "linewidth": 1.0, "linestyle": "--"},
        "hpa": {"color": "tab:orange", "linewidth": 1.2},
        "naive": {"color": "tab:green", "linewidth": 1.0},
    }
    for result in comparison.results:
        style = styles.get(result.scaler, {"linewidth": 1.0})
        t = [s.t / 3600 for s in result.samples]
        top.step(t, [s.pods for s in result.samples], where="post", label=f"{result.scaler} replicas", **style)
        shares = [s.available_share if s.available_share is not None else 0.0 for s in result.samples]
        bottom.step(t, shares, where="post", alpha=0.8, label=result.scaler, **style)
    bottom.axhline(first.target, color="red", linestyle="--", linewidth=1, label="target")
    for flash_at in comparison.trace.flashes:
        for axis in (top, bottom):
            axis.axvline(flash_at / 3600, color="0.4", linestyle=":", linewidth=1)
    top.set_ylabel("servers")
    top.set_title(f"{comparison.trace.name}: {comparison.trace.description}", fontsize=9)
    top.legend(fontsize=7, loc="upper right")
    bottom.set_ylabel("Available share")
    bottom.set_xlabel("hours (virtual)")
    bottom.set_ylim(-0.02, 1.02)
    bottom.legend(fontsize=7, loc="lower right", ncol=5)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return path
