"""The benchmark's quick mode still runs end to end and prints its figures (no timing asserted).

``python -m bench --quick`` runs the real daemon and the floor against the in-process fakes with
small fleets; this keeps the harness working as the daemon changes. The figures themselves are
not checked: CI machines are too noisy for timing assertions.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.backends import equivalent_to_add_instance
from bench.scenario import edge

ROOT = Path(__file__).resolve().parent.parent


class TestBenchQuick:
    @pytest.mark.timeout(480)
    def test_quick_mode_prints_every_table(self, tmp_path: Path) -> None:
        """The quick run exits 0, prints a latency row per fleet size and each suite's table, and writes Markdown."""
        markdown = tmp_path / "performance.md"
        markdown.write_text("# Performance\n\nhand-written text stays\n", encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-m", "bench", "--quick", "--markdown", str(markdown)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=460,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        out = result.stdout
        for size in ("10", "100"):
            row = re.search(rf"^\| fake Consul \+ fake Kubernetes \| {size} \|(.*)$", out, re.MULTILINE)
            assert row is not None, out
            assert re.search(r"\d+\.\d+ / \d+\.\d+ / \d+\.\d+", row.group(1)), row.group(0)
            assert "≠" not in row.group(0), "every status write must end in exactly one patch"
        for heading in (
            "Reaction latency, one flip at a time",
            "Reaction latency, the shipped config whole",
            "Reaction latency while other servers change",
            "Work per update",
            "Idle cost",
            "Churn",
        ):
            assert heading in out
        written = markdown.read_text(encoding="utf-8")
        assert "hand-written text stays" in written
        assert "<!-- bench:begin" in written
        assert "Reaction latency" in written


class TestScenario:
    @pytest.mark.parametrize("size", [4, 10, 1000, 10000, 50000])
    def test_edge_makes_every_flip_a_patch(self, size: int) -> None:
        """The ratios put the fleet on its edge: one server down adds one replica, back up removes one."""
        edge(size)  # asserts the arithmetic itself

    def test_bulk_loader_matches_the_fake(self) -> None:
        """The bench's bulk fleet loader serves the same health answer as FakeConsul.add_instance."""
        assert equivalent_to_add_instance()
