"""Child processes under measurement: the daemon (``bolina-scaler run``) and the floor.

Does I/O (spawns processes, reads ``/proc``). CPU time and memory are read from outside, so the
fakes' work in the harness process is never counted against the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Child", "start_daemon", "start_floor"]

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Child:
    """A measured child process; ``cpu()`` is user+system seconds so far."""

    name: str
    process: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu(self) -> float:
        # /proc/<pid>/stat: fields 14 and 15 are utime and stime in clock ticks (after the comm field).
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def memory_kb(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in kB: the resident set now and its peak so far."""
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
        return fields["VmRSS"], fields["VmHWM"]

    def alive(self) -> bool:
        return self.process.returncode is None

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        return int(self.process.returncode or 0)


REFERENCE = False
"""Run ``bench.reference_daemon`` (the pre-issue-6 parser) instead of ``bolina_scaler``."""


async def start_daemon(config: dict[str, Any], workdir: Path, *, name: str, profile: Path | None = None) -> Child:
    """``bolina-scaler run`` with this config; its JSON log lines go to ``<workdir>/<name>.log``."""
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    module = "bench.reference_daemon" if REFERENCE else "bolina_scaler"
    command = ["-m", module, "run", "--config", str(path), "--log-format", "json"]
    if profile is not None:
        command = ["-m", "pyinstrument", "--renderer", "text", "--outfile", str(profile), *command]
    return await _spawn(name, command, workdir)


async def start_floor(
    *,
    consul_url: str,
    scale_url: str,
    token: str,
    workdir: Path,
    name: str,
    cafile: str | None = None,
    wait: str = "30s",
) -> Child:
    command = ["-m", "bench.floor", "--consul", consul_url, "--scale-url", scale_url, "--token", token]
    command += ["--wait", wait]
    if cafile:
        command += ["--cafile", cafile]
    return await _spawn(name, command, workdir)


async def _spawn(name: str, command: list[str], workdir: Path) -> Child:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *command, stdout=out, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL
        )
    return Child(name=name, process=process, log=log)


def log_events(log: Path, event: str) -> list[dict[str, Any]]:
    """The daemon's JSON log lines with this ``event``."""
    found = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == event:
                    found.append(entry)
    return found
