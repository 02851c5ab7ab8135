"""In-process fakes of the Consul and Kubernetes HTTP APIs, built on aiohttp.

They are real local HTTP servers (as kopf's KMock), so the daemon's HTTP clients are exercised
too, and they follow the real APIs' documented semantics. The component tests and the
``bolina-scaler demo`` command run the real daemon against them.
"""
