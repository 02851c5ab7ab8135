"""Coordination: which replica may act. Leader election on a ``coordination.k8s.io/v1`` Lease.

``lease`` holds the pure rules (what a Lease read means, what to write back); ``election`` runs
the loop against the API server (I/O, through ``actuator.call``). What flows out is one bit the
daemon asks before every patch: ``Leadership.is_leader()``.
"""
