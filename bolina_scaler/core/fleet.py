"""An immutable picture of the Bolina fleet at one Consul index, and whether it can be trusted.

Pure data, no I/O. The watch builds one ``FleetSnapshot`` per blocking-query answer; the policy,
the servers API and the simulator only read it. Trust is part of the value: a snapshot that
cannot be trusted still travels through the pipeline (so the log and ``/readyz`` can say why the
scaler holds), but the policy never scales on it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from bolina_scaler.core.model import ConsulIndex, Server, Status

__all__ = ["FleetSnapshot", "Trust"]


@dataclass(frozen=True, slots=True)
class Trust:
    """Whether a snapshot may drive a scaling decision, and if not, every reason why not."""

    problems: tuple[str, ...] = ()

    @property
    def trusted(self) -> bool:
        return not self.problems

    @classmethod
    def ok(cls) -> Trust:
        return cls(())

    def __str__(self) -> str:
        return "trusted" if self.trusted else "; ".join(self.problems)


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetSnapshot:
    """The servers registered under the watched service at one Consul index.

    ``observed_at`` is the monotonic (event-loop) time the answer arrived: the policy compares it
    with the ``now`` it is given to refuse stale data.
    """

    index: ConsulIndex
    servers: tuple[Server, ...]
    observed_at: float
    trust: Trust = field(default_factory=Trust.ok)
    counts: Counter[Status] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "counts", Counter(server.status for server in self.servers))

    @classmethod
    def of(
        cls,
        servers: Iterable[Server],
        *,
        index: int,
        observed_at: float,
        problems: Iterable[str] = (),
    ) -> FleetSnapshot:
        """Build a snapshot from any iterable of servers (convenience for tests and the simulator)."""
        return cls(
            index=ConsulIndex(index),
            servers=tuple(servers),
            observed_at=observed_at,
            trust=Trust(tuple(problems)),
        )

    @property
    def trusted(self) -> bool:
        return self.trust.trusted

    @property
    def registered(self) -> int:
        return len(self.servers)

    @property
    def available(self) -> int:
        return self.counts[Status.AVAILABLE]

    @property
    def warning(self) -> int:
        return self.counts[Status.WARNING]

    @property
    def critical(self) -> int:
        return self.counts[Status.CRITICAL]

    @property
    def available_ratio(self) -> float | None:
        """Share of registered servers that are Available; ``None`` for an empty fleet."""
        return self.available / self.registered if self.servers else None

    @property
    def mean_load(self) -> float | None:
        """Mean reported load of the non-Critical servers; None unless every one of them reports it."""
        total, serving = 0.0, 0
        for server in self.servers:
            if server.status is not Status.CRITICAL:
                if server.load is None:
                    return None
                total += server.load
                serving += 1
        return total / serving if serving else None

    def ranked(self) -> list[Server]:
        """Servers best candidate first: Available, then Warning, then Critical; least loaded first.

        The same order the servers API and the simulator's load balancer use.
        """
        return sorted(
            self.servers,
            key=lambda s: (s.status.rank, s.load if s.load is not None else 0.5, s.server_id),
        )

    def differs_from(self, other: FleetSnapshot) -> bool:
        """Whether this snapshot says something ``other`` did not: another index, trust or fleet.

        The one rule for "changed": the watch yields a new fleet only then (otherwise the last one
        with a fresh ``observed_at``), and the daemon starts its reaction-latency clock only then.
        """
        return (
            self.index != other.index
            or self.trust != other.trust
            or (self.servers is not other.servers and self.servers != other.servers)
        )

    def untrusted(self, *problems: str, observed_at: float) -> FleetSnapshot:
        """This fleet marked untrusted (e.g. Consul became unreachable): the last known servers stay."""
        return FleetSnapshot(
            index=self.index,
            servers=self.servers,
            observed_at=observed_at,
            trust=Trust(tuple(problems)),
        )
