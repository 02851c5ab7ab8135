"""The step limits of ``policy.scale_up`` and ``policy.scale_down``: the HPA's ``behavior`` rules.

Pure data and the per-rule arithmetic; ``core.limits`` combines the rules with what the memory
says was changed within their periods. Ranges: ``max_step`` and a Pods rule's ``value`` up to
``MAX_REPLICAS``; ``max_percent`` up to 1000 and a Percent rule's ``value`` above 0 up to 1000
(x11 per period: beyond, it is no limit at all); ``scale_up.stabilization`` up to 1 h (the HPA's
bound of ``stabilizationWindowSeconds``); at most 10 rules per direction.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from bolina_scaler.config.checks import Duration, PositiveDuration
from bolina_scaler.config.errors import short_repr
from bolina_scaler.config.section import MAX_REPLICAS, Section

__all__ = ["DeletionCostConfig", "ScaleDownConfig", "ScaleUpConfig", "StepConfig", "StepRule"]


def _number(value: Any) -> Any:
    """A YAML number and nothing else: ``true`` is not 1 and ``"4"`` is not 4."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {short_repr(value)}")
    return value


class StepRule(Section):
    """One entry of a direction's ``policies`` list: the HPA's ``HPAScalingPolicy``.

    ``Pods``: at most ``value`` replicas per ``period``; ``Percent``: at most
    ``ceil(current × value / 100)``. Each rule counts the changes made within its own period.
    """

    type: Literal["Pods", "Percent"]
    value: Annotated[int | float, BeforeValidator(_number)]
    period: PositiveDuration

    @model_validator(mode="after")
    def _check(self) -> StepRule:
        if self.type == "Pods" and (not isinstance(self.value, int) or not 1 <= self.value <= MAX_REPLICAS):
            raise ValueError(f"value: a Pods rule takes a whole number from 1 to {MAX_REPLICAS}, got {self.value!r}")
        if self.type == "Percent" and not (math.isfinite(self.value) and 0 < self.value <= 1000):
            raise ValueError(f"value: a Percent rule takes a number above 0 and at most 1000, got {self.value!r}")
        return self

    def allowed(self, current: int) -> int:
        """Replicas this rule allows per period from ``current`` (nothing used yet)."""
        if self.type == "Pods":
            return int(self.value)
        return math.ceil(current * self.value / 100)


class StepConfig(Section):
    """How much one direction may change within a period (the HPA's ``HPAScalingRules``).

    Two forms. The short one: a ``Pods`` rule of ``max_step`` and a ``Percent`` rule of
    ``max_percent``, both over ``period``. The long one, ``policies``, is the HPA's list: rules of
    either type, each with its own period (it replaces the three short keys; giving both is an
    error, so that nobody edits a key that does nothing). Each rule allows its amount minus what
    was changed within its period; ``select`` combines them: ``max`` the most any rule allows,
    ``min`` the least, ``disabled`` no change in this direction at all (the bounds still apply).
    ``core.limits.room`` does the arithmetic.
    """

    max_step: int = Field(ge=1, le=MAX_REPLICAS)
    max_percent: float = Field(ge=0, le=1000, allow_inf_nan=False)
    period: PositiveDuration
    select: Literal["max", "min", "disabled"] = "max"
    policies: tuple[StepRule, ...] | None = Field(default=None, strict=False)
    """Not strict: a YAML list is a list, and strict pydantic takes only a tuple for a tuple (each
    rule is a strict section of its own)."""

    @model_validator(mode="after")
    def _check(self) -> StepConfig:
        if self.policies is not None and not 1 <= len(self.policies) <= 10:
            raise ValueError(f"policies: give 1 to 10 rules, got {len(self.policies)}")
        short = sorted({"max_step", "max_percent", "period"} & self.model_fields_set)
        if self.policies is not None and short:
            raise ValueError(
                f"policies: replaces max_step, max_percent and period; give one form, not both (also set: "
                f"{', '.join(short)})"
            )
        return self

    @property
    def rules(self) -> tuple[StepRule, ...]:
        """The rules in force: ``policies``, or the two of the short form."""
        if self.policies is not None:
            return self.policies
        return (
            StepRule.model_construct(type="Pods", value=self.max_step, period=self.period),
            StepRule.model_construct(type="Percent", value=self.max_percent, period=self.period),
        )

    @property
    def longest_period(self) -> float:
        """How long a change made in this direction still counts against some rule."""
        return max(rule.period for rule in self.rules)

    def allowed(self, current: int) -> int:
        """The most one decision may change from ``current`` when nothing was changed within any period."""
        if self.select == "disabled":
            return 0
        pick = max if self.select == "max" else min
        return pick(rule.allowed(current) for rule in self.rules)


class ScaleUpConfig(StepConfig):
    """Scale-up rate limit; defaults are HPA's: max(4 pods, 100 %) per 15 s, no stabilization."""

    max_step: int = Field(default=4, ge=1, le=MAX_REPLICAS)
    max_percent: float = Field(default=100.0, ge=0, le=1000, allow_inf_nan=False)
    period: PositiveDuration = 15.0
    stabilization: Duration = Field(default=0.0, le=3600)
    """The HPA's ``scaleUp.stabilizationWindowSeconds``: scale up only to the lowest count the
    scale-up rule recommended over this window (an evaluation wanting no more recommends the
    current count), so a short burst has to last this long before it adds servers. 0: at once."""


class DeletionCostConfig(Section):
    """Before a scale-down, steer which pods Kubernetes removes (``controller.kubernetes.io/pod-deletion-cost``).

    Critical servers go first, then Warning, then the least-loaded Available ones; the load is
    ``Service.Meta.load`` of the registration (see the README's registration convention).
    """

    enabled: bool = True


class ScaleDownConfig(StepConfig):
    """Scale-down rate limit: slow on purpose (one server or 10 % per minute), capacity is cheap."""

    max_step: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    max_percent: float = Field(default=10.0, ge=0, le=1000, allow_inf_nan=False)
    period: PositiveDuration = 60.0
    deletion_cost: DeletionCostConfig = Field(default_factory=DeletionCostConfig)
