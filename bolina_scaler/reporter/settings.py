"""Who a Bolina server is, where its metrics are, and how to reach its Consul agent.

Pure (validation only): the ``report`` command builds ``ReporterSettings`` from its flags and
environment; a bad value is a ``ConfigError`` naming the flag's setting.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bolina_scaler.config import DEFAULT_CONSUL_ADDRESS, Duration, PositiveDuration
from bolina_scaler.reporter.deadband import Deadband
from bolina_scaler.reporter.metrics_reading import DEFAULT_MAX_BYTES

__all__ = ["ReporterSettings"]


class ReporterSettings(BaseModel):
    """Who the server is, where its metrics are, and how to talk to the Consul agent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    consul_address: str = Field(default_factory=lambda: os.environ.get("CONSUL_HTTP_ADDR") or DEFAULT_CONSUL_ADDRESS)
    token: str | None = Field(default_factory=lambda: os.environ.get("CONSUL_HTTP_TOKEN") or None, repr=False)
    service: str = Field(default="bolina", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    instance_id: str = Field(min_length=1)
    server_id: str = Field(min_length=1)
    address: str = Field(min_length=1)
    tcp_port: int = Field(default=9001, ge=1, le=65535)
    udp_port: int | None = Field(default=9002, ge=1, le=65535)
    pod: str = Field(min_length=1)
    metrics_url: str
    metrics_format: Literal["auto", "prometheus", "json"] = "auto"
    interval: PositiveDuration = 5.0
    """How often the metrics are read and the stage decided."""
    ttl: PositiveDuration = 30.0
    """The check's TTL: Consul turns it Critical if no update arrives within it."""
    heartbeat: PositiveDuration | None = None
    """Longest time without an update (default ttl/2, so one lost update never expires the check)."""
    deregister_critical_after: Duration = 60.0
    """Consul removes the service after its check stayed Critical this long (Consul's minimum is 1m)."""
    load_metric: str | None = None
    """Metric whose value (0..1) is the load: ``load=`` in the check output (and ``Meta.load`` at registration)."""
    demand_metric: str | None = None
    """Metric whose value is the offered load (share of capacity, may exceed 1): ``demand=`` in the output."""
    deadband_load: float = Field(default=0.05, ge=0, le=1, allow_inf_nan=False)
    """Write when the load moved at least this much (absolute) since the last write."""
    deadband_demand: float = Field(default=0.25, ge=0, le=10, allow_inf_nan=False)
    """Write when the demand moved at least this share of its last written value."""
    refresh: PositiveDuration = 300.0
    """Write at least this often, re-stamping the demand (keep it well below the scaler's policy.demand.max_age)."""
    max_metrics_bytes: int = Field(default=DEFAULT_MAX_BYTES, ge=1024, le=1024**3)
    """The largest metrics answer read; a larger one is unreadable (Critical)."""
    request_timeout: PositiveDuration = 5.0

    @model_validator(mode="after")
    def _check(self) -> ReporterSettings:
        if not re.match(r"^https?://[^/\s]+", self.consul_address):
            raise ValueError(f"consul_address: expected http(s)://host:port, got {self.consul_address!r}")
        if not re.match(r"^https?://[^/\s]+", self.metrics_url):
            raise ValueError(f"metrics_url: expected http(s)://host:port/path, got {self.metrics_url!r}")
        if self.deregister_critical_after and self.deregister_critical_after < 60:
            raise ValueError("deregister_critical_after: Consul's minimum is 1m (shorter values are raised to it)")
        if self.heartbeat_every > self.ttl:
            raise ValueError(f"heartbeat: must be shorter than ttl ({self.ttl:g}s)")
        return self

    @property
    def deadband(self) -> Deadband:
        return Deadband(load=self.deadband_load, demand=self.deadband_demand, refresh=self.refresh)

    @property
    def heartbeat_every(self) -> float:
        return self.heartbeat if self.heartbeat is not None else self.ttl / 2

    @property
    def check_id(self) -> str:
        return f"service:{self.instance_id}"
