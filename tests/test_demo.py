"""``bolina-scaler demo``: the whole scripted day, on looptime's fake clock (no real waiting)."""

from __future__ import annotations

import pytest

from bolina_scaler.demo import run_demo
from bolina_scaler.demo.output import sparkline


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


class TestSparkline:
    def test_scales_to_the_top(self):
        """0 is a blank, the top value the full block, values in between in proportion."""
        assert sparkline([0, 4, 8], top=8) == " ▄█"

    def test_clips(self):
        """Values above the top are drawn full, negative ones blank."""
        assert sparkline([-1, 20], top=8) == " █"
