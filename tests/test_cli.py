"""The command line: exit codes, check-config, plan, and the real `run` process stopping on SIGTERM.

`plan` and `run` are started as real processes (as a user or Kubernetes starts them) against the
in-process fakes served by the test's event loop; they run in real time but only wait for
conditions (a log line, an exit), bounded by timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import yaml

from bolina_scaler.cli import build_parser, main
from bolina_scaler.testing.consul import FakeConsul
from bolina_scaler.testing.kubernetes import FakeKubernetes

ROOT = Path(__file__).resolve().parent.parent
NS = "bolina"


def run_with_config(command: str, config: Path) -> subprocess.CompletedProcess[str]:
    """``bolina-scaler COMMAND --config CONFIG`` as a real process (the timeout only bounds a regression)."""
    return subprocess.run(
        [sys.executable, "-m", "bolina_scaler", command, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


class TestCheckConfig:
    def test_valid_file_prints_effective_config(self, capsys: pytest.CaptureFixture[str]):
        """check-config on the example exits 0 and prints the effective config as JSON."""
        assert main(["check-config", str(ROOT / "config" / "config.yaml")]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["consul"]["service"] == "bolina"
        assert printed["policy"]["scale_up"]["period"] == 15.0

    def test_invalid_file_exits_2_with_one_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
        """An invalid value exits 2 with exactly one stderr line naming the key."""
        path = tmp_path / "bad.yaml"
        path.write_text("policy:\n  min_replicas: 5\n  max_replicas: 2\n")
        assert main(["check-config", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert "policy.max_replicas" in err[0]

    @pytest.mark.parametrize("command", ["check-config", "run", "plan"])
    def test_a_fifo_as_the_config_exits_2_at_once(self, tmp_path: Path, command: str):
        """A FIFO as the config blocked run and check-config in open(), deaf to SIGTERM: now exit 2,
        one line, without a writer ever coming (the timeout only bounds a regression)."""
        fifo = tmp_path / "config.yaml"
        os.mkfifo(fifo)
        done = run_with_config(command, fifo)
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            f"bolina-scaler: config error: {fifo}: cannot read config file: a FIFO (named pipe), not a regular file"
        ]

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "# policy:\n#   min_replicas: 2\n",
                "{path}: the document is empty (a ConfigMap mounted under the wrong key?)",
            ),
            ("- policy\n", "{path}: expected a mapping of sections"),
            ("policy:\n  min_replicas: true\n", "policy.min_replicas: expected an integer, got True"),
            ("policy:\n  max_replicas: '20'\n", "policy.max_replicas: expected an integer, got '20'"),
            ("policy:\n  min_replicas: 0\n", "policy.min_replicas: 0 is refused: at 0 replicas no server registers"),
        ],
        ids=["empty", "list", "bool-int", "string-int", "zero"],
    )
    @pytest.mark.parametrize("command", ["check-config", "run", "plan", "simulate"])
    def test_a_trap_exits_2_with_one_line(self, tmp_path: Path, command: str, text: str, expected: str):
        """The config traps of issue 23, as a real process of each command that reads a config: exit
        2 and one line naming the file or the key (the empty file used to run on every default)."""
        path = tmp_path / "config.yaml"
        path.write_text(text)
        done = run_with_config(command, path)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("bolina-scaler: config error: " + expected.format(path=path)), lines

    @pytest.mark.parametrize(
        ("bounds", "expected"),
        [
            (["--min-replicas", "0"], "simulate: min_replicas: 0 is refused"),
            (["--min-replicas", "5", "--max-replicas", "2"], "simulate: max_replicas: must be >= min_replicas (5)"),
        ],
    )
    def test_simulate_refuses_the_bounds_a_config_may_not_have(
        self, bounds: list[str], expected: str, capsys: pytest.CaptureFixture[str]
    ):
        """simulate's own bounds are checked as a config's are: it simulated a fleet run refuses."""
        assert main(["simulate", *bounds, "--hours", "0.01"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"bolina-scaler: config error: {expected}"), lines

    def test_config_flag_works_like_the_other_commands(self, capsys: pytest.CaptureFixture[str]):
        """check-config --config PATH, like run and plan (the positional PATH still works)."""
        path = str(ROOT / "config" / "config.yaml")
        assert main(["check-config", "--config", path]) == 0
        by_flag = json.loads(capsys.readouterr().out)
        assert main(["check-config", path]) == 0
        assert json.loads(capsys.readouterr().out) == by_flag

    def test_no_path_exits_2_with_one_line(self, capsys: pytest.CaptureFixture[str]):
        """Without a path (or with two different ones) it says how to call it, exit 2."""
        assert main(["check-config"]) == 2
        assert main(["check-config", "a.yaml", "--config", "b.yaml"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 2
        assert all("--config PATH" in line for line in lines)

    def test_usage_error_exits_2(self, capsys: pytest.CaptureFixture[str]):
        """An unknown command is a usage error: exit code 2."""
        with pytest.raises(SystemExit) as exited:
            main(["frobnicate"])
        assert exited.value.code == 2


class TestHelp:
    @pytest.mark.parametrize("command", [[], ["run"], ["plan"], ["check-config"], ["demo"], ["simulate"], ["report"]])
    def test_every_command_has_a_description_and_an_example(
        self, command: list[str], capsys: pytest.CaptureFixture[str]
    ):
        """--help says what the command does and shows a command line, in plain text (no markup)."""
        with pytest.raises(SystemExit) as exited:
            main([*command, "--help"])
        assert exited.value.code == 0
        text = capsys.readouterr().out
        _usage, _, rest = text.partition("\n\n")
        description = rest.split("\n\n", 1)[0]
        assert not description.startswith(("positional arguments", "options")), "no description"
        examples = text.split("examples:\n", 1)[1]
        assert f"bolina-scaler {' '.join(command)}".strip() in examples
        for markup in ("``", ".. ", ":param", "::"):
            assert markup not in text, f"markup {markup!r} in {command} --help"


def _options(command: str) -> list[argparse.Action]:
    """The options of one command's parser, as ``--help`` lists them (not ``-h`` itself)."""
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = commands.choices[command]
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


class TestFlagHelp:
    def test_run_help_says_what_sighup_does(self, capsys: pytest.CaptureFixture[str]):
        """run --help names all three stop signals and says SIGHUP stops (it does not reload)."""
        with pytest.raises(SystemExit):
            main(["run", "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "until SIGTERM, SIGINT or SIGHUP" in text
        assert "SIGHUP does not reload the config file" in text

    @pytest.mark.parametrize("command", ["run", "plan", "check-config", "demo", "simulate", "report"])
    def test_every_option_has_a_help_text_with_its_default(self, command: str):
        """Every flag says what it does, and every flag with a default says which (a flag taking a
        value and having no default says so, or is required)."""
        for action in _options(command):
            assert action.help, f"{command} {action.option_strings[0]}: no help text"
            takes_value = action.nargs != 0
            if takes_value and action.default is not None and not action.required:
                assert "default" in action.help, f"{command} {action.option_strings[0]}: default not shown"

    def test_every_duration_flag_says_its_syntax(self):
        """A flag whose value is a duration says how to write one (seconds, or 300ms, 30s, 5m)."""
        durations = [
            a for a in _options("report") if isinstance(a.default, str) and re.fullmatch(r"\d+(ms|s|m|h)", a.default)
        ]
        assert {a.option_strings[0] for a in durations} == {"--interval", "--ttl", "--deregister-after", "--refresh"}
        for action in durations:
            assert action.metavar == "DURATION"
            assert "seconds, or 300ms, 30s, 5m" in str(action.help), action.option_strings[0]


@pytest.fixture
async def fakes(tmp_path: Path) -> AsyncIterator[tuple[FakeConsul, FakeKubernetes, Path]]:
    async with FakeConsul() as consul, FakeKubernetes() as kube:
        kube.add_deployment(NS, "bolina", replicas=4, labels={"app": "bolina"})
        for n in range(4):
            consul.add_instance(
                "bolina",
                instance_id=f"bolina-{n}",
                node=f"node-{n}",
                address=f"10.0.0.{n}",
                port=9001,
                meta={"server_id": str(n), "udp_port": "9002", "pod": f"bolina-{n}"},
                status="passing" if n == 0 else "warning",
            )
        config = {
            "consul": {"address": consul.url, "wait": "30s"},
            "kubernetes": {"namespace": NS, "kubeconfig": str(kube.kubeconfig(tmp_path / "kubeconfig"))},
            "policy": {"target_available_ratio": 0.5, "scale_down_ratio": 0.8},
            "http": {"enabled": False},
            "logging": {"format": "json"},
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        yield consul, kube, path


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bolina_scaler",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def until_real(condition: Callable[[], bool], *, within: float) -> None:
    """Poll ``condition`` in real time (a child process runs on its own clock) until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, f"condition not met within {within}s"
        await asyncio.sleep(0.005)


class TestPlan:
    async def test_plan_prints_the_decision_and_changes_nothing(self, fakes):
        """plan reads Consul and the scale once, prints the decision as JSON, and sends no patch."""
        _, kube, path = fakes
        process = await _spawn("plan", "--config", str(path))
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        report = json.loads(out)
        assert (report["current"], report["desired"], report["reason"]) == (4, 6, "below_target")
        assert report["would_patch"] is True
        assert (report["paused"], report["pause"], report["policy_decision"]) == (False, None, None)
        assert kube.patches == []

    @pytest.mark.parametrize(
        ("annotation", "desired", "held"),
        [({"bolina-scaler/paused": "true"}, 4, None), ({"bolina-scaler/paused-replicas": "3"}, 3, 3)],
    )
    async def test_plan_on_a_paused_deployment_says_paused_and_would_not_patch(
        self, fakes, annotation: dict[str, str], desired: int, held: int | None
    ):
        """plan takes the daemon's step: on a paused Deployment it reports the pause, what it holds,
        what the policy wanted, and would_patch false when the pause holds the current count."""
        _, kube, path = fakes
        kube.annotate(NS, "bolina", annotation)
        process = await _spawn("plan", "--config", str(path))
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        report = json.loads(out)
        assert report["paused"] is True
        assert report["pause"]["held_replicas"] == held
        assert (report["current"], report["desired"], report["reason"]) == (4, desired, "paused")
        assert report["would_patch"] is (desired != 4)
        assert report["policy_decision"]["desired"] == 6, "the policy's own wish is shown beside the pause"
        assert kube.patches == []

    async def test_plan_with_unreachable_consul_exits_1(self, tmp_path: Path):
        """When Consul cannot be reached, plan says so and exits 1 (it never guesses)."""
        async with FakeKubernetes() as kube:
            kube.add_deployment(NS, "bolina", replicas=2)
            path = tmp_path / "c.yaml"
            path.write_text(
                yaml.safe_dump(
                    {
                        "consul": {"address": "http://127.0.0.1:9", "retry_max": "1s"},
                        "kubernetes": {"namespace": NS, "kubeconfig": str(kube.kubeconfig(tmp_path / "k"))},
                    }
                )
            )
            process = await _spawn("plan", "--config", str(path))
            out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 1, (out, err)
        assert "consul" in err.decode().lower()


class TestRun:
    async def test_sigterm_stops_within_ten_seconds(self, fakes):
        """The real process scales, then on SIGTERM exits 0 well within terminationGracePeriodSeconds."""
        _, kube, path = fakes
        process = await _spawn("run", "--config", str(path))
        assert process.stdout is not None
        lines: list[dict[str, object]] = []

        async def read_until_scaled() -> None:
            assert process.stdout is not None
            while True:
                raw = await process.stdout.readline()
                assert raw, "daemon exited early"
                lines.append(json.loads(raw))
                if lines[-1]["event"] == "scale.patched":
                    return

        await asyncio.wait_for(read_until_scaled(), 60)
        assert int(kube.deployment(NS, "bolina")["spec"]["replicas"]) == 6
        loop = asyncio.get_running_loop()
        sent = loop.time()
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), 10)
        assert process.returncode == 0
        assert loop.time() - sent < 10
        tail = [json.loads(line) for line in rest.splitlines() if line.strip()]
        assert tail[-1]["event"] == "daemon.stopped"
        assert any(entry["event"] == "daemon.signal_received" for entry in tail)

    async def test_sighup_stops_like_sigterm(self, fakes):
        """SIGHUP (a terminal gone, a misdirected reload) stops the daemon cleanly: exit 0, 'daemon.stopped'."""
        _, _, path = fakes
        process = await _spawn("run", "--config", str(path))
        assert process.stdout is not None

        async def read_until(event: str) -> None:
            assert process.stdout is not None
            while True:
                raw = await process.stdout.readline()
                assert raw, "daemon exited early"
                if json.loads(raw)["event"] == event:
                    return

        await asyncio.wait_for(read_until("decision.evaluated"), 60)
        process.send_signal(signal.SIGHUP)
        rest, _ = await asyncio.wait_for(process.communicate(), 10)
        assert process.returncode == 0
        tail = [json.loads(line) for line in rest.splitlines() if line.strip()]
        # Lines written before the signal was handled may come first (a later evaluation, ...).
        signals = [line["signal"] for line in tail if line["event"] == "daemon.signal_received"]
        assert signals == ["SIGHUP"]
        assert tail[-1]["event"] == "daemon.stopped"

    @pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
    async def test_a_stop_signal_while_starting_exits_cleanly(self, fakes, signum: signal.Signals):
        """A stop signal as soon as the process catches it (while it still imports its libraries, a
        second before its loop runs): exit 0 and 'daemon.stopped', not death by signal."""
        _, kube, path = fakes
        process = await _spawn("run", "--config", str(path))
        status = Path(f"/proc/{process.pid}/status")

        def catches() -> bool:
            caught = next(line for line in status.read_text().splitlines() if line.startswith("SigCgt:"))
            return bool(int(caught.split()[1], 16) & (1 << (signum - 1)))

        await until_real(catches, within=10)
        process.send_signal(signum)
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()[-2000:]
        events = [json.loads(line)["event"] for line in out.splitlines() if line.strip()]
        assert events[-1] == "daemon.stopped"
        assert "daemon.signal_received" in events
        assert kube.patches == []

    @pytest.mark.skipif(not hasattr(signal, "pidfd_send_signal"), reason="needs Linux pidfd_send_signal")
    async def test_stop_signals_during_teardown_still_exit_0(self, fakes):
        """SIGTERM, then SIGINT and SIGTERM again and again across the whole teardown (the daemon's
        shutdown, asyncio closing its loop, the interpreter finishing) until the process is gone:
        exit 0, 'daemon.stopped', and the Lease released, wherever the later signals land."""
        _, kube, path = fakes
        process = await _spawn("run", "--config", str(path))
        assert process.stdout is not None

        async def read_until_scaled() -> None:
            assert process.stdout is not None
            while True:
                raw = await process.stdout.readline()
                assert raw, "daemon exited early"
                if json.loads(raw)["event"] == "scale.patched":
                    return

        await asyncio.wait_for(read_until_scaled(), 60)
        assert (kube.lease(NS, "bolina-scaler") or {})["spec"]["holderIdentity"]
        output = asyncio.create_task(process.communicate())
        # Through a pidfd: Popen.send_signal polls first, and would reap the child before asyncio does.
        pidfd = os.pidfd_open(process.pid)
        sent = 0
        try:
            while process.returncode is None and sent < 20_000:
                try:
                    signal.pidfd_send_signal(pidfd, signal.SIGINT if sent % 2 else signal.SIGTERM)
                except ProcessLookupError:
                    break  # exited and reaped
                sent += 1
                await asyncio.sleep(0.0005)
        finally:
            os.close(pidfd)
        rest, err = await asyncio.wait_for(output, 30)
        events = [json.loads(line)["event"] for line in rest.splitlines() if line.strip()]
        assert process.returncode == 0, (sent, err.decode()[-2000:], events[-5:])
        assert sent > 2, "the process exited before a second signal was sent"
        assert "daemon.stopped" in events
        lease = kube.lease(NS, "bolina-scaler")
        assert lease is not None
        assert not lease["spec"].get("holderIdentity")

    def test_stop_signals_are_held_before_the_libraries_load(self, tmp_path: Path):
        """The entry point holds SIGTERM/SIGINT/SIGHUP before pydantic (the first heavy import) loads:
        the window in which a stop signal kills the process is Python's own start-up only."""
        probe = tmp_path / "probe.py"
        probe.write_text(
            "import signal, sys\n"
            "seen = {}\n"
            "class Watch:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'pydantic' and not seen:\n"
            "            seen.update({s.name: getattr(signal.getsignal(s), '__name__', str(signal.getsignal(s)))\n"
            "                         for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)})\n"
            "sys.meta_path.insert(0, Watch())\n"
            "sys.argv = ['bolina-scaler', 'run', '--config', '/nonexistent/config.yaml']\n"
            "from bolina_scaler.__main__ import main\n"
            "code = main()\n"
            "print(seen, code)\n"
        )
        done = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, timeout=60)
        assert done.stdout.strip() == "{'SIGTERM': '_note', 'SIGINT': '_note', 'SIGHUP': '_note'} 2", done.stderr

    async def test_bad_kubeconfig_is_a_runtime_failure(self, tmp_path: Path):
        """Credentials that cannot be loaded end the process with exit 1 and one error line."""
        path = tmp_path / "c.yaml"
        broken = tmp_path / "kubeconfig"
        broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
        path.write_text(yaml.safe_dump({"kubernetes": {"kubeconfig": str(broken)}, "logging": {"format": "json"}}))
        process = await _spawn("run", "--config", str(path))
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 1
        errors = [json.loads(line) for line in out.splitlines() if b'"error"' in line]
        assert errors
        assert "\n" not in errors[-1]["error"]
