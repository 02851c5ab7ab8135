"""The availability classifier: thresholds, hysteresis, dwell, and the YAML that configures it."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bolina_scaler.config import ConfigError
from bolina_scaler.core.model import Status
from bolina_scaler.reporter.availability import (
    ClassifierConfig,
    Stage,
    Thresholds,
    classify,
    describe,
    load_classifier_config,
    parse_classifier_config,
)

A, W, C = Status.AVAILABLE, Status.WARNING, Status.CRITICAL

CONFIG = ClassifierConfig(
    metrics={
        "cpu": Thresholds(warning=0.8, critical=0.95, warning_clear=0.7, critical_clear=0.85),
        "loop": Thresholds(warning=0.02, critical=0.1),
    },
    hysteresis=0.5,
    min_dwell=30.0,
    missing="ignore",  # these tests are about thresholds: a sample may name one metric only
)
ROOT = Path(__file__).resolve().parent.parent


def run(
    values: list[tuple[float, dict[str, float]]], *, start: Status = A, config: ClassifierConfig = CONFIG
) -> list[Status]:
    stage = Stage(start, 0.0)
    out = []
    for now, sample in values:
        stage = classify(sample, config=config, stage=stage, now=now)
        out.append(stage.status)
    return out


class TestThresholds:
    @pytest.mark.parametrize(
        ("sample", "expected"),
        [
            ({"cpu": 0.5, "loop": 0.001}, A),
            ({"cpu": 0.8, "loop": 0.001}, W),  # the threshold itself enters the stage
            ({"cpu": 0.79, "loop": 0.02}, W),  # any metric is enough
            ({"cpu": 0.95}, C),
            ({"cpu": 0.5, "loop": 0.5}, C),
            ({"cpu": 0.9, "loop": 0.1}, C),  # the worst metric wins
            ({"cpu": 0.5}, A),  # with missing: ignore, one metric read is enough
            ({"cpu": 0.5, "loop": float("nan")}, A),  # NaN is missing
            ({"cpu": 0.5, "loop": float("-inf")}, A),  # so is -Inf (not "very good")
            ({}, C),  # but a sample with none of the configured metrics is Critical even then
            ({"cpu": float("nan"), "loop": float("-inf")}, C),
            ({"other": 99.0}, C),  # unconfigured metrics do not count: renamed metrics
        ],
    )
    def test_from_available(self, sample, expected):
        """From Available, a sample enters the worst stage any metric reaches."""
        assert run([(1.0, sample)]) == [expected]

    def test_missing_is_critical_by_default(self):
        """The default (``missing: critical``) makes a server Critical when any configured metric is absent."""
        config = ClassifierConfig(metrics=CONFIG.metrics)
        assert config.missing == "critical"
        assert run([(1.0, {"cpu": 0.1})], config=config) == [C]
        assert run([(1.0, {"cpu": 0.1, "loop": float("inf")})], config=config) == [C]
        assert run([(1.0, {"cpu": 0.1, "loop": 0.001})], config=config) == [A]
        stage = classify({"cpu": 0.1}, config=config, stage=Stage.initial(0.0), now=1.0)
        assert stage.reasons == ("loop missing",)

    def test_shipped_classifier_is_safe(self):
        """The shipped config/availability.yaml treats missing metrics as Critical (issue 13, #5)."""
        config = load_classifier_config(ROOT / "config" / "availability.yaml")
        assert config.missing == "critical"

    def test_reasons_name_the_metric(self):
        """The stage says which metric put it there, and describe() prints it for the check output."""
        stage = classify({"cpu": 0.9, "loop": 0.0}, config=CONFIG, stage=Stage.initial(0.0), now=1.0)
        assert stage.reasons == ("cpu=0.9≥0.8",)
        assert describe({"cpu": 0.9, "loop": 0.0}, stage) == "warning (cpu=0.9≥0.8): cpu=0.9 loop=0"

    def test_describe_is_short(self):
        """The output stays within the limit, for Consul's check output."""
        stage = Stage.initial(0.0)
        assert len(describe({f"m{i}": float(i) for i in range(100)}, stage, limit=50)) == 50


class TestHysteresis:
    def test_leave_warning_only_below_clear(self):
        """Warning is left only below warning_clear (0.7), not as soon as the value dips under 0.8."""
        assert run([(0, {"cpu": 0.85}), (100, {"cpu": 0.75}), (200, {"cpu": 0.69})]) == [W, W, A]

    def test_leave_critical_to_warning_then_available(self):
        """Critical falls back to Warning below critical_clear, and to Available below warning_clear."""
        assert run([(0, {"cpu": 0.96}), (100, {"cpu": 0.9}), (200, {"cpu": 0.8}), (300, {"cpu": 0.5})]) == [C, C, W, A]

    def test_critical_straight_to_available(self):
        """A Critical server whose metrics all fall below the clear bounds becomes Available directly."""
        assert run([(0, {"cpu": 0.96}), (100, {"cpu": 0.1})]) == [C, A]

    def test_default_clear_bound_uses_hysteresis(self):
        """Without explicit clear bounds, the bound is threshold × (1 − hysteresis)."""
        assert CONFIG.bounds("loop") == (0.02, 0.1, 0.01, 0.05)
        assert run([(0, {"loop": 0.03}), (100, {"loop": 0.011}), (200, {"loop": 0.009})]) == [W, W, A]


class TestDwell:
    def test_recovery_waits_for_min_dwell(self):
        """A stage is left for a better one only after min_dwell seconds in it."""
        assert run([(0, {"cpu": 0.9}), (10, {"cpu": 0.1}), (29, {"cpu": 0.1}), (30, {"cpu": 0.1})]) == [W, W, W, A]

    def test_getting_worse_is_immediate(self):
        """Escalation never waits for the dwell time."""
        assert run([(0, {"cpu": 0.9}), (1, {"cpu": 0.99})]) == [W, C]

    def test_since_is_the_last_change(self):
        """The stage remembers when it started, not when it was last confirmed."""
        stage = Stage(A, 0.0)
        stage = classify({"cpu": 0.9}, config=CONFIG, stage=stage, now=5.0)
        same = classify({"cpu": 0.9}, config=CONFIG, stage=stage, now=50.0)
        assert same is stage
        assert stage.since == 5.0


class TestNoFlapping:
    @settings(max_examples=200, deadline=None)
    @given(
        start=st.sampled_from([A, W]),
        values=st.lists(st.floats(min_value=0.7, max_value=0.7999), min_size=1, max_size=50),
        gaps=st.lists(st.floats(min_value=0.0, max_value=1000.0), min_size=50, max_size=50),
    )
    def test_oscillating_inside_the_band_never_changes_stage(self, start, values, gaps):
        """Values between warning_clear and warning never change the stage, however long they last."""
        now = 0.0
        seq = []
        for value, gap in zip(values, gaps, strict=False):
            now += gap
            seq.append((now, {"cpu": value}))
        assert set(run(seq, start=start)) == {start}

    @settings(max_examples=200, deadline=None)
    @given(values=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=60))
    def test_at_most_one_recovery_per_dwell(self, values):
        """Whatever the samples (one a second), a server gets better at most once per min_dwell."""
        stage = Stage(A, 0.0)
        recoveries = []
        for n, value in enumerate(values):
            new = classify({"cpu": value}, config=CONFIG, stage=stage, now=float(n))
            if new.status.rank < stage.status.rank:
                recoveries.append(n)
                assert n - stage.since >= CONFIG.min_dwell
            stage = new
        assert all(b - a >= CONFIG.min_dwell for a, b in itertools.pairwise(recoveries))


class TestConfig:
    def test_example_file_loads(self):
        """config/availability.yaml is a valid classifier config."""
        config = load_classifier_config(ROOT / "config" / "availability.yaml")
        assert "bolina_cpu_ratio" in config.metrics
        assert config.min_dwell == 30.0

    def test_a_fifo_or_a_key_given_twice_is_refused_like_the_daemon_config(self, tmp_path):
        """The sidecar's classifier file is read as the daemon's config is: a FIFO is refused at
        once (it blocked open()), a key given twice is an error (YAML kept the last one)."""
        fifo = tmp_path / "fifo.yaml"
        os.mkfifo(fifo)
        with pytest.raises(ConfigError, match=r"a FIFO \(named pipe\), not a regular file"):
            load_classifier_config(fifo)
        twice = tmp_path / "twice.yaml"
        twice.write_text("min_dwell: 1m\nmin_dwell: 2m\nmetrics:\n  cpu: {warning: 0.5, critical: 0.9}\n")
        with pytest.raises(ConfigError, match="found the key 'min_dwell' twice"):
            load_classifier_config(twice)

    def test_availability_section_of_a_bigger_file(self, tmp_path):
        """The classifier may live under an ``availability:`` key; durations take units."""
        path = tmp_path / "c.yaml"
        path.write_text("availability:\n  min_dwell: 1m\n  metrics:\n    cpu: {warning: 0.5, critical: 0.9}\n")
        assert load_classifier_config(path).min_dwell == 60.0

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({"metrics": {"cpu": {"warning": 0.9, "critical": 0.5}}}, "metrics.cpu.critical: must be >= warning"),
            ({"metrics": {"cpu": {"warning": 0.5, "critical": 0.9, "warning_clear": 0.6}}}, "warning_clear"),
            ({"metrics": {}}, "metrics:"),
            ({"metrics": {"cpu": {"warning": 0.5, "critical": 0.9}}, "dwell": 3}, "dwell: unknown key"),
            ([], "<root>"),
        ],
    )
    def test_errors_name_the_key(self, data, message):
        """An invalid classifier config is one line naming the key."""
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_classifier_config(data)
