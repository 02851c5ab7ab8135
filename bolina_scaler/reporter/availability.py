"""How a Bolina server decides its own stage (Available / Warning / Critical) from its metrics.

Pure: no I/O, no clock reads. The server side of the seed ("we divided the Bolina Server
availability into three different stages"): a sample of metrics (CPU, memory, bytes processed,
requests per second, event-loop iteration time, …) is compared with per-metric thresholds. Used by
the ``report`` sidecar (``reporter.reporter``) and by the fleet simulator, so the simulated
servers flap exactly as much as real ones would.

Two mechanisms keep a server near a threshold from flapping:

- **hysteresis**: a stage is *entered* when a metric reaches its ``warning``/``critical``
  threshold, but *left* only once every metric is below the lower ``*_clear`` bound;
- **minimum dwell**: a server leaves a stage for a *better* one only after ``min_dwell`` seconds
  in it. Getting worse is immediate: protecting an overloaded server never waits.

::

                 any metric ≥ warning                 any metric ≥ critical
    AVAILABLE ────────────────────────► WARNING ─────────────────────────► CRITICAL
        ▲      all < warning_clear          ▲      all < critical_clear        │
        └────── and dwell ≥ min_dwell ──────┴─────── and dwell ≥ min_dwell ────┘
                                        (straight to AVAILABLE if all < warning_clear)

A configured metric missing from a sample (or not a finite number) makes the server Critical
(``missing: critical``, the default: a server that cannot show it is healthy is not counted as
capacity); ``missing: ignore`` skips it instead, but a sample holding *none* of the configured
metrics is Critical either way (a renamed or broken metrics endpoint never reads as Available).
A sample that could not be read at all is the reporter's business (it reports Critical).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bolina_scaler.config import ConfigError, Duration, one_line, read_yaml
from bolina_scaler.core.model import Status

__all__ = [
    "LOAD_STEP",
    "ClassifierConfig",
    "Stage",
    "Thresholds",
    "classify",
    "describe",
    "load_classifier_config",
    "parse_classifier_config",
    "quantize_load",
]

Sample = Mapping[str, float]
"""One reading of a server's metrics: metric name → value."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Thresholds(_Model):
    """Bounds for one metric (higher is worse). ``*_clear`` default to ``(1 - hysteresis) ×`` the threshold."""

    warning: float = Field(allow_inf_nan=False)
    critical: float = Field(allow_inf_nan=False)
    warning_clear: float | None = Field(default=None, allow_inf_nan=False)
    critical_clear: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check(self) -> Thresholds:
        if self.critical < self.warning:
            raise ValueError(f"critical: must be >= warning ({self.warning:g}), got {self.critical:g}")
        if self.warning_clear is not None and self.warning_clear > self.warning:
            raise ValueError(f"warning_clear: must be <= warning ({self.warning:g}), got {self.warning_clear:g}")
        if self.critical_clear is not None and self.critical_clear > self.critical:
            raise ValueError(f"critical_clear: must be <= critical ({self.critical:g}), got {self.critical_clear:g}")
        return self


class ClassifierConfig(_Model):
    """The classifier's YAML document (see ``config/availability.yaml``)."""

    metrics: dict[str, Thresholds] = Field(min_length=1)
    hysteresis: float = Field(default=0.1, ge=0, lt=1, allow_inf_nan=False)
    """Default gap between a threshold and its ``*_clear`` bound, as a fraction of the threshold."""
    min_dwell: Duration = 30.0
    """Seconds a server stays in a stage before it may move to a better one."""
    missing: Literal["ignore", "critical"] = "critical"
    """What a configured metric absent from a sample (or NaN/±Inf) means: Critical, or nothing.
    A sample with none of the configured metrics is Critical whatever this says."""

    def bounds(self, metric: str) -> tuple[float, float, float, float]:
        """``(warning, critical, warning_clear, critical_clear)`` of a metric, defaults filled in."""
        return self._bounds[metric]

    @cached_property
    def _bounds(self) -> dict[str, tuple[float, float, float, float]]:
        keep = 1.0 - self.hysteresis
        bounds = {}
        for metric, t in self.metrics.items():
            warning_clear = t.warning_clear if t.warning_clear is not None else t.warning * keep
            critical_clear = t.critical_clear if t.critical_clear is not None else t.critical * keep
            bounds[metric] = (t.warning, t.critical, warning_clear, critical_clear)
        return bounds


@dataclass(frozen=True, slots=True)
class Stage:
    """The classifier's state: the current stage, since when, and which metrics put it there."""

    status: Status
    since: float
    reasons: tuple[str, ...] = ()

    @classmethod
    def initial(cls, now: float, status: Status = Status.AVAILABLE) -> Stage:
        return cls(status, now)


_BY_RANK = (Status.AVAILABLE, Status.WARNING, Status.CRITICAL)


def _entered(config: ClassifierConfig, sample: Sample) -> tuple[Status, list[str]]:
    """The stage the thresholds alone call for, and the metrics that reach it."""
    worst = 0
    reasons: list[str] = []
    read = 0
    for metric, (warning, critical, _, _) in config._bounds.items():
        value = sample.get(metric)
        if value is None or not math.isfinite(value):
            if config.missing == "critical":
                if worst < 2:
                    worst, reasons = 2, []
                reasons.append(f"{metric} missing")
            continue
        read += 1
        if value < warning:
            continue
        level = 2 if value >= critical else 1
        if level > worst:
            worst, reasons = level, []
        if level == worst:
            reasons.append(f"{metric}={value:g}≥{critical if level == 2 else warning:g}")
    if not read:
        return Status.CRITICAL, ["no configured metric in the sample"]
    return _BY_RANK[worst], reasons


def _held(config: ClassifierConfig, sample: Sample, current: Status) -> tuple[Status, list[str]]:
    """The best stage a server in ``current`` may fall back to, given the lower (clear) bounds."""
    held = Status.AVAILABLE
    reasons: list[str] = []
    for metric, (_, _, warning_clear, critical_clear) in config._bounds.items():
        value = sample.get(metric)
        if value is None or not math.isfinite(value):
            continue
        if current is Status.CRITICAL and value >= critical_clear:
            level, bound = Status.CRITICAL, critical_clear
        elif value >= warning_clear:
            level, bound = Status.WARNING, warning_clear
        else:
            continue
        if level.rank > held.rank:
            held, reasons = level, []
        if level is held:
            reasons.append(f"{metric}={value:g}≥{bound:g} (clear)")
    return held, reasons


def classify(sample: Sample, *, config: ClassifierConfig, stage: Stage, now: float) -> Stage:
    """The stage after ``sample`` was read at ``now``; returns ``stage`` itself when nothing changes."""
    entered, reasons = _entered(config, sample)
    if entered.rank > stage.status.rank:
        return Stage(entered, now, tuple(reasons))
    if stage.status is Status.AVAILABLE:
        return stage
    held, held_reasons = _held(config, sample, stage.status)
    target = entered if entered.rank >= held.rank else held
    if target.rank >= stage.status.rank:
        return stage
    if now - stage.since < config.min_dwell:
        return stage
    return Stage(target, now, tuple(reasons if target is entered else held_reasons))


def describe(sample: Sample, stage: Stage, *, limit: int = 200) -> str:
    """A short line for a Consul check's Output: the stage, why, and the metrics read."""
    metrics = " ".join(f"{name}={value:.4g}" for name, value in sorted(sample.items()))
    why = f" ({', '.join(stage.reasons)})" if stage.reasons else ""
    text = f"{stage.status.value}{why}: {metrics}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_classifier_config(data: Any) -> ClassifierConfig:
    """Validate already-parsed YAML; ``ConfigError`` with a one-line message naming the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"<root>: expected a mapping with a 'metrics' section, got {type(data).__name__}")
    try:
        return ClassifierConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(one_line(exc)) from None


def load_classifier_config(path: Path | str) -> ClassifierConfig:
    """Read a classifier YAML file (the whole file, or its ``availability:`` section)."""
    data = read_yaml(path, what="classifier config")  # regular file, bounded, strict YAML
    if isinstance(data, dict) and "availability" in data:
        data = data["availability"]
    return parse_classifier_config(data)


LOAD_STEP = 0.05
"""Loads are reported in steps of 5 %: fine enough to steer scale-down, coarse enough that a
server's check is not rewritten (and every blocking query woken) on every small wobble."""


def quantize_load(value: float) -> float:
    """A load (share of capacity in use) clipped to 0..1 and rounded to ``LOAD_STEP``."""
    return round(min(1.0, max(0.0, value)) / LOAD_STEP) * LOAD_STEP
