"""The daemon: everything in, one scale out. Wires the source, the policy and the actuator.

Does I/O through its parts. What flows in: ``FleetSnapshot`` values from ``source.ConsulWatch``
(through the ``mailbox``), the Deployment's ``Scale`` and the Lease; what flows out: scale
patches, pod deletion costs and Kubernetes Events (``actuator``), one log line per evaluation,
and the HTTP API (``http_api``: health, metrics, servers, "explain") over the ``state`` view.

* ``daemon``: the tasks (watch, evaluate, leader election, Events, HTTP) and their shutdown;
* ``evaluator``: one evaluation (``core.evaluation.step`` against the scale) and its ``Outcome``;
* ``mailbox``: the newest snapshot, from the watch to the evaluator;
* ``status_writer``: keeps the leader's ``bolina-scaler/status`` annotation current, rate-limited;
* ``state``: what the daemon knows right now, a view assembled from the parts that own each fact;
* ``http_api``: the HTTP server; ``servers_view``: its servers API answers, encoded once per fleet;
  ``connections``: the bound on its clients' connections (how many, how long idle).
"""

from bolina_scaler.daemon.daemon import Daemon, open_daemon
from bolina_scaler.daemon.evaluator import Evaluation, Evaluator, ScaleEndpoint
from bolina_scaler.daemon.state import DaemonState

__all__ = ["Daemon", "DaemonState", "Evaluation", "Evaluator", "ScaleEndpoint", "open_daemon"]
