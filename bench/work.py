"""Work per update, in process: CPU to turn one full health answer into a decision.

Does no network I/O: it takes the exact bytes the fake Consul serves for the fleet, and times
(``time.process_time``) what the daemon does with them: the unchanged-answer check (a
comparison with the last body), ``parse_health`` (on an update: one server changed since the
last answer, through the watch's ``EntryMemo``; and a first answer, nothing known), the
``FleetSnapshot``, ``policy.decide`` and rendering the evaluation log line. It also times the
fake's own work to build that answer, so the reader can see where the time goes at 10,000
servers.
"""

from __future__ import annotations

import gc
import itertools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.backends import SERVICE, BenchConsul
from bench.scenario import REPLICAS, edge, edge_config
from bolina_scaler.config import parse_config
from bolina_scaler.core.evaluation import log_fields, step
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.memory import Memory
from bolina_scaler.core.model import ConsulIndex
from bolina_scaler.source.memo import EntryMemo
from bolina_scaler.source.parse import parse_checked, parse_health

__all__ = ["WorkResult", "measure_work"]


@dataclass
class WorkResult:
    size: int
    body_bytes: int
    unchanged_check_ms: float
    update_parse_ms: float
    parse_ms: float
    reference_parse_ms: float
    snapshot_ms: float
    decide_ms: float
    log_ms: float
    fake_entries_ms: float
    fake_encode_ms: float

    @property
    def total_ms(self) -> float:
        """One update: an answer with one server changed since the last one."""
        return self.unchanged_check_ms + self.update_parse_ms + self.snapshot_ms + self.decide_ms + self.log_ms

    @property
    def first_total_ms(self) -> float:
        """The first answer after start-up: every entry decoded."""
        return self.unchanged_check_ms + self.parse_ms + self.snapshot_ms + self.decide_ms + self.log_ms


def _cpu_ms(fn: object, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.process_time()
        fn()  # type: ignore[operator]
        samples.append((time.process_time() - started) * 1000)
    return statistics.median(samples)


def measure_work(size: int, repeat: int) -> WorkResult:
    e = edge(size)
    consul = BenchConsul()
    consul.load_fleet(["passing"] * e.available + ["warning"] * (size - e.available))
    entries = consul._entries(SERVICE, passing=False)
    body = orjson.dumps(entries)
    consul.set_status_fast("bolina-0", "critical")
    flipped = orjson.dumps(consul._entries(SERVICE, passing=False))
    same = bytes(bytearray(body))
    # Alternate the two answers through one memo: each parse sees exactly one changed entry.
    memo, answers = EntryMemo(), itertools.cycle([flipped, body])
    parse_health(body, memo)
    # The daemon freezes its start-up heap (cli._run); freeze this process's (the fake's
    # 10,000-server fleet) likewise, or full collections of it land inside the timings.
    gc.collect()
    gc.freeze()
    config = parse_config(
        edge_config(e=e, consul_url="http://127.0.0.1:1", kubeconfig=Path("/nonexistent"), namespace="b")
    ).policy
    servers = parse_health(body)[0]
    snapshot = FleetSnapshot(index=ConsulIndex(7), servers=servers, observed_at=0.0)
    decision = step(fleet=snapshot, current=REPLICAS, config=config, memory=Memory(), now=0.0, wall_now=None).decision
    result = WorkResult(
        size=size,
        body_bytes=len(body),
        # The worst case: equal bodies are compared to their last byte (distinct objects, as in the watch).
        unchanged_check_ms=_cpu_ms(lambda: body == same, repeat),
        update_parse_ms=_cpu_ms(lambda: parse_health(next(answers), memo), repeat),
        parse_ms=_cpu_ms(lambda: parse_health(body), repeat),
        reference_parse_ms=_cpu_ms(lambda: parse_checked(body), repeat),
        snapshot_ms=_cpu_ms(lambda: FleetSnapshot(index=ConsulIndex(7), servers=servers, observed_at=0.0), repeat),
        decide_ms=_cpu_ms(
            lambda: step(fleet=snapshot, current=REPLICAS, config=config, memory=Memory(), now=0.0, wall_now=None),
            repeat,
        ),
        log_ms=_cpu_ms(lambda: orjson.dumps(log_fields(decision, now=0.0)), repeat),
        fake_entries_ms=_cpu_ms(lambda: consul._entries(SERVICE, passing=False), repeat),
        fake_encode_ms=_cpu_ms(lambda: orjson.dumps(entries), repeat),
    )
    gc.unfreeze()
    return result
