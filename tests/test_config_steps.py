"""The step-limit keys (``policy.scale_up`` / ``policy.scale_down``): select, policies, stabilization."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bolina_scaler.config import ConfigError, StepRule, parse_config
from tests.test_config import one_line_error


def _up(**keys: Any) -> dict[str, Any]:
    return {"policy": {"scale_up": keys}}


def _rule(**keys: Any) -> dict[str, Any]:
    return {"type": "Pods", "value": 2, "period": "15s", **keys}


class TestDefaults:
    def test_defaults_are_todays_behaviour(self):
        """Unset, both directions select the larger of their two limits and scale-up is not stabilized."""
        policy = parse_config({}).policy
        assert (policy.scale_up.select, policy.scale_up.policies, policy.scale_up.stabilization) == ("max", None, 0)
        assert (policy.scale_down.select, policy.scale_down.policies) == ("max", None)
        assert [(r.type, r.value, r.period) for r in policy.scale_up.rules] == [("Pods", 4, 15), ("Percent", 100, 15)]


class TestNewKeys:
    def test_the_hpa_form(self):
        """The HPA's policies list, with durations, a select and a scale-up window, as check-config prints it."""
        rules = [_rule(value=4), _rule(type="Percent", value=100, period="1m")]
        config = parse_config(_up(select="min", stabilization="1m", policies=rules))
        printed = config.redacted()["policy"]["scale_up"]
        assert (printed["select"], printed["stabilization"]) == ("min", 60.0)
        assert printed["policies"] == [
            {"type": "Pods", "value": 4, "period": 15.0},
            {"type": "Percent", "value": 100, "period": 60.0},
        ]
        assert config.policy.scale_up.longest_period == 60.0

    def test_select_disabled_down(self):
        """scale_down.select takes disabled too."""
        assert parse_config({"policy": {"scale_down": {"select": "disabled"}}}).policy.scale_down.allowed(10) == 0

    def test_a_percent_rule_rounds_up(self):
        """A Percent rule allows ceil(current × value / 100), as the HPA rounds a scale-up proposal."""
        assert StepRule(type="Percent", value=10, period=60).allowed(11) == 2


class TestErrors:
    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (_up(select="fastest"), "policy.scale_up.select: Input should be 'max', 'min' or 'disabled'"),
            ({"policy": {"scale_down": {"select": "Max"}}}, "policy.scale_down.select: "),
            (_up(select=True), "policy.scale_up.select: "),
            (
                _up(policies=[_rule()], max_step=3),
                "policy.scale_up.policies: replaces max_step, max_percent and period; give one form, not both",
            ),
            (_up(policies=[_rule()], period="1m"), "policy.scale_up.policies: replaces"),
            (_up(policies=[]), "policy.scale_up.policies: give 1 to 10 rules, got 0"),
            (_up(policies=[_rule()] * 11), "policy.scale_up.policies: give 1 to 10 rules, got 11"),
            (_up(policies={"type": "Pods"}), "policy.scale_up.policies: "),
            (_up(policies=[_rule(value=2.5)]), "policy.scale_up.policies.0.value: a Pods rule takes a whole number"),
            (_up(policies=[_rule(value=0)]), "policy.scale_up.policies.0.value: a Pods rule takes a whole number"),
            (_up(policies=[_rule(value=10**30)]), "policy.scale_up.policies.0.value: a Pods rule"),
            (_up(policies=[_rule(type="Percent", value=0)]), "policy.scale_up.policies.0.value: a Percent rule"),
            (_up(policies=[_rule(type="Percent", value=1001)]), "policy.scale_up.policies.0.value: a Percent rule"),
            (_up(policies=[_rule(type="Percent", value=float("nan"))]), "policy.scale_up.policies.0.value: "),
            (_up(policies=[_rule(value=True)]), "policy.scale_up.policies.0.value: expected a number, got True"),
            (_up(policies=[_rule(value="4")]), "policy.scale_up.policies.0.value: expected a number, got '4'"),
            (_up(policies=[_rule(type="Replicas")]), "policy.scale_up.policies.0.type: Input should be 'Pods' or"),
            (_up(policies=[_rule(period=0)]), "policy.scale_up.policies.0.period: "),
            (_up(policies=[{"type": "Pods", "value": 1}]), "policy.scale_up.policies.0.period: Field required"),
            (_up(policies=[_rule(periodSeconds=15)]), "policy.scale_up.policies.0.periodSeconds: unknown key"),
            (_up(stabilization="2h"), "policy.scale_up.stabilization: Input should be less than or equal to 3600"),
            (_up(stabilization="soon"), "policy.scale_up.stabilization: expected a duration"),
            (_up(stabilization=-1), "policy.scale_up.stabilization: "),
            # Scale-down has its own window, policy.scale_down_stabilization: a second one would be a trap.
            ({"policy": {"scale_down": {"stabilization": "1m"}}}, "policy.scale_down.stabilization: unknown key"),
        ],
    )
    def test_one_line_naming_the_key(self, data, expected):
        """Each invalid step-limit value fails with a single line that starts with the offending key."""
        message = one_line_error(data)
        assert message.startswith(expected), message
        assert "more problem" not in message, message

    _values = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(),
        st.sampled_from(["max", "min", "disabled", "Pods", "Percent", "15s", "1h", "x"]),
    )
    _rules = st.lists(
        st.dictionaries(st.sampled_from(["type", "value", "period", "extra"]), _values, max_size=4), max_size=12
    )

    @settings(max_examples=300, deadline=None)
    @given(
        st.dictionaries(
            st.sampled_from(["select", "policies", "stabilization", "max_step", "period"]),
            st.one_of(_values, _rules),
            max_size=4,
        )
    )
    def test_any_step_section_is_a_config_or_one_line(self, section):
        """Any scale_up section: a Config, or a ConfigError of one line naming a scale_up key."""
        try:
            parse_config(_up(**section))
        except ConfigError as exc:
            message = str(exc)
            assert "\n" not in message
            assert message.startswith("policy.scale_up."), message
