"""Test doubles: in-process fakes of the Consul and Kubernetes HTTP APIs. Never imported by the daemon.

Does I/O (local HTTP servers on 127.0.0.1; ``scale`` excepted). They are real HTTP servers (as kopf's KMock), so the
daemon's HTTP clients are exercised too, and they follow the real APIs' documented semantics
(blocking-query index rules, status codes, resourceVersion conflicts, RBAC denials). The
component tests, the benchmarks and ``bolina-scaler demo`` run the real daemon against them;
they ship in the package so that the demo works after a plain ``pip install``.

* ``consul.FakeConsul``: health and agent endpoints of a Consul agent and its servers;
* ``kubernetes.FakeKubernetes``: Deployments with their scale subresource and ReplicaSet-like
  pods, Leases, Events, RBAC denials and injected faults;
* ``server.LocalServer``: the HTTP side they share;
* ``scale.FakeScaleTarget``: the scale subresource in memory, for the evaluator's unit tests (no HTTP).
"""
