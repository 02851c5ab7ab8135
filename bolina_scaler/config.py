"""The daemon's configuration: a YAML file (mounted from a ConfigMap), validated by pydantic.

Pure apart from ``load_config``, which reads the file and the environment. Every invalid value
produces a ``ConfigError`` whose message is one line naming the key, e.g.
``policy.max_replicas: must be >= policy.min_replicas (3), got 2``. Durations accept seconds as a
number or a Go-style string (``"300ms"``, ``"30s"``, ``"5m"``, ``"1h"``).

Every number has a range, and the message says it (README, "Configuration reference"):
durations from 1 ms to 24 h (no window or timeout of the scaler needs more, and a value such as
``1e308`` ends in an overflow); replica counts and steps up to ``MAX_REPLICAS`` (Kubernetes'
documented limit of pods per cluster); ``max_percent`` up to 1000 (x11 per period: beyond, it
is no limit at all); the watch's ``rate_per_second`` from 0.01 (one query per 100 s) to 1000.
Addresses and hosts are checked (``consul.address`` a plain ``http(s)://host[:port]``,
``http.host`` an IP address or a host name), so ``check-config`` refuses what ``run`` would
fail on. Loading refuses what YAML alone lets through: a key given twice (YAML would keep the
last), a file larger than 1 MiB or not UTF-8, nesting deeper than Python can parse; each is a
one-line ``ConfigError`` (exit 2), never a traceback.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import ssl
import urllib.parse
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
    "answer_limit",
    "go_duration",
    "is_host",
    "load_config",
    "one_line",
    "parse_config",
    "read_small_text",
    "read_yaml",
]

DEFAULT_CONSUL_ADDRESS = "http://127.0.0.1:8500"

MAX_DURATION = 86_400.0
"""24 h: the longest duration any setting takes."""
MIN_DURATION = 0.001
"""1 ms: the shortest positive duration (a backoff of 1e-300 s is a busy loop)."""
MAX_REPLICAS = 150_000
"""Kubernetes' documented limit of pods per cluster ("Considerations for large clusters")."""
MAX_FLEET = 1_000_000
"""Bound of ``mass_change.min_fleet`` (a number of registered servers, not of replicas)."""
MAX_CONFIG_BYTES = 1024 * 1024
"""A config file is a few KB; a larger one (or ``/dev/zero``) is not one."""
MAX_ANSWER_BYTES = 1024**3

ANSWER_BYTES_PER_REPLICA = 16 * 1024
"""Room per ``policy.max_replicas`` in a health answer: twice as many entries as replicas (a
rolling update's surge, terminating pods not yet deregistered) of 8 KiB each. A real entry is
about 2 KB (Consul 1.14: a service, its TTL check and the node's serfHealth check)."""
MIN_ANSWER_BYTES = 1024 * 1024
"""The smallest derived ``consul.max_answer_bytes``: about 400 real entries."""


def answer_limit(max_replicas: int) -> int:
    """The largest health answer the source reads when ``consul.max_answer_bytes`` is not set."""
    return min(MAX_ANSWER_BYTES, max(MIN_ANSWER_BYTES, max_replicas * ANSWER_BYTES_PER_REPLICA))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.ASCII)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ConfigError(ValueError):
    """A configuration problem; ``str()`` is one line that names the offending key."""


TOKEN_FILE_BYTES = 4096
"""A Consul token is a 36-character UUID: a token file beyond this is not one."""


def read_small_text(path: Path, limit: int) -> str:
    """A UTF-8 text file of at most ``limit`` bytes (never more is read: it may be ``/dev/zero``).

    Raises ``OSError`` when it cannot be read, ``ValueError`` when it is larger or not UTF-8.
    """
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})") from None


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


Duration = Annotated[float, BeforeValidator(_parse_duration), Field(ge=0, le=MAX_DURATION, allow_inf_nan=False)]
PositiveDuration = Annotated[
    float, BeforeValidator(_parse_duration), Field(ge=MIN_DURATION, le=MAX_DURATION, allow_inf_nan=False)
]
Replicas = Annotated[int, Field(ge=0, le=MAX_REPLICAS)]

# RFC 1123 host names: labels of letters, digits and hyphens, not starting or ending with one.
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$", re.ASCII)


def is_host(text: str) -> bool:
    """An IP address (v4 or v6) or a DNS host name (RFC 1123, at most 253 characters)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return True
    name = text.removesuffix(".")
    return 0 < len(name) <= 253 and all(_HOST_LABEL.match(label) for label in name.split("."))


def _check_address(address: str) -> str:
    """``http(s)://host[:port]`` with nothing else (py-consul would drop a path without a word)."""
    wanted = f"expected http://host:port or https://host:port, got {_short(address)}"
    if any(c.isspace() or not c.isprintable() for c in address):
        raise ValueError(f"address: {wanted} (it holds spaces or control characters)")
    url = urllib.parse.urlsplit(address)
    if url.scheme not in {"http", "https"} or not url.netloc:
        raise ValueError(f"address: {wanted}")
    if url.username is not None or url.password is not None:
        raise ValueError(f"address: {wanted} (no user or password: use consul.token_file)")
    if url.path not in {"", "/"} or url.query or url.fragment:
        raise ValueError(f"address: {wanted} (no path, query or fragment)")
    host = url.hostname or ""
    if not is_host(host):
        raise ValueError(f"address: {wanted} ({_short(host)} is not an IP address or a host name)")
    try:
        port = url.port
    except ValueError:
        raise ValueError(f"address: {wanted} (the port is not a number from 1 to 65535)") from None
    if port == 0:
        raise ValueError(f"address: {wanted} (port 0)")
    return address


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut when long (and never failing: an int of 5,000 digits has no repr)."""
    try:
        text = repr(value)
    except ValueError:
        return f"<int of {value.bit_length()} bits>" if isinstance(value, int) else "<value>"
    return text if len(text) <= limit else f"{text[:limit]}…"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ConsulConfig(_Section):
    """Where and how to watch the Bolina service in Consul."""

    address: str = Field(default_factory=lambda: os.environ.get("CONSUL_HTTP_ADDR") or DEFAULT_CONSUL_ADDRESS)
    service: str = Field(default="bolina", min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.-]+$")
    datacenter: str | None = Field(default=None, min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.-]+$")
    token_file: Path | None = None
    ca_file: Path | None = None
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
        _check_address(self.address)
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
    kubeconfig: Path | None = None
    context: str | None = None
    request_timeout: PositiveDuration = 10.0
    resync: PositiveDuration = 30.0
    retry_initial: PositiveDuration = 0.5
    retry_max: PositiveDuration = 1.0
    """While the API server fails: retry every 0.5-1 s (at most 2 requests/s), so the first good
    answer after an outage of any length comes within about a second."""


class StepConfig(_Section):
    """How much one direction may change within one period (like an HPA scaling policy).

    The allowed change is ``max(max_step, ceil(current * max_percent / 100))`` replicas per
    ``period`` seconds, counted over all changes made within the last ``period``.
    """

    max_step: int = Field(ge=1, le=MAX_REPLICAS)
    max_percent: float = Field(ge=0, le=1000, allow_inf_nan=False)
    period: PositiveDuration

    def allowed(self, current: int) -> int:
        return max(self.max_step, math.ceil(current * self.max_percent / 100))


class ScaleUpConfig(StepConfig):
    """Scale-up rate limit; defaults are HPA's: max(4 pods, 100 %) per 15 s."""

    max_step: int = Field(default=4, ge=1, le=MAX_REPLICAS)
    max_percent: float = Field(default=100.0, ge=0, le=1000, allow_inf_nan=False)
    period: PositiveDuration = 15.0


class DeletionCostConfig(_Section):
    """Before a scale-down, steer which pods Kubernetes removes (``controller.kubernetes.io/pod-deletion-cost``).

    Critical servers go first, then Warning, then the least-loaded Available ones; the load is
    ``Service.Meta.load`` of the registration (see the README's registration convention).
    """

    enabled: bool = True


class ScaleDownConfig(StepConfig):
    """Scale-down rate limit: slow on purpose (one server or 10 % per minute), capacity is cheap."""

    max_step: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    max_percent: float = Field(default=10.0, ge=0, le=1000, allow_inf_nan=False)
    period: PositiveDuration = 60.0
    deletion_cost: DeletionCostConfig = Field(default_factory=DeletionCostConfig)


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
    """All interfaces: the kubelet probes and the metrics scraper reach the pod's IP. The server
    itself bounds what a client can hold (``daemon.http_api``); NetworkPolicy narrows who."""
    port: int = Field(default=8080, ge=0, le=65535)
    readiness_max_age: PositiveDuration = 600.0
    """``/readyz`` fails when the last trusted Consul answer is older than this."""

    @model_validator(mode="after")
    def _check(self) -> HttpConfig:
        if not is_host(self.host):
            raise ValueError(f"host: expected an IP address or a host name, got {_short(self.host)}")
        return self


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
        if self.consul.max_answer_bytes is None:
            # The effective value, so that check-config prints it. A frozen model: set it once, here.
            derived = self.consul.model_copy(update={"max_answer_bytes": answer_limit(self.policy.max_replicas)})
            object.__setattr__(self, "consul", derived)
        return self

    def redacted(self) -> dict[str, Any]:
        """The effective config as plain JSON-able data (no secret ever lives in it: tokens are files)."""
        return self.model_dump(mode="json")


def _location(error: Mapping[str, Any]) -> str:
    parts = [part for part in error["loc"] if not str(part).startswith("function-")]
    return ".".join(str(part) if _plain_key(part) else _short(part, 40) for part in parts)


def _plain_key(part: Any) -> bool:
    return isinstance(part, str) and 0 < len(part) <= 64 and part.isprintable() and " " not in part


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
            message = f"{message}, got {_short(given)}"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return " ".join(f"{loc or '<root>'}: {message}{suffix}".split())


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
    except RecursionError:
        raise ConfigError("<root>: nested too deeply") from None


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (YAML 1.2
    says keys are unique; PyYAML keeps the last one, so a second ``policy:`` section silently
    replaced the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # The keys written in this mapping, before merge keys (<<) bring theirs: those may be
        # overridden, that is what they are for.
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue  # unhashable: the base class names that error
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found the key {_short(key, 40)} twice (first on line {first.start_mark.line + 1})",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path | str, *, what: str = "config file") -> Any:
    """One YAML document from a file, or ``ConfigError`` (one line naming the file and the problem).

    At most ``MAX_CONFIG_BYTES`` are read; the text must be UTF-8; duplicate keys, nesting deeper
    than the parser's recursion and integers beyond Python's conversion limit are errors.
    """
    path = Path(path)
    try:
        text = read_small_text(path, MAX_CONFIG_BYTES)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    except ValueError as exc:  # too large, not UTF-8, a NUL in the path
        raise ConfigError(f"{path}: cannot read {what}: {exc}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: plain data only
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(" ".join(f"{path}:{where}: {problem}".split())) from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a {what}") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise ConfigError(" ".join(f"{path}: invalid value: {exc}".split())[:300]) from None


def _check_file(key: str, path: Path | None, *, limit: int = MAX_CONFIG_BYTES) -> str | None:
    """The text of a file the config names, or ``ConfigError`` saying why it cannot be used."""
    if path is None:
        return None
    if not path.is_file():
        raise ConfigError(f"{key}: no such file {_short(str(path))}")
    try:
        return read_small_text(path, limit)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {_short(str(path))}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{key}: cannot use {_short(str(path))}: {exc}") from None


def load_config(path: Path | str) -> Config:
    """Read and validate a YAML config file; raise ``ConfigError`` naming the problem.

    The files it names are read too, as the daemon will read them: the token file must hold a
    token an HTTP header can carry, the CA file must load as PEM certificates.
    """
    config = parse_config(read_yaml(path))
    consul = config.consul
    token = _check_file("consul.token_file", consul.token_file, limit=TOKEN_FILE_BYTES)
    if token is not None and (not token.strip().isascii() or not token.strip().isprintable()):
        raise ConfigError("consul.token_file: the token holds characters an HTTP header cannot carry")
    if _check_file("consul.ca_file", consul.ca_file) is not None:
        try:
            ssl.create_default_context().load_verify_locations(cafile=str(consul.ca_file))
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"consul.ca_file: not a PEM CA bundle: {' '.join(str(exc).split())[:200]}") from None
    _check_file("kubernetes.kubeconfig", config.kubernetes.kubeconfig)
    return config
