"""Bolina Scaler: keep enough Bolina servers Available by scaling their Kubernetes Deployment.

Data flows one way, and the subpackages are named after the path it takes::

    source ──► core ──► actuator        (coordination says who may act; daemon wires them)

* ``source``: Consul's health of the Bolina service (blocking queries) → ``FleetSnapshot``;
* ``core``: pure values and the policy: snapshot, replicas, now → ``Decision``;
* ``actuator``: the Kubernetes side: scale patches, pod deletion costs, Events;
* ``coordination``: leader election on a Lease;
* ``daemon``: the tasks that run them, the evaluator, the HTTP API;
* beside them: ``config``, ``logs``, ``metrics`` and ``cli`` (every command);
* the server side: ``reporter`` (the ``report`` sidecar each Bolina server runs);
* proof and play: ``simulator`` (virtual-time comparison with the HPA), ``demo``, and
  ``testing`` (the in-process Consul and Kubernetes fakes; never imported by the daemon).
"""

__version__ = "0.1.0"
