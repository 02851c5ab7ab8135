"""The demo: a scripted world of fake servers in, the real daemon's story out (``bolina-scaler demo``).

Does I/O (local HTTP servers, stdout). Demo infrastructure, like ``bolina_scaler.testing``: the
daemon never imports it.

* ``scenario``: the config, the demand over time and the servers' classifier;
* ``world``: keeps the fake Consul in step with the fake Kubernetes' pods and the script;
* ``run``: runs the real daemon on the fakes while the world plays; ``output``: what is printed.
"""

from bolina_scaler.demo.run import run_demo

__all__ = ["run_demo"]
