"""The configuration's schema: one frozen pydantic model per section of the YAML file.

Pure apart from two reads of the outside: defaults read the environment when a model is built
(``consul.address`` from ``$CONSUL_HTTP_ADDR``), and ``ConsulConfig.token()`` reads the token
file. Every number has a range, and the message says it (README, "Configuration reference"):
durations as in ``checks``; replica counts up to ``MAX_REPLICAS`` (Kubernetes' documented limit
of pods per cluster); the step limits as in ``steps``; the watch's ``rate_per_second`` from 0.01
(one query per 100 s) to 1000. A section's own rules (``max_replicas >= min_replicas``) and the
rules across sections (``Config._check``) raise ``ValueError("key: ...")``, which
``errors.one_line`` turns into the one-line message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from bolina_scaler.config.checks import Duration, PositiveDuration, check_address, is_host
from bolina_scaler.config.errors import short_repr
from bolina_scaler.config.files import TOKEN_FILE_BYTES, read_small_text
from bolina_scaler.config.section import MAX_REPLICAS, Section
from bolina_scaler.config.steps import DeletionCostConfig, ScaleDownConfig, ScaleUpConfig, StepConfig, StepRule

__all__ = [
    "DEFAULT_CONSUL_ADDRESS",
    "MAX_ANSWER_BYTES",
    "MAX_FLEET",
    "MAX_REPLICAS",
    "Config",
    "ConsulConfig",
    "DeletionCostConfig",
    "DemandConfig",
    "EventsConfig",
    "FallbackConfig",
    "HttpConfig",
    "KubernetesConfig",
    "LeaderElectionConfig",
    "LoggingConfig",
    "MassChangeConfig",
    "PolicyConfig",
    "ScaleDownConfig",
    "ScaleUpConfig",
    "StatusConfig",
    "StepConfig",
    "StepRule",
    "answer_limit",
]

DEFAULT_CONSUL_ADDRESS = "http://127.0.0.1:8500"

MAX_FLEET = 1_000_000
"""Bound of ``mass_change.min_fleet`` (a number of registered servers, not of replicas)."""
MAX_ANSWER_BYTES = 1024**3
"""Bound of ``consul.max_answer_bytes``, set or derived."""

ANSWER_BYTES_PER_REPLICA = 16 * 1024
"""Room per ``policy.max_replicas`` in a health answer: twice as many entries as replicas (a
rolling update's surge, terminating pods not yet deregistered) of 8 KiB each. A real entry is
about 2 KB (Consul 1.14: a service, its TTL check and the node's serfHealth check)."""
MIN_ANSWER_BYTES = 1024 * 1024
"""The smallest derived ``consul.max_answer_bytes``: about 400 real entries."""


_Section = Section  # the name every section below was written with


def answer_limit(max_replicas: int) -> int:
    """The default of ``consul.max_answer_bytes``: the largest health answer the source reads when
    it is not set (``Config`` fills it in, so that ``check-config`` prints it)."""
    return min(MAX_ANSWER_BYTES, max(MIN_ANSWER_BYTES, max_replicas * ANSWER_BYTES_PER_REPLICA))


class ConsulConfig(_Section):
    """Where and how to watch the Bolina service in Consul."""

    address: str = Field(default_factory=lambda: os.environ.get("CONSUL_HTTP_ADDR") or DEFAULT_CONSUL_ADDRESS)
    service: str = Field(default="bolina", min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.-]+$")
    datacenter: str | None = Field(default=None, min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.-]+$")
    token_file: Path | None = Field(default=None, strict=False)
    ca_file: Path | None = Field(default=None, strict=False)
    tls_verify: bool = True
    wait: PositiveDuration = 30.0
    """How long one blocking query waits for a change. Consul answers a query whose index is above
    its own (after a snapshot restore the index goes back) only when ``wait`` runs out: the watch
    is blind to changes for up to this long after a restore. 30 s bounds that, for one unchanged
    answer every 30 s when the fleet is quiet (``docs/performance.md``, "Defaults")."""
    consistency: Literal["default", "stale", "consistent"] = "default"
    max_last_contact: PositiveDuration = 10.0
    require_known_leader: bool = True
    filter: str | None = Field(default=None, max_length=4096)
    retry_initial: PositiveDuration = 0.5
    retry_max: PositiveDuration = 1.0
    """While Consul fails: probe every 0.5-1 s (at most 2 requests/s), so the first good answer
    after an outage of any length is seen within about a second (``core.pacing.Backoff``)."""
    rate_per_second: float = Field(default=10.0, ge=0.01, le=1000, allow_inf_nan=False)
    rate_burst: int = Field(default=10, ge=1, le=1000)
    """Token bucket on the watch loop: ordinary churn never waits for a token; a service that
    changes faster than ``rate_per_second`` is read at that rate, each answer covering every
    change since the last (``docs/performance.md``, "Defaults")."""
    compress: bool = False
    """Ask Consul to gzip its answers. Off by default: the scaler reads its own sidecar agent
    over loopback, where gzip costs both sides CPU on every answer to save bytes that never
    leave the pod (``docs/performance.md``)."""
    max_answer_bytes: int | None = Field(default=None, ge=64 * 1024, le=MAX_ANSWER_BYTES)
    """The largest health answer read (decompressed size); a larger one is a failed query.
    Unset: derived from ``policy.max_replicas`` (``answer_limit``), filled in by ``Config``."""

    @model_validator(mode="after")
    def _check(self) -> ConsulConfig:
        check_address(self.address)
        if self.wait > 600:
            raise ValueError(f"wait: Consul caps blocking queries at 10m, got {self.wait:g}s")
        if self.wait < 1:
            raise ValueError(f"wait: must be at least 1s, got {self.wait:g}s")
        if self.retry_max < self.retry_initial:
            raise ValueError("retry_max: must be >= retry_initial")
        return self

    @property
    def read_timeout(self) -> float:
        """HTTP read timeout for one blocking query: Consul may answer up to wait/16 late."""
        return self.wait * 17 / 16 + 10.0

    def token(self) -> str | None:
        """The ACL token, never logged: ``token_file``, else ``$CONSUL_HTTP_TOKEN_FILE``, else
        ``$CONSUL_HTTP_TOKEN`` (Consul's own variables, in Consul's own order of precedence)."""
        if self.token_file is not None:
            return read_small_text(self.token_file, TOKEN_FILE_BYTES).strip() or None
        env_file = os.environ.get("CONSUL_HTTP_TOKEN_FILE")
        if env_file and Path(env_file).is_file():
            # A Secret mounted with optional: true leaves no file when the Secret does not exist.
            return read_small_text(Path(env_file), TOKEN_FILE_BYTES).strip() or None
        return os.environ.get("CONSUL_HTTP_TOKEN") or None


class KubernetesConfig(_Section):
    """Which Deployment to scale, and how to reach the API server."""

    namespace: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    deployment: str = Field(default="bolina", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    kubeconfig: Path | None = Field(default=None, strict=False)
    context: str | None = None
    request_timeout: PositiveDuration = 10.0
    resync: PositiveDuration = 30.0
    retry_initial: PositiveDuration = 0.5
    retry_max: PositiveDuration = 1.0
    """While the API server fails: retry every 0.5-1 s (at most 2 requests/s), so the first good
    answer after an outage of any length comes within about a second."""
    retry_after_max: PositiveDuration = 5.0
    """The longest a ``Retry-After`` is honoured. kube-apiserver asks for 1 s when it sheds load
    (max-in-flight, API Priority and Fairness) and a few seconds at most otherwise; a longer ask
    (an hour, ``1e9``, an HTTP-date next year) is waited this long, then one request probes. It
    must stay below ``leader_election.renew_deadline``: one answer must not cost the Lease."""

    @model_validator(mode="after")
    def _check(self) -> KubernetesConfig:
        if self.retry_max < self.retry_initial:
            raise ValueError("retry_max: must be >= retry_initial")
        if self.retry_after_max > 60:
            raise ValueError(
                "retry_after_max: at most 60s (API servers ask for seconds, not minutes), "
                f"got {self.retry_after_max:g}s"
            )
        return self


class MassChangeConfig(_Section):
    """Hold when a large share of the fleet vanishes or turns Critical in one update."""

    ratio: float = Field(default=0.5, gt=0, le=1, allow_inf_nan=False)
    min_fleet: int = Field(default=4, ge=1, le=MAX_FLEET)
    confirmation: Duration = 30.0


class DemandConfig(_Section):
    """Size the fleet from the demand servers report (``demand=`` in their check output).

    Without it (or when some server does not report a fresh demand) the policy probes with the
    Available share. ``docs/policy.md`` explains both and measures them.
    """

    enabled: bool = True
    target_load: float = Field(default=0.7, gt=0, le=1, allow_inf_nan=False)
    """Size the fleet so that the serving servers carry this share of their capacity on average."""
    anticipation: float = Field(default=0.25, ge=0, le=1, allow_inf_nan=False)
    """When the offered demand exceeds the connected load, provision this share of the difference
    ahead (0: only the clients connected now; 1: every client the current arrival rate brings)."""
    max_age: PositiveDuration = Field(default=600.0, le=86400)
    """Demand measured longer ago than this (the reporter's time stamp) is not used. Keep it above
    the reporters' --refresh (5m) plus 1.5 × the agents' check_update_interval (30s)."""


class FallbackConfig(_Section):
    """What to do when Consul's data stays unusable (untrusted, stale or absent): like KEDA's
    ``fallback``, but by default it only ever raises the count.

    Without it the policy holds at the current count for as long as the data stays unusable; a
    fleet frozen at the foot of a peak is then the outage. With ``replicas`` set, once the data
    has been unusable for ``after`` without a break, the fleet goes to ``replicas``: never below
    the current count in ``raise_only`` (KEDA's ``currentReplicasIfHigher``), exactly there in
    ``exact`` (KEDA's ``static``). The first trusted answer ends it.

    Shipped off (``replicas: null``): the right count is the size of *this* fleet's peak, which
    no default can know. The only count that fits every fleet is ``max_replicas``, and going
    there on every Consul outage longer than ``after`` (an agent upgrade, a rotated ACL token)
    turns a monitoring outage into a cost one while the servers themselves are usually fine.
    ``docs/policy.md`` ("When the data stays unusable: the fallback") says how to choose.
    """

    replicas: int | None = Field(default=None, ge=0, le=MAX_REPLICAS)
    """The count to go to; None: no fallback, hold for as long as the data is unusable. Must lie
    within ``min_replicas`` and ``max_replicas`` (``PolicyConfig`` checks it)."""
    after: Duration = 120.0
    """How long the data must have been unusable without a break before the fallback acts."""
    mode: Literal["raise_only", "exact"] = "raise_only"
    """``raise_only``: never below the current count; ``exact``: to ``replicas``, down too."""


class PolicyConfig(_Section):
    """The scaling policy's knobs; ``docs``: README "Configuration reference"."""

    min_replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    max_replicas: int = Field(default=20, ge=1, le=MAX_REPLICAS)
    target_available_ratio: float = Field(default=0.3, gt=0, lt=1, allow_inf_nan=False)
    scale_down_ratio: float = Field(default=0.6, gt=0, le=1, allow_inf_nan=False)
    scale_down_stabilization: Duration = 300.0
    scale_down_max_load: float | None = Field(default=0.6, gt=0, le=1, allow_inf_nan=False)
    """When every non-Critical server reports its load (``Service.Meta.load``), scale down only to a
    size whose predicted mean load stays at or below this. ``null``: use the Available share only."""
    startup_grace: Duration = 180.0
    max_snapshot_age: PositiveDuration = 900.0
    scale_up: ScaleUpConfig = ScaleUpConfig()
    scale_down: ScaleDownConfig = ScaleDownConfig()
    mass_change: MassChangeConfig = MassChangeConfig()
    demand: DemandConfig = DemandConfig()
    fallback: FallbackConfig = FallbackConfig()

    @model_validator(mode="after")
    def _check(self) -> PolicyConfig:
        if self.min_replicas == 0:
            # Scale to zero has no activation signal: a fleet at 0 registers nothing in Consul, so
            # there is no share, no demand and no reason to grow again. A pause takes it down on purpose.
            raise ValueError(
                "min_replicas: 0 is refused: at 0 replicas no server registers in Consul, so nothing could "
                "scale the fleet up again; use 1 or more (to take a fleet down on purpose, annotate the "
                "Deployment bolina-scaler/paused-replicas=0)"
            )
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas: must be >= min_replicas ({self.min_replicas}), got {self.max_replicas}")
        if self.scale_down_ratio <= self.target_available_ratio:
            raise ValueError(
                "scale_down_ratio: must be above target_available_ratio "
                f"({self.target_available_ratio:g}), got {self.scale_down_ratio:g}"
            )
        held = self.fallback.replicas
        if held is not None and not self.min_replicas <= held <= self.max_replicas:
            raise ValueError(
                f"fallback.replicas: must lie within min_replicas ({self.min_replicas}) and max_replicas "
                f"({self.max_replicas}), got {held}"
            )
        return self


class HttpConfig(_Section):
    """The daemon's HTTP server (health, metrics, servers API)."""

    enabled: bool = True
    host: str = "0.0.0.0"
    """All interfaces: the kubelet probes and the metrics scraper reach the pod's IP. The server
    itself bounds what a client can hold (``daemon.http_api``); NetworkPolicy narrows who."""
    port: int = Field(default=8080, ge=0, le=65535)
    readiness_max_age: PositiveDuration = 600.0
    """``/readyz`` fails when the last trusted Consul answer is older than this."""
    readiness_max_stuck: PositiveDuration = 60.0
    """``/readyz`` fails when a scale change this replica wants to make (as leader) has not been
    made for this long, or an evaluation has waited this long for the API server: the daemon is
    stuck, whatever the cause (a refusal, a conflict storm, an API server that never answers).
    It must exceed ``kubernetes.resync``; the shipped 60 s is a few rounds of the slowest retry
    (``kubernetes.request_timeout`` 10 s, ``kubernetes.retry_after_max`` 5 s)."""

    @model_validator(mode="after")
    def _check(self) -> HttpConfig:
        if not is_host(self.host):
            raise ValueError(f"host: expected an IP address or a host name, got {short_repr(self.host)}")
        return self


class LeaderElectionConfig(_Section):
    """Run two or more replicas safely: only the holder of a ``coordination.k8s.io/v1`` Lease patches.

    Timings are client-go's defaults. The Lease's ``holderIdentity`` is unique to each process, as
    one leader per Lease needs: a configured ``identity`` becomes ``<identity>_<8 hex>`` (a new
    random suffix on every start, client-go's host name + "_" + UUID practice), so replicas given
    the same config never both lead; unset, ``$POD_NAME`` (unique per pod), else the host name
    with that suffix. ``leader.candidate`` logs the full identity.
    """

    enabled: bool = True
    lease_name: str = Field(default="bolina-scaler", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    lease_duration: PositiveDuration = 15.0
    renew_deadline: PositiveDuration = 10.0
    retry_period: PositiveDuration = 2.0
    identity: str | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _check(self) -> LeaderElectionConfig:
        if self.lease_duration <= self.renew_deadline:
            raise ValueError(
                f"lease_duration: must exceed renew_deadline ({self.renew_deadline:g}s), got {self.lease_duration:g}s"
            )
        if self.renew_deadline <= self.retry_period * 1.2:
            raise ValueError(
                f"renew_deadline: must exceed retry_period × 1.2 ({self.retry_period * 1.2:g}s), "
                f"got {self.renew_deadline:g}s"
            )
        if self.lease_duration < 1:
            raise ValueError(f"lease_duration: must be at least 1s, got {self.lease_duration:g}s")
        return self


class EventsConfig(_Section):
    """Kubernetes Events on the Deployment for every scale change and every notable refusal."""

    enabled: bool = True
    min_interval: Duration = 300.0
    """The same reason and message within this interval make one Event (its count is bumped)."""


class StatusConfig(_Section):
    """The ``bolina-scaler/status`` annotation the leader writes on the Deployment (``core.scaler_status``).

    Off by default: the write needs ``patch`` on the Deployment, which RBAC cannot narrow to one
    annotation, so it is opt-in (``manifests/components/status-annotation`` grants it)."""

    enabled: bool = False
    min_interval: PositiveDuration = 15.0
    """A changed status is written at most this often: each write moves the Deployment's
    resourceVersion (one request; the evaluator adopts the new version)."""
    refresh: PositiveDuration = 300.0
    """An unchanged status is written again after this, so its ``updated`` time proves the leader alive."""

    @model_validator(mode="after")
    def _check(self) -> StatusConfig:
        if self.min_interval < 1:
            raise ValueError(f"min_interval: at least 1s (every write is a request), got {self.min_interval:g}s")
        if self.refresh < self.min_interval:
            raise ValueError(f"refresh: must be >= min_interval ({self.min_interval:g}s), got {self.refresh:g}s")
        return self


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Config(_Section):
    """The whole configuration file."""

    # Factories, not instances: defaults that read the environment must read it at load time.
    consul: ConsulConfig = Field(default_factory=ConsulConfig)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    leader_election: LeaderElectionConfig = Field(default_factory=LeaderElectionConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    status: StatusConfig = Field(default_factory=StatusConfig)
    dry_run: bool = False
    shutdown_timeout: PositiveDuration = 8.0

    @model_validator(mode="after")
    def _check(self) -> Config:
        slowest_answer = self.consul.wait * 17 / 16
        if self.policy.max_snapshot_age <= slowest_answer:
            raise ValueError(
                f"policy.max_snapshot_age: must exceed consul.wait × 17/16 ({slowest_answer:g}s), "
                f"or a quiet fleet looks stale; got {self.policy.max_snapshot_age:g}s"
            )
        if 1 / self.consul.rate_per_second >= self.policy.max_snapshot_age:
            raise ValueError(
                f"consul.rate_per_second: under churn one query every {1 / self.consul.rate_per_second:g}s would "
                f"make every answer older than policy.max_snapshot_age ({self.policy.max_snapshot_age:g}s); "
                f"got {self.consul.rate_per_second:g}"
            )
        if self.http.readiness_max_age <= slowest_answer:
            raise ValueError(
                f"http.readiness_max_age: must exceed consul.wait × 17/16 ({slowest_answer:g}s), "
                f"or a quiet fleet looks unready; got {self.http.readiness_max_age:g}s"
            )
        if self.http.readiness_max_stuck <= self.kubernetes.resync:
            raise ValueError(
                f"http.readiness_max_stuck: must exceed kubernetes.resync ({self.kubernetes.resync:g}s), "
                f"got {self.http.readiness_max_stuck:g}s"
            )
        election = self.leader_election
        if election.enabled and self.kubernetes.retry_after_max >= election.renew_deadline - election.retry_period:
            raise ValueError(
                f"kubernetes.retry_after_max: must stay below leader_election.renew_deadline − retry_period "
                f"({election.renew_deadline - election.retry_period:g}s), or one Retry-After costs the Lease; "
                f"got {self.kubernetes.retry_after_max:g}s"
            )
        if self.consul.max_answer_bytes is None:
            # The effective value, so that check-config prints it. A frozen model: set it once, here.
            derived = self.consul.model_copy(update={"max_answer_bytes": answer_limit(self.policy.max_replicas)})
            object.__setattr__(self, "consul", derived)
        return self

    def redacted(self) -> dict[str, Any]:
        """The effective config as plain JSON-able data (no secret ever lives in it: tokens are files)."""
        return self.model_dump(mode="json")
