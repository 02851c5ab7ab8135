"""A simulated Bolina fleet: pods, Consul registrations, clients and a load balancer, in virtual time.

Pure apart from its own seeded randomness: no I/O, no clock reads (time comes in as ``now``), so a
run is a deterministic function of (trace, parameters, seed, scaling decisions). It drives the
``simulate`` command in virtual time (1 s ticks).

What is modelled, and how::

    Deployment spec ──apply_replicas──► pods created ──start-up delay (lognormal)──► registered in
    Consul as Available ──every report_interval: metrics → availability.classify ──► stage
    clients arrive (Poisson, trace rate) ──► load balancer: least-loaded Available server,
    in FleetSnapshot.ranked() order ──► none Available: a Warning server with room (degraded),
    else turned away (counted in the demand of the best-ranked server: it was offered to it)
    ──► a client stays for its session (exponential), then leaves
    scale-down / failure ──► that server's clients reconnect through the load balancer at once

What reaches the scaler, and when (as a real Consul client agent does it, ``agent/local/state.go``
of Consul 1.14, measured in docs/policy.md)::

    every report_interval: stage, load, demand ──reporter.deadband.news──► nothing new: heartbeat
    (the agent drops it) │ news ──► status changed? ──yes──► catalog at once (new index)
                                         └──no (output only)──► catalog after check_update_interval
                                            × U[0.5, 1.5) (Consul's stagger); a status change first
                                            writes the latest output with it

The scaler's ``snapshot`` is the catalog's view: statuses at once, load and demand as last written.
A server's **demand** is its offered load: the new clients offered to it (accepted or turned away)
in the last ``demand_window``, per second, × ``session_mean`` / ``capacity`` (``core.demand``).

Scale-down removes pods as Kubernetes would with ``pod-deletion-cost`` set by stage: pods not yet
registered first (newest first), then Critical, then Warning, then the least loaded.

The world's parameters are ``fleet_params.FleetParams``; one pod and its server is
``simulated_server.SimServer``.
"""

from __future__ import annotations

import heapq
import math
import operator
import random
from dataclasses import dataclass

from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.model import Status
from bolina_scaler.reporter.availability import Stage, classify, quantize_load
from bolina_scaler.reporter.deadband import Published, news, quantize_demand
from bolina_scaler.simulator.fleet_params import SHIPPED_CHECK_UPDATE_INTERVAL, FleetParams
from bolina_scaler.simulator.simulated_server import SimServer
from bolina_scaler.simulator.traces import Trace

# FleetParams, SimServer and SHIPPED_CHECK_UPDATE_INTERVAL live in fleet_params and
# simulated_server; named here too, as the fleet's inputs, for the modules that import them from here.
__all__ = [
    "SHIPPED_CHECK_UPDATE_INTERVAL",
    "ClientStats",
    "FleetParams",
    "SimServer",
    "SimulatedFleet",
]


@dataclass(slots=True)
class ClientStats:
    """Every client arrival ends in exactly one of: active, completed, rejected (conservation)."""

    arrived: int = 0
    completed: int = 0
    rejected: int = 0
    """Clients turned away: no server was Available and no Warning server had room."""
    degraded: int = 0
    """Admissions (new or reconnecting) to a Warning server because no server was Available."""
    reconnected: int = 0
    rejected_client_seconds: float = 0.0
    """Session time lost by rejected clients."""
    degraded_client_seconds: float = 0.0
    """Session time spent on a server admitted to while it was not Available."""


class SimulatedFleet:
    """Pods, clients and a load balancer driven by a demand ``Trace``.

    Call ``step(now)`` with non-decreasing times (it advances in ``params.tick`` slices) and
    ``apply_replicas(n, now)`` whenever the scaler patches the Deployment. ``snapshot(now)`` is what
    the scaler's Consul watch would see.
    """

    def __init__(
        self,
        trace: Trace,
        *,
        params: FleetParams | None = None,
        seed: int = 0,
        replicas: int = 0,
        start: float = 0.0,
    ) -> None:
        self.trace = trace
        self.params = params or FleetParams()
        self.now = start
        self.spec = 0
        self.index = 1
        self.stats = ClientStats()
        self.servers: list[SimServer] = []
        # Independent streams, so one policy's decisions never shift another stream's draws:
        # every policy sees the same clients and the same k-th pod start-up delay.
        self._arrivals = random.Random(f"{seed}:arrivals")
        self._startups = random.Random(f"{seed}:startups")
        self._noise = random.Random(f"{seed}:noise")
        self._stagger = random.Random(f"{seed}:stagger")
        self._seed = seed
        self.catalog_writes = 0
        """Writes of the Consul catalog: registrations, deregistrations, check changes."""
        self._ends: list[tuple[float, int]] = []
        self._where: dict[int, SimServer] = {}
        self._next_client = 0
        self._next_pod = 0
        self._failures = list(trace.failures)
        self._snapshot: FleetSnapshot | None = None
        self._routable: list[SimServer] | None = None
        self._fallback: list[SimServer] = []
        self._registered: list[SimServer] = []
        if replicas:
            self.apply_replicas(replicas, start, ready=True)
            self._warm_up(start)

    def _warm_up(self, t: float) -> None:
        # Start in steady state: the clients the initial rate keeps connected (sessions are
        # exponential, so the time they have left is exponential too), spread by the load balancer;
        # the arrivals of the last demand window, spread evenly; and what the reporters and agents
        # had long written for them.
        for duration in self._arrivals_in(t, self.params.session_mean):
            self.stats.arrived += 1
            cid = self._next_client
            self._next_client += 1
            heapq.heappush(self._ends, (t + duration, cid))
            self._route(cid, t + duration, t)
        registered = [s for s in self.servers if s.registered]
        window = self.params.demand_window
        warm = random.Random(f"{self._seed}:warm")
        for _ in range(_poisson(warm, self.trace.rate(t) * window)):
            warm.choice(registered).offered.append(t - window * warm.random())
        for server in registered:
            for offered in (sorted(server.offered),):
                server.offered.clear()
                server.offered.extend(offered)
            server.published = server.catalog = self._reading(server, server.stage, t)

    # -- Kubernetes ------------------------------------------------------------------------

    def apply_replicas(self, n: int, now: float, *, ready: bool = False) -> None:
        """Set the Deployment's replica count: create pods (registering after a start-up delay) or delete some."""
        if n < 0:
            raise ValueError("replicas must be >= 0")
        self.spec = n
        while len(self.servers) < n:
            delay = 0.0 if ready else self._startup_delay()
            self.servers.append(SimServer(self._next_pod, created_at=now, ready_at=now + delay))
            self._next_pod += 1
        if len(self.servers) > n:
            order = sorted(self.servers, key=self._deletion_key)
            doomed = order[: len(self.servers) - n]
            gone = {id(s) for s in doomed}
            self.servers = [s for s in self.servers if id(s) not in gone]
            deregistered = sum(1 for s in doomed if s.registered)
            self._routable = None
            if deregistered:
                self.catalog_writes += deregistered
                self._changed()
            for server in doomed:
                self._disconnect(server, now)
        if ready:
            self._register_due(now)

    def _startup_delay(self) -> float:
        p = self.params
        return p.startup_median * math.exp(p.startup_sigma * self._startups.gauss(0.0, 1.0))

    @staticmethod
    def _deletion_key(server: SimServer) -> tuple[int, int, int, float]:
        # Kubernetes: unregistered (not ready) pods first, newest first; then pod-deletion-cost.
        if not server.registered:
            return (0, 0, 0, -server.created_at)
        return (1, -server.status.rank, server.count, -server.created_at)

    # -- time ------------------------------------------------------------------------------

    def step(self, now: float) -> FleetSnapshot:
        """Advance the world to ``now`` and return what Consul shows then."""
        self.advance(now)
        return self.snapshot(now)

    def advance(self, now: float) -> None:
        """Advance the world to ``now`` (in ``params.tick`` slices)."""
        tick = self.params.tick
        while self.now + tick <= now + 1e-9:
            self._advance(self.now, tick)
            self.now += tick
        if now > self.now + 1e-9:
            self._advance(self.now, now - self.now)
            self.now = now

    def _advance(self, t: float, dt: float) -> None:
        self._register_due(t)
        self._depart(t)
        while self._failures and self._failures[0] <= t:
            self._failures.pop(0)
            self.fail_one(t)
        for duration in self._arrivals_in(t, dt):
            self._admit(duration, t)
        self._report_due(t + dt)

    def _admit(self, duration: float, t: float) -> None:
        self.stats.arrived += 1
        cid = self._next_client
        self._next_client += 1
        end = t + duration
        heapq.heappush(self._ends, (end, cid))
        self._route(cid, end, t, new=True)

    def _register_due(self, t: float) -> None:
        for server in self.servers:
            if not server.registered and server.ready_at <= t:
                # As ``bolina-scaler report`` does: register the check Critical, then at once
                # update it with the first reading; the status change writes the output with it.
                server.registered = True
                server.stage = Stage(Status.AVAILABLE, t)
                server.next_report = t + self.params.report_interval
                server.published = server.catalog = self._reading(server, server.stage, t)
                self.catalog_writes += 2
                self._changed()

    def _depart(self, t: float) -> None:
        ends = self._ends
        while ends and ends[0][0] <= t:
            _, cid = heapq.heappop(ends)
            server = self._where.pop(cid, None)
            if server is not None:
                del server.clients[cid]
                server.count -= 1
                self.stats.completed += 1

    def _arrivals_in(self, t: float, dt: float) -> list[float]:
        lam = self.trace.rate(t) * dt
        rng = self._arrivals
        count = _poisson(rng, lam)
        mean = self.params.session_mean
        return [rng.expovariate(1.0 / mean) for _ in range(count)]

    def _report_due(self, t: float) -> None:
        p = self.params
        for server in self.servers:
            if not server.registered:
                continue
            if server.sync_at is not None and server.sync_at <= t:
                self._sync(server)
            if server.next_report <= t:
                server.next_report += p.report_interval
                self._report(server, t)

    def _reading(self, server: SimServer, stage: Stage, t: float) -> Published:
        p = self.params
        demand: float | None = None
        if p.report_demand:
            window = server.offered
            while window and window[0] <= t - p.demand_window:
                window.popleft()
            demand = quantize_demand(len(window) / p.demand_window * p.session_mean / p.capacity)
        return Published(status=stage.status, load=quantize_load(server.count / p.capacity), demand=demand, at=t)

    def _report(self, server: SimServer, t: float) -> None:
        load = server.count / self.params.capacity
        sample = {
            "connections": load,
            "cpu": max(0.0, self.params.cpu_per_load * load + self._noise.gauss(0.0, self.params.cpu_noise)),
            "errors": 1.0 if server.failing else 0.0,
        }
        stage = classify(sample, config=self.params.classifier, stage=server.stage, now=t)
        if stage.status is not server.stage.status:
            self._routable = None
        server.stage = stage
        reading = self._reading(server, stage, t)
        last = server.published
        why = news(
            last, status=reading.status, load=reading.load, demand=reading.demand, now=t, deadband=self.params.deadband
        )
        if why is None:
            return  # a heartbeat with the same output: the agent drops it
        server.published = reading
        catalog = server.catalog
        if catalog is None or reading.status is not catalog.status or self.params.check_update_interval <= 0:
            self._sync(server)
        elif server.sync_at is None:
            # Consul: intv := d/2 + lib.RandomStagger(d), armed by the first unsynced output change.
            server.sync_at = t + self.params.check_update_interval * (0.5 + self._stagger.random())

    def _sync(self, server: SimServer) -> None:
        """The agent writes the check (status and latest output) to the catalog."""
        server.sync_at = None
        if server.catalog == server.published:
            return
        server.catalog = server.published
        self.catalog_writes += 1
        self._changed()

    def fail_one(self, now: float) -> SimServer | None:
        """The oldest healthy registered server starts failing: Critical at once, its clients reconnect."""
        candidates = [s for s in self.servers if s.registered and not s.failing]
        if not candidates:
            return None
        server = min(candidates, key=lambda s: (s.created_at, s.n))
        server.failing = True
        dropped, server.clients, server.count = server.clients, {}, 0
        self._report(server, now)  # Critical (errors) with no clients left: written at once
        self._reconnect(dropped, now)
        return server

    # -- clients ---------------------------------------------------------------------------

    def _changed(self) -> None:
        self.index += 1
        self._snapshot = None
        self._routable = None

    def _route(self, cid: int, end: float, t: float, *, new: bool = False) -> None:
        """Send a client to the best server (FleetSnapshot.ranked() order, live load), or reject it."""
        if self._routable is None:
            self._registered = [s for s in self.servers if s.registered]
            self._routable = [s for s in self._registered if s.status is Status.AVAILABLE]
            self._fallback = [s for s in self._registered if s.status is Status.WARNING]
        candidates = self._routable
        degraded = not candidates
        if degraded:
            candidates = self._fallback
            if candidates and min(candidates, key=_COUNT).count >= self.params.capacity:
                candidates = []
        if not candidates:
            self.stats.rejected += 1
            self.stats.rejected_client_seconds += end - t
            # The client was offered to the best-ranked server, which turned it away (its demand).
            # A new client was offered to the best-ranked server, which turned it away: its demand.
            offered_to = self._fallback or self._registered
            if new and offered_to:
                min(offered_to, key=_COUNT).offered.append(t)
            return
        # FleetSnapshot.ranked() order within one stage: least loaded, then server id. All simulated
        # servers have the same capacity and ids that sort like their creation order, and the lists
        # keep that order, so min() by client count (first of equals wins) is that order.
        server = min(candidates, key=_COUNT)
        server.clients[cid] = end
        server.count += 1
        if new:
            server.offered.append(t)
        self._where[cid] = server
        if degraded:
            self.stats.degraded += 1
            self.stats.degraded_client_seconds += end - t

    def _disconnect(self, server: SimServer, t: float) -> None:
        clients, server.clients, server.count = server.clients, {}, 0
        self._reconnect(clients, t)

    def _reconnect(self, clients: dict[int, float], t: float) -> None:
        for cid, end in clients.items():
            del self._where[cid]
            self.stats.reconnected += 1
            self._route(cid, end, t)

    @property
    def active_clients(self) -> int:
        return len(self._where)

    # -- what Consul shows -------------------------------------------------------------------

    def snapshot(self, now: float) -> FleetSnapshot:
        """The registered servers as a ``FleetSnapshot`` observed at ``now``."""
        current = self.current_snapshot()
        if current.observed_at == now:
            return current
        return FleetSnapshot(index=current.index, servers=current.servers, observed_at=now, trust=current.trust)

    def current_snapshot(self) -> FleetSnapshot:
        """The snapshot as of the last Consul change (``observed_at`` is when it changed): cheap."""
        if self._snapshot is None:
            registered = [s.to_server() for s in self.servers if s.registered]
            self._snapshot = FleetSnapshot.of(registered, index=self.index, observed_at=self.now)
        return self._snapshot

    @property
    def pods(self) -> int:
        """Pods that exist (starting or registered): what the replicas cost."""
        return len(self.servers)

    def utilisation(self) -> tuple[list[float], int]:
        """Per-pod CPU utilisation of registered (ready) pods, and the number of pods not ready yet (HPA input)."""
        p = self.params
        ready = [p.cpu_per_load * s.count / p.capacity for s in self.servers if s.registered]
        return ready, sum(1 for s in self.servers if not s.registered)


_COUNT = operator.attrgetter("count")


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    # Knuth: multiply uniforms until the product drops below e^-λ.
    limit, k, product = math.exp(-lam), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k
