"""When a reporter writes to Consul (the deadband), and the output line the scaler parses."""

from __future__ import annotations

import pytest

from bolina_scaler.core.model import Status
from bolina_scaler.reporter.deadband import Deadband, Published, format_output, news, quantize_demand

A, W = Status.AVAILABLE, Status.WARNING
BAND = Deadband(load=0.05, demand=0.25, refresh=300.0)
LAST = Published(status=A, load=0.5, demand=1.0, at=1000.0)


def why(**changes: object) -> str | None:
    reading: dict[str, object] = {"status": A, "load": 0.5, "demand": 1.0, "now": 1005.0, **changes}
    return news(LAST, deadband=BAND, **reading)  # type: ignore[arg-type]


class TestNews:
    def test_first_reading_is_written(self):
        assert news(None, status=A, load=None, demand=None, now=0.0, deadband=BAND) == "first"

    def test_status_always(self):
        """A status change is news whatever the figures."""
        assert why(status=W) == "status"

    @pytest.mark.parametrize(
        ("load", "expected"), [(0.5, None), (0.54, None), (0.55, "load"), (0.45, "load"), (None, "load")]
    )
    def test_load_moves_by_the_band(self, load, expected):
        """The load is news once it moved a whole step (0.05) from what was last written."""
        assert why(load=load) == expected

    @pytest.mark.parametrize(
        ("demand", "expected"), [(1.2, None), (0.8, None), (1.25, "demand"), (0.75, "demand"), (None, "demand")]
    )
    def test_demand_moves_by_a_share_of_itself(self, demand, expected):
        """The demand is news once it moved 25 % of what was last written."""
        assert why(demand=demand) == expected

    def test_a_small_demand_needs_the_absolute_floor(self):
        """Around 0.1, a 25 % move is one client: the load's band (0.05) is the least that counts."""
        last = Published(status=A, load=0.1, demand=0.1, at=0.0)
        assert news(last, status=A, load=0.1, demand=0.14, now=1.0, deadband=BAND) is None
        assert news(last, status=A, load=0.1, demand=0.15, now=1.0, deadband=BAND) == "demand"

    def test_refresh(self):
        """Nothing moved for refresh seconds: written again, so the demand's stamp stays fresh."""
        assert why(now=1299.0) is None
        assert why(now=1300.0) == "refresh"

    def test_bad_bands_are_refused(self):
        with pytest.raises(ValueError, match="refresh"):
            Deadband(refresh=float("nan"))
        with pytest.raises(ValueError, match="demand"):
            Deadband(demand=-1)


class TestOutput:
    def test_load_then_stamped_demand_then_the_stage(self):
        published = Published(status=A, load=0.55, demand=1.304, at=1712345678.9)
        assert format_output(published, "available: cpu=0.4") == "load=0.55 demand=1.30@1712345678 available: cpu=0.4"

    def test_without_figures(self):
        assert format_output(Published(status=A, load=None, demand=None, at=1.0), "available") == "available"

    def test_bounded(self):
        text = format_output(Published(status=A, load=0.5, demand=1.0, at=1.0), "x" * 500)
        assert len(text) == 200
        assert text.startswith("load=0.50 demand=1.00@1 ")

    @pytest.mark.parametrize(("raw", "kept"), [(-1.0, 0.0), (0.123, 0.12), (1e9, 100.0)])
    def test_demand_is_clipped(self, raw, kept):
        assert quantize_demand(raw) == kept
