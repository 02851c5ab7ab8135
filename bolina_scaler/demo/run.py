"""``bolina-scaler demo``: play the scenario against the real daemon, then tell the story.

Does I/O (local HTTP servers on 127.0.0.1, stdout). The daemon is the real one (watch, policy,
actuator, HTTP API); only the servers it talks to are the fakes of ``bolina_scaler.testing``.
It exits by itself after about 45 seconds (``--speed 2`` halves that).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import TypeVar

import aiohttp
import structlog

from bolina_scaler.config import Config, parse_config
from bolina_scaler.config.schema import StepConfig
from bolina_scaler.daemon import Daemon, open_daemon
from bolina_scaler.demo.output import Action, plot, print_report
from bolina_scaler.demo.scenario import DEMO_CONFIG, NAMESPACE, Scenario
from bolina_scaler.demo.world import ScriptedWorld
from bolina_scaler.testing.consul import FakeConsul
from bolina_scaler.testing.kubernetes import FakeKubernetes

__all__ = ["run_demo"]

log = structlog.get_logger("bolina_scaler.demo")


async def run_demo(*, speed: float = 1.0, plot_path: str | None = None, scenario: Scenario | None = None) -> int:
    """Play the scenario against the real daemon; print the scale actions; return an exit code."""
    scenario = scenario or Scenario()
    config = _scaled_config(speed)
    actions: list[Action] = []
    async with FakeConsul() as consul, FakeKubernetes() as kube:
        kube.add_deployment(NAMESPACE, "bolina", replicas=0, labels={"app": "bolina"})
        with tempfile.TemporaryDirectory(prefix="bolina-demo-") as tmp:
            kubeconfig = kube.kubeconfig(Path(tmp) / "kubeconfig", namespace=NAMESPACE)
            config = config.model_copy(
                update={
                    "consul": config.consul.model_copy(update={"address": consul.url}),
                    "kubernetes": config.kubernetes.model_copy(update={"kubeconfig": kubeconfig}),
                }
            )
            world = ScriptedWorld(consul=consul, kube=kube, scenario=scenario, speed=speed)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            start = loop.time()
            async with open_daemon(config) as daemon:
                runner = asyncio.create_task(daemon.run(stop), name="daemon")
                try:
                    await _play(world, daemon, scenario, speed, start, actions)
                    answers = await _ask_http(daemon)
                finally:
                    stop.set()
                    await runner
    print_report(actions, world, config, kube.events(NAMESPACE), answers)
    if plot_path:
        return plot(world, actions, plot_path, config)
    return 0


async def _play(
    world: ScriptedWorld,
    daemon: Daemon,
    scenario: Scenario,
    speed: float,
    start: float,
    actions: list[Action],
) -> None:
    loop = asyncio.get_running_loop()
    phases = list(scenario.phases)
    while (t := loop.time() - start) < scenario.duration / speed:
        while phases and t * speed >= phases[0].at:
            phase = phases.pop(0)
            log.info("demo.phase", message=phase.say, t=round(t * speed, 1))
            if phase.crash:
                world.crash_one()
        world.tick(t)
        await asyncio.sleep(0.1 / speed)
    for at, decision in daemon.state.applied:
        when = (at - start) * speed
        actions.append((when, decision.current, decision.desired, str(decision.reason), decision.message))


_Steps = TypeVar("_Steps", bound=StepConfig)


def _scaled_config(speed: float) -> Config:
    config = parse_config(DEMO_CONFIG)
    if speed == 1.0:
        return config
    p = config.policy
    policy = p.model_copy(
        update={
            "scale_down_stabilization": p.scale_down_stabilization / speed,
            "startup_grace": p.startup_grace / speed,
            "scale_up": _scaled_steps(p.scale_up, speed).model_copy(
                update={"stabilization": p.scale_up.stabilization / speed}
            ),
            "scale_down": _scaled_steps(p.scale_down, speed),
            "mass_change": p.mass_change.model_copy(update={"confirmation": p.mass_change.confirmation / speed}),
        }
    )
    return config.model_copy(update={"policy": policy})


def _scaled_steps(steps: _Steps, speed: float) -> _Steps:
    """A direction's step limit with every period ``speed`` times shorter."""
    policies = steps.policies
    if policies is not None:
        policies = tuple(rule.model_copy(update={"period": rule.period / speed}) for rule in policies)
    return steps.model_copy(update={"period": steps.period / speed, "policies": policies})


async def _ask_http(daemon: Daemon) -> list[tuple[str, str]]:
    """What the daemon's own HTTP API answers at the end (the lines a person would curl)."""
    if daemon.http is None:
        return []
    answers: list[tuple[str, str]] = []
    async with aiohttp.ClientSession() as session:
        for path in ("/readyz", "/v1/servers", "/v1/decision"):
            async with session.get(f"{daemon.http.url}{path}") as response:
                body = await response.json()
            if path == "/v1/decision":
                body = {k: body[k] for k in ("summary", "role", "identity", "outcome")} | {
                    "inputs": body["decision"]["inputs"],
                    "clamps": body["decision"]["clamps"],
                }
            answers.append((f"curl -s {daemon.http.url}{path}", json.dumps(body, ensure_ascii=False)))
    return answers
