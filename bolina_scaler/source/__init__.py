"""The source: Consul's health of the Bolina service in, one immutable ``FleetSnapshot`` per answer out.

Does I/O (HTTP to the local Consul agent). Modules, in the order an answer flows through them:

* ``transport``: one GET of ``/v1/health/service/<service>`` through py-consul (blocking when it
  has an index), read into one buffer;
* ``answer``: what the status code and headers mean (usable? trusted?);
* ``schema`` → ``parse`` (with ``memo``): the body's entries become ``Server`` values;
* ``watch``: the blocking-query loop (pacing, backoff, index rules) that yields snapshots;
* ``wire``: how values are written on Consul's API (Go durations), for the transport and the
  reporter.
"""

from bolina_scaler.source.parse import parse_health
from bolina_scaler.source.watch import ConsulWatch

__all__ = ["ConsulWatch", "parse_health"]
