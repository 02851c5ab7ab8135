"""Demand traces: how many clients per second arrive, and which servers fail, over virtual time.

Pure data and arithmetic (reading a CSV file is the one I/O). A trace is a step function of the
arrival rate plus optional events: the moments flash crowds start (to measure reaction time and
to count the allowance the targets give each one) and the moments servers start failing. Built-ins
are sized for servers of 100 clients with 5-minute sessions: a rate of ``r`` clients/s keeps about
``300·r`` clients connected, which is ``3·r`` servers at full capacity. Every built-in is a fixed
function (the noisy day's noise comes from its own fixed seed), so a simulation is deterministic
per simulation seed.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BUILTIN_TRACES", "Trace", "builtin_trace", "load_trace", "trace_from_csv"]

HOUR = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Trace:
    """Arrival rate (clients/s) as breakpoints ``(t, rate)``: the rate holds until the next breakpoint."""

    name: str
    duration: float
    points: tuple[tuple[float, float], ...]
    description: str = ""
    flashes: tuple[float, ...] = ()
    """When each flash crowd (a sudden step of demand) starts. Reaction time is measured from the
    first; the targets allow 60 s under target per flash crowd on top of twice the oracle's."""
    failures: tuple[float, ...] = ()
    """Times at which one more running server starts failing (reports Critical, drops its clients)."""
    _times: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.points or self.points[0][0] > 0:
            raise ValueError(f"trace {self.name!r}: the first point must be at t=0")
        times = tuple(t for t, _ in self.points)
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError(f"trace {self.name!r}: times must increase strictly")
        if any(rate < 0 or math.isnan(rate) for _, rate in self.points):
            raise ValueError(f"trace {self.name!r}: rates must be >= 0")
        if self.duration <= 0:
            raise ValueError(f"trace {self.name!r}: duration must be > 0")
        if list(self.flashes) != sorted(self.flashes) or list(self.failures) != sorted(self.failures):
            raise ValueError(f"trace {self.name!r}: flash crowds and failures must be in time order")
        object.__setattr__(self, "_times", times)

    @property
    def flash_at(self) -> float | None:
        """When the first flash crowd starts, if the trace has one."""
        return self.flashes[0] if self.flashes else None

    def rate(self, t: float) -> float:
        """Arrival rate in clients per second at virtual time ``t``."""
        return self.points[bisect.bisect_right(self._times, t) - 1][1]

    def truncated(self, duration: float) -> Trace:
        """The same trace cut (or extended, holding the last rate) to ``duration`` seconds."""
        return Trace(
            name=self.name,
            duration=duration,
            points=self.points,
            description=self.description,
            flashes=tuple(t for t in self.flashes if t < duration),
            failures=tuple(t for t in self.failures if t < duration),
        )


def _sampled(fn: Callable[[float], float], duration: float, step: float) -> tuple[tuple[float, float], ...]:
    return tuple((t, round(fn(t), 4)) for t in (i * step for i in range(int(duration // step))))


def _step() -> Trace:
    return Trace(
        name="step",
        duration=4 * HOUR,
        points=((0.0, 1.5), (1 * HOUR, 3.0)),
        flashes=(1 * HOUR,),
        description="1.5 clients/s, doubling to 3 clients/s at 1 h and staying there",
    )


def _ramp() -> Trace:
    def rate(t: float) -> float:
        h = t / HOUR
        if h < 1:
            return 0.5
        if h < 3:
            return 0.5 + 4.5 * (h - 1) / 2
        if h < 4:
            return 5.0
        if h < 5.5:
            return 5.0 - 4.5 * (h - 4) / 1.5
        return 0.5

    return Trace(
        name="ramp",
        duration=6 * HOUR,
        points=_sampled(rate, 6 * HOUR, 60.0),
        description="0.5 clients/s, ramping to 5 clients/s between 1 h and 3 h, back down between 4 h and 5.5 h",
    )


def _diurnal() -> Trace:
    def rate(t: float) -> float:
        # Trough 0.4 clients/s at 04:00, peak 4 clients/s at 16:00, a lunch bump and a little noise-free wobble.
        phase = 2 * math.pi * (t - 4 * HOUR) / (24 * HOUR)
        base = 0.4 + 3.6 * (1 - math.cos(phase)) / 2
        lunch = 0.4 * math.exp(-(((t / HOUR) - 12.5) ** 2) / 0.5)
        return base + lunch

    return Trace(
        name="diurnal",
        duration=24 * HOUR,
        points=_sampled(rate, 24 * HOUR, 300.0),
        description="one day: 0.4 clients/s at 04:00 to 4 clients/s at 16:00, with a lunch-time bump",
    )


def _flash() -> Trace:
    return Trace(
        name="flash",
        duration=4 * HOUR,
        points=((0.0, 1.0), (1 * HOUR, 5.0), (1.5 * HOUR, 1.0)),
        flashes=(1 * HOUR,),
        description="1 client/s with a flash crowd of 5 clients/s from 1 h to 1.5 h",
    )


def _leak() -> Trace:
    return Trace(
        name="leak",
        duration=6 * HOUR,
        points=((0.0, 2.0),),
        failures=tuple(HOUR + i * 15 * 60.0 for i in range(12)),
        description="a steady 2 clients/s while one running server starts failing every 15 min from 1 h to 3.75 h",
    )


def _spikes() -> Trace:
    # Eight short spikes of 2.5-5x the base rate, 6-10 min each, 48 min apart: the shape of a
    # service whose clients arrive in waves (a match start, a push notification).
    heights = (3.0, 4.5, 2.5, 5.0, 3.5, 4.0, 3.0, 5.0)
    lengths = (8.0, 6.0, 10.0, 8.0, 6.0, 10.0, 8.0, 6.0)
    points = [(0.0, 1.0)]
    flashes = []
    for k, (height, minutes) in enumerate(zip(heights, lengths, strict=True)):
        start = 0.5 * HOUR + k * 0.8 * HOUR
        flashes.append(start)
        points += [(start, height), (start + minutes * 60.0, 1.0)]
    return Trace(
        name="spikes",
        duration=7 * HOUR,
        points=tuple(points),
        flashes=tuple(flashes),
        description="1 client/s with eight short spikes (2.5-5 clients/s for 6-10 min) every 48 min",
    )


def _plateau() -> Trace:
    def rate(t: float) -> float:
        h = t / HOUR
        if h < 0.5:
            return 0.5
        if h < 3.5:
            return 0.5 + 3.5 * (h - 0.5) / 3
        return 4.0

    return Trace(
        name="plateau",
        duration=7 * HOUR,
        points=_sampled(rate, 7 * HOUR, 60.0),
        description="0.5 clients/s, a slow ramp to 4 clients/s between 0.5 h and 3.5 h, then a plateau",
    )


def _noisy_day() -> Trace:
    # The diurnal day with the noise of real traffic: every 5 min the rate is off the smooth curve
    # by a log-normal factor (sigma 0.15), six 10-min bursts of 1.5-2x (flash crowds: a sudden
    # surge the data can only follow), and five servers fail during the day. A fixed seed: the
    # trace is one fixed day.
    rng = random.Random("noisy-day")
    smooth = _diurnal()
    bursts = sorted(rng.uniform(2, 22) * HOUR for _ in range(6))
    points = []
    flashes = []
    for i in range(int(24 * HOUR // 300)):
        t = i * 300.0
        factor = math.exp(rng.gauss(0.0, 0.15))
        if any(b <= t < b + 600 for b in bursts):
            factor *= rng.uniform(1.5, 2.0)
            if not any(b <= t - 300 < b + 600 for b in bursts):
                flashes.append(t)
        points.append((t, round(smooth.rate(t) * factor, 4)))
    return Trace(
        name="noisy-day",
        duration=24 * HOUR,
        points=tuple(points),
        flashes=tuple(flashes),
        failures=tuple(sorted(rng.uniform(1, 23) * HOUR for _ in range(5))),
        description="the diurnal day with 5-min noise (sigma 0.15), six 10-min bursts of 1.5-2x (flash crowds) "
        "and five server failures",
    )


BUILTIN_TRACES: dict[str, Callable[[], Trace]] = {
    "step": _step,
    "ramp": _ramp,
    "diurnal": _diurnal,
    "flash": _flash,
    "leak": _leak,
    "spikes": _spikes,
    "plateau": _plateau,
    "noisy-day": _noisy_day,
}


def builtin_trace(name: str) -> Trace:
    try:
        return BUILTIN_TRACES[name]()
    except KeyError:
        raise ValueError(f"unknown trace {name!r}; built-in traces: {', '.join(BUILTIN_TRACES)}") from None


def trace_from_csv(path: Path | str, *, name: str | None = None) -> Trace:
    """Read a CSV trace: a header, then ``seconds,clients_per_second`` rows (optionally a third
    column ``event`` holding ``flash`` or ``fail``; several of each are allowed). The rate holds
    until the next row; the trace lasts until the last row's time plus the gap before it (or 1 h
    for a single row)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row and not row[0].lstrip().startswith("#")]
    if len(rows) < 2:
        raise ValueError(f"{path}: expected a header and at least one row 'seconds,clients_per_second'")
    points: list[tuple[float, float]] = []
    flashes: list[float] = []
    failures: list[float] = []
    for number, row in enumerate(rows[1:], start=2):
        try:
            t, rate = float(row[0]), float(row[1])
        except (ValueError, IndexError):
            raise ValueError(f"{path}: row {number}: expected 'seconds,clients_per_second', got {row!r}") from None
        event = row[2].strip().lower() if len(row) > 2 else ""
        if event == "flash":
            flashes.append(t)
        elif event == "fail":
            failures.append(t)
        elif event:
            raise ValueError(f"{path}: row {number}: unknown event {event!r} (expected flash or fail)")
        if not points or points[-1][0] != t:
            points.append((t, rate))
    times: Sequence[float] = [t for t, _ in points]
    last_gap = times[-1] - times[-2] if len(times) > 1 else HOUR
    return Trace(
        name=name or path.stem,
        duration=times[-1] + last_gap,
        points=tuple(points),
        description=f"from {path.name}",
        flashes=tuple(sorted(flashes)),
        failures=tuple(sorted(failures)),
    )


def load_trace(spec: str) -> Trace:
    """A built-in name, or the path of a CSV file."""
    if spec in BUILTIN_TRACES:
        return builtin_trace(spec)
    if spec.endswith(".csv") or Path(spec).is_file():
        return trace_from_csv(spec)
    raise ValueError(f"unknown trace {spec!r}: not a built-in ({', '.join(BUILTIN_TRACES)}) nor a CSV file")
