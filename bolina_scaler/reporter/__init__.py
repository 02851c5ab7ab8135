"""The server side: a Bolina server's metrics in, its availability stage in its Consul agent out.

``bolina-scaler report`` runs beside each Bolina server (a sidecar). What it writes is the data
the scaler's source reads, under the registration convention of ``source.schema``.

* ``availability``: the pure classifier (thresholds, hysteresis, dwell) → a ``Stage``;
* ``deadband``: when a change of load or demand is worth a write to Consul (pure);
* ``metrics_reading``: the server's metrics (Prometheus text or JSON) → a sample;
* ``agent``: register, update the TTL check, deregister (the local Consul agent);
* ``settings``: who the server is; ``reporter``: the loop that ties them together.
"""
