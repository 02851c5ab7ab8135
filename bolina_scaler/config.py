"""The daemon's configuration: a YAML file (mounted from a ConfigMap), validated by pydantic.

Pure apart from ``load_config``, which reads the file and the environment. Every invalid value
produces a ``ConfigError`` whose message is one line naming the key, e.g.
``policy.max_replicas: must be >= policy.min_replicas (3), got 2``. Durations accept seconds as a
number or a Go-style string (``"300ms"``, ``"30s"``, ``"5m"``, ``"1h"``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

__all__ = [
    "Config",
    "ConfigError",
    "ConsulConfig",
    "DeletionCostConfig",
    "DemandConfig",
    "EventsConfig",
    "HttpConfig",
    "KubernetesConfig",
    "LeaderElectionConfig",
    "LoggingConfig",
    "MassChangeConfig",
    "PolicyConfig",
    "ScaleDownConfig",
    "ScaleUpConfig",
    "StepConfig",
    "go_duration",
    "load_config",
    "one_line",
    "parse_config",
]

DEFAULT_CONSUL_ADDRESS = "http://127.0.0.1:8500"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ConfigError(ValueError):
    """A configuration problem; ``str()`` is one line that names the offending key."""


def go_duration(seconds: float) -> str:
    """A duration as Consul wants it (a Go duration: units required, ``wait=300`` is a 400)."""
    return f"{seconds:g}s" if seconds == int(seconds) else f"{round(seconds * 1000)}ms"


def _parse_duration(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30, '30s' or '5m', got a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"expected a duration such as 30, '30s' or '5m', got {value!r}")
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(_parse_duration), Field(ge=0, allow_inf_nan=False)]
PositiveDuration = Annotated[float, BeforeValidator(_parse_duration), Field(gt=0, allow_inf_nan=False)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ConsulConfig(_Section):
    """Where and how to watch the Bolina service in Consul."""

    address: str = Field(default_factory=lambda: os.environ.get("CONSUL_HTTP_ADDR") or DEFAULT_CONSUL_ADDRESS)
    service: str = Field(default="bolina", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    datacenter: str | None = None
    token_file: Path | None = None
    ca_file: Path | None = None
    tls_verify: bool = True
    wait: PositiveDuration = 300.0
    consistency: Literal["default", "stale", "consistent"] = "default"
    max_last_contact: PositiveDuration = 10.0
    require_known_leader: bool = True
    filter: str | None = None
    retry_initial: PositiveDuration = 0.5
    retry_max: PositiveDuration = 30.0
    rate_per_second: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    rate_burst: int = Field(default=2, ge=1)
    compress: bool = False
    """Ask Consul to gzip its answers. Off by default: the scaler reads its own sidecar agent
    over loopback, where gzip costs both sides CPU on every answer to save bytes that never
    leave the pod (``docs/performance.md``)."""

    @model_validator(mode="after")
    def _check(self) -> ConsulConfig:
        if not re.match(r"^https?://[^/\s]+", self.address):
            raise ValueError(f"address: expected http://host:port or https://host:port, got {self.address!r}")
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
            return self.token_file.read_text(encoding="utf-8").strip() or None
        env_file = os.environ.get("CONSUL_HTTP_TOKEN_FILE")
        if env_file and Path(env_file).is_file():
            # A Secret mounted with optional: true leaves no file when the Secret does not exist.
            return Path(env_file).read_text(encoding="utf-8").strip() or None
        return os.environ.get("CONSUL_HTTP_TOKEN") or None


class KubernetesConfig(_Section):
    """Which Deployment to scale, and how to reach the API server."""

    namespace: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    deployment: str = Field(default="bolina", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    kubeconfig: Path | None = None
    context: str | None = None
    request_timeout: PositiveDuration = 10.0
    resync: PositiveDuration = 30.0
    retry_initial: PositiveDuration = 0.5
    retry_max: PositiveDuration = 30.0


class StepConfig(_Section):
    """How much one direction may change within one period (like an HPA scaling policy).

    The allowed change is ``max(max_step, ceil(current * max_percent / 100))`` replicas per
    ``period`` seconds, counted over all changes made within the last ``period``.
    """

    max_step: int = Field(ge=1)
    max_percent: float = Field(ge=0, allow_inf_nan=False)
    period: PositiveDuration

    def allowed(self, current: int) -> int:
        return max(self.max_step, math.ceil(current * self.max_percent / 100))


class ScaleUpConfig(StepConfig):
    """Scale-up rate limit; defaults are HPA's: max(4 pods, 100 %) per 15 s."""

    max_step: int = Field(default=4, ge=1)
    max_percent: float = Field(default=100.0, ge=0, allow_inf_nan=False)
    period: PositiveDuration = 15.0


class DeletionCostConfig(_Section):
    """Before a scale-down, steer which pods Kubernetes removes (``controller.kubernetes.io/pod-deletion-cost``).

    Critical servers go first, then Warning, then the least-loaded Available ones; the load is
    ``Service.Meta.load`` of the registration (see the README's registration convention).
    """

    enabled: bool = True


class ScaleDownConfig(StepConfig):
    """Scale-down rate limit: slow on purpose (one server or 10 % per minute), capacity is cheap."""

    max_step: int = Field(default=1, ge=1)
    max_percent: float = Field(default=10.0, ge=0, allow_inf_nan=False)
    period: PositiveDuration = 60.0
    deletion_cost: DeletionCostConfig = Field(default_factory=DeletionCostConfig)


class MassChangeConfig(_Section):
    """Hold when a large share of the fleet vanishes or turns Critical in one update."""

    ratio: float = Field(default=0.5, gt=0, le=1, allow_inf_nan=False)
    min_fleet: int = Field(default=4, ge=1)
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


class PolicyConfig(_Section):
    """The scaling policy's knobs; ``docs``: README "Configuration reference"."""

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=20, ge=1)
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

    @model_validator(mode="after")
    def _check(self) -> PolicyConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas: must be >= min_replicas ({self.min_replicas}), got {self.max_replicas}")
        if self.scale_down_ratio <= self.target_available_ratio:
            raise ValueError(
                "scale_down_ratio: must be above target_available_ratio "
                f"({self.target_available_ratio:g}), got {self.scale_down_ratio:g}"
            )
        return self


class HttpConfig(_Section):
    """The daemon's HTTP server (health, metrics, servers API)."""

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    readiness_max_age: PositiveDuration = 600.0
    """``/readyz`` fails when the last trusted Consul answer is older than this."""


class LeaderElectionConfig(_Section):
    """Run two or more replicas safely: only the holder of a ``coordination.k8s.io/v1`` Lease patches.

    Timings are client-go's defaults. ``identity`` unset: ``$POD_NAME``, else the host name with a
    random suffix (two processes on one host must never share an identity).
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
        if self.http.readiness_max_age <= slowest_answer:
            raise ValueError(
                f"http.readiness_max_age: must exceed consul.wait × 17/16 ({slowest_answer:g}s), "
                f"or a quiet fleet looks unready; got {self.http.readiness_max_age:g}s"
            )
        return self

    def redacted(self) -> dict[str, Any]:
        """The effective config as plain JSON-able data (no secret ever lives in it: tokens are files)."""
        return self.model_dump(mode="json")


def _location(error: Mapping[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))


def one_line(exc: ValidationError) -> str:
    """pydantic's errors as one line naming the first offending key (``policy.max_replicas: ...``)."""
    first = exc.errors()[0]
    loc = _location(first)
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key (typo?)"
    elif first["type"] in {"value_error", "assertion_error"} and ": " in message and loc:
        # Section validators prefix the field themselves: "max_replicas: must be ...".
        field_name, _, rest = message.partition(": ")
        loc, message = f"{loc}.{field_name}", rest
    elif first["type"] in {"value_error", "assertion_error"} and ": " in message:
        loc, _, message = message.partition(": ")
    else:
        given = first.get("input")
        if not isinstance(given, dict | list) and given is not None and "got " not in message:
            message = f"{message}, got {given!r}"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{loc or '<root>'}: {message}{suffix}"


def parse_config(data: Any) -> Config:
    """Validate already-parsed YAML; raise ``ConfigError`` with a one-line message."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"<root>: expected a mapping of sections, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(one_line(exc)) from None


def load_config(path: Path | str) -> Config:
    """Read and validate a YAML config file; raise ``ConfigError`` naming the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where}: {problem}") from None
    config = parse_config(data)
    for key, file in (("consul.token_file", config.consul.token_file), ("consul.ca_file", config.consul.ca_file)):
        if file is not None and not file.is_file():
            raise ConfigError(f"{key}: no such file {str(file)!r}")
    if config.kubernetes.kubeconfig is not None and not config.kubernetes.kubeconfig.is_file():
        raise ConfigError(f"kubernetes.kubeconfig: no such file {str(config.kubernetes.kubeconfig)!r}")
    return config
