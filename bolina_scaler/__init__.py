"""Bolina Scaler: keep enough Bolina servers Available by scaling their Kubernetes Deployment.

Data flows one way: Consul blocking watch (``watching``) → immutable ``fleet`` snapshot → pure
``policy`` → Kubernetes scale subresource (``patching``), wired by ``daemon``.
"""

__version__ = "0.1.0"
