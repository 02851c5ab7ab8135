"""The targets issue 14 sets the policy, checked against one comparison: met, or missed by how much.

Pure. For one trace (every built-in one, and any other), with the shipped policy:

* **oracle**: seconds under target ≤ 2 × the oracle's + 60 s per flash crowd, and replica-hours
  ≤ 1.3 × the oracle's;
* **naive**: fewer seconds under target *and* fewer replica-hours than the seed's naive rule;
* **hpa**: ≤ 1/5 of the HPA's seconds under target at ≤ 1.25 × its replica-hours;
* **today**: no more seconds under target than the policy without demand (when that row is there).
"""

from __future__ import annotations

from dataclasses import dataclass

from bolina_scaler.simulator.runner import FALLBACK, Comparison, Result

__all__ = ["TargetCheck", "check_targets"]


@dataclass(frozen=True, slots=True)
class TargetCheck:
    """One target: its name, whether it is met, and the figures that say so."""

    name: str
    met: bool
    detail: str

    def __str__(self) -> str:
        return f"{self.name} {'met' if self.met else 'MISSED'} ({self.detail})"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else ("0×" if not a else "∞")


def check_targets(comparison: Comparison) -> list[TargetCheck]:
    """The issue's targets for ``bolina-scaler`` in this comparison (rows that are missing are skipped)."""
    rows = {r.scaler: r for r in comparison.results}
    ours = rows.get("bolina-scaler")
    if ours is None:
        return []
    checks: list[TargetCheck] = []
    oracle = rows.get("oracle")
    if oracle is not None:
        flashes = len(comparison.trace.flashes)
        allowed = 2 * oracle.under_target_s + 60 * flashes
        checks.append(
            TargetCheck(
                "oracle: under target",
                ours.under_target_s <= allowed,
                f"{ours.under_target_s:.0f} s ≤ 2 × {oracle.under_target_s:.0f} + 60 × {flashes} = {allowed:.0f} s",
            )
        )
        checks.append(
            TargetCheck(
                "oracle: replica·h",
                ours.replica_hours <= 1.3 * oracle.replica_hours,
                f"{ours.replica_hours:.1f} = {_ratio(ours.replica_hours, oracle.replica_hours)} the oracle's, ≤ 1.3×",
            )
        )
    naive = rows.get("naive")
    if naive is not None:
        checks.append(_dominates(ours, naive))
    hpa = rows.get("hpa")
    if hpa is not None:
        checks.append(
            TargetCheck(
                "hpa: under target",
                ours.under_target_s <= hpa.under_target_s / 5,
                f"{ours.under_target_s:.0f} s ≤ {hpa.under_target_s:.0f} / 5 = {hpa.under_target_s / 5:.0f} s",
            )
        )
        checks.append(
            TargetCheck(
                "hpa: replica·h",
                ours.replica_hours <= 1.25 * hpa.replica_hours,
                f"{ours.replica_hours:.1f} = {_ratio(ours.replica_hours, hpa.replica_hours)} the HPA's, ≤ 1.25×",
            )
        )
    today = rows.get(FALLBACK)
    if today is not None:
        checks.append(
            TargetCheck(
                "today: under target",
                ours.under_target_s <= today.under_target_s,
                f"{ours.under_target_s:.0f} s ≤ {today.under_target_s:.0f} s without demand",
            )
        )
    return checks


def _dominates(ours: Result, naive: Result) -> TargetCheck:
    return TargetCheck(
        "naive: both",
        ours.under_target_s < naive.under_target_s and ours.replica_hours < naive.replica_hours,
        f"{ours.under_target_s:.0f} < {naive.under_target_s:.0f} s and {ours.replica_hours:.1f} < "
        f"{naive.replica_hours:.1f} replica·h",
    )
