"""What the running daemon knows right now: one value that ``/readyz``, ``/v1/servers``,
``/v1/decision``, ``/metrics`` and the tests read.

No I/O. A frozen value, assembled from the parts that own each fact whenever someone reads it
(``Daemon.state``): nobody pushes copies into it, so it can never disagree with its sources.

=====================  =================================================================
fact                   owner
=====================  =================================================================
snapshot, trusted_at   ``Mailbox``: the newest snapshot from the watch, the newest trusted one
scale, read_error,     ``Evaluator``: the scale it read, what it decided and did, its counters
decision, outcome, …
evaluating_since,      ``Evaluator``: an evaluation in progress, a wanted change not made
unapplied_since
kube_succeeded_at      ``actuator.KubeApi``: the last request answered 2xx
pause, pause_known,    ``actuator.DeploymentWatch``: the Deployment's pause annotations as read
pause_error
paused_since           ``Daemon``: when it saw the pause begin
role                   ``Daemon.role``: ``core.role.Role.of`` (shadow? leading?)
identity, holder       ``coordination.Leadership``: our name and the Lease holder last seen
watching               ``Daemon``: whether the watch task runs
=====================  =================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from bolina_scaler.actuator.scale import Scale
from bolina_scaler.core.decision import Decision
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.outcome import Outcome
from bolina_scaler.core.pause import Pause
from bolina_scaler.core.role import Role

__all__ = ["DaemonState"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonState:
    """What the daemon knows at one moment; see the module docstring for who owns each fact."""

    snapshot: FleetSnapshot | None = None
    """The newest Consul snapshot (trusted or not)."""
    trusted_at: float | None = None
    """``observed_at`` of the newest trusted snapshot (``/readyz``)."""
    trusted_wall_at: float | None = None
    """The same moment as Unix time (the metric ``last_trusted_snapshot_timestamp_seconds``)."""
    scale: Scale | None = None
    scale_read_at: float | None = None
    read_error: str | None = None
    """Why the last read of the scale failed; None once a read succeeded."""
    decision: Decision | None = None
    decided_at: float | None = None
    outcome: Outcome | None = None
    """What the last evaluation did with its decision."""
    policy_decision: Decision | None = None
    """While paused: what the policy itself decided (``decision`` is what was done instead)."""
    pause: Pause | None = None
    """The pause annotation in force (None: not paused, or not read yet: see ``pause_known``)."""
    pause_known: bool = False
    """Whether the Deployment's pause annotations were read (False before the first read)."""
    pause_error: str | None = None
    """Why the last read of the Deployment failed; None once one succeeded."""
    paused_since: float | None = None
    """When the pause in force began (loop time), as this replica saw it."""
    patches: int = 0
    applied: tuple[tuple[float, Decision], ...] = ()
    """The last scale changes made (loop time, decision), oldest first."""
    evaluations: int = 0
    role: Role = Role.LEADER
    identity: str | None = None
    """Our leader-election identity (None without leader election)."""
    holder: str | None = None
    """The Lease holder we last saw."""
    watching: bool = False
    """Whether the Consul watch runs (``/healthz`` fails when it has ended)."""
    evaluating_since: float | None = None
    """When the evaluation in progress began; None between evaluations."""
    unapplied_since: float | None = None
    """Since when a scale change this replica wants to make has not been made (failed, conflicts)."""
    kube_succeeded_at: float | None = None
    """When a Kubernetes request last succeeded (any of them); None before the first."""

    def stuck_since(self) -> float | None:
        """Since when the daemon has been stuck: a wanted change not made, or an evaluation
        waiting for the API server (the earlier of the two); None when neither."""
        moments = [m for m in (self.unapplied_since, self.evaluating_since) if m is not None]
        return min(moments) if moments else None
