"""``bolina-scaler demo``: the whole scripted day, on looptime's fake clock (no real waiting)."""

from __future__ import annotations

import re

import pytest

from bolina_scaler.demo import run_demo
from bolina_scaler.demo.output import in_scenario_seconds, sparkline


def _section(out: str, title: str) -> list[str]:
    """The lines of one section of the demo's report, after its title line(s), up to the blank line."""
    return out.split(title, 1)[1].split("\n\n", 1)[0].splitlines()[1:]


class TestDemo:
    @pytest.mark.looptime
    async def test_the_scenario_scales_up_and_down_for_its_reasons(self, capsys: pytest.CaptureFixture[str]):
        """The demo ends by itself (exit 0) after scaling up for the crowd and down after it, and says why."""
        assert await run_demo(speed=1.0) == 0
        out = capsys.readouterr().out
        actions = out.split("Scale actions (scenario seconds):", 1)[1].split("\n\n", 1)[0]
        assert "cold_start" in actions
        assert "below_target" in actions
        assert "above_scale_down_ratio" in actions
        assert "SuccessfulRescale" in out
        removed = out.split("Pods removed by scale-downs", 1)[1].split("\n\n", 1)[0]
        rows = removed.splitlines()[1:]
        first_step = [row for row in rows if row.split()[0:2] == rows[0].split()[0:2]]
        # deletion cost: the crashed server is among those removed by the first scale-down
        assert any("was critical" in row for row in first_step), rows
        assert '"Metadata": {"ServerID"' in out  # the servers API answered in the seed's shape
        assert "The run at a glance" in out

    @pytest.mark.looptime
    async def test_a_faster_demo_tells_its_durations_in_scenario_seconds(self, capsys: pytest.CaptureFixture[str]):
        """At --speed 3 the daemon's windows are 3 times shorter; the tables say scenario seconds and
        so do the texts in them: the 6 s stabilization is "6s", a 2 s step period "2s" (it printed
        "for 2s" and "per 0.666667s")."""
        assert await run_demo(speed=3.0) == 0
        out = capsys.readouterr().out
        actions = "\n".join(_section(out, "Scale actions (scenario seconds):"))
        events = "\n".join(_section(out, "Kubernetes Events on deployment/bolina"))
        assert "scale_down_ratio 0.8 for 6s" in actions
        assert "for 2s" not in actions
        assert "per 2s" in events
        assert "0.666667" not in actions + events

    @pytest.mark.looptime
    async def test_removed_pods_are_listed_in_the_order_their_costs_chose(self, capsys: pytest.CaptureFixture[str]):
        """Each scale-down's pods are listed as the ReplicaSet chose them, lowest deletion cost first
        (Critical, then the least loaded), and the servers' loads differ, so "least loaded" shows."""
        assert await run_demo(speed=1.0) == 0
        out = capsys.readouterr().out
        rows = [row.split() for row in _section(out, "Pods removed by scale-downs") if row.lstrip().startswith("t=")]
        assert rows
        batches: dict[str, list[list[str]]] = {}
        for row in rows:
            batches.setdefault(row[1] if row[0] == "t=" else row[0], []).append(row)
        costs = [[int(row[-1]) for row in batch] for batch in batches.values()]
        assert all(batch == sorted(batch) for batch in costs), costs
        assert any(len(batch) > 1 for batch in costs)
        loads = {row[row.index("load") + 1] for row in rows}
        kept = [line for line in _section(out, "Pods removed by scale-downs") if "kept, loads" in line]
        spans = [line.split("loads ", 1)[1].rstrip(")").split(" to ") for line in kept]
        assert len(loads) > 1 or any(low != high for low, high in spans), (loads, spans)
        assert any(low != high for low, high in spans), "the servers kept all carried one load"

    @pytest.mark.looptime
    async def test_a_clamp_says_it_counts_replicas(self, capsys: pytest.CaptureFixture[str]):
        """Beside "allows removing 11", the clamp says "wanted 3 replicas", not a bare "wanted 3"."""
        assert await run_demo(speed=1.0) == 0
        events = "\n".join(_section(capsys.readouterr().out, "Kubernetes Events on deployment/bolina"))
        assert "scale_down_step: wanted " in events
        assert re.search(r"scale_down_step: wanted \d+ replicas?, limited to \d+ \(at most", events), events
        assert not re.search(r"wanted \d+, limited", events), events


class TestInScenarioSeconds:
    @pytest.mark.parametrize(
        ("text", "speed", "told"),
        [
            ("at most 2 down per 0.666667s, 0 used", 3.0, "at most 2 down per 2s, 0 used"),
            (
                "stayed ≥ 0.8 for 2s; mean load 0.10 allows removing 11",
                3.0,
                "stayed ≥ 0.8 for 6s; mean load 0.10 allows removing 11",
            ),
            ("for 0.4s of 2s; 2 more server(s) needed", 3.0, "for 1.2s of 6s; 2 more server(s) needed"),
            ("retry in 250ms", 2.0, "retry in 0.5s"),
            ("per 0.666667s", 1.0, "per 0.666667s"),
        ],
    )
    def test_durations_are_scaled_and_nothing_else(self, text: str, speed: float, told: str):
        """Durations are multiplied by the speed and rounded; counts, shares and loads are left alone."""
        assert in_scenario_seconds(text, speed) == told


class TestSparkline:
    def test_scales_to_the_top(self):
        """0 is a blank, the top value the full block, values in between in proportion."""
        assert sparkline([0, 4, 8], top=8) == " ▄█"

    def test_clips(self):
        """Values above the top are drawn full, negative ones blank."""
        assert sparkline([-1, 20], top=8) == " █"
