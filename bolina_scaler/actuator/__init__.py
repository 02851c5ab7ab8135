"""The actuator: decisions in, Kubernetes API requests out. Everything the scaler changes in the cluster.

Does I/O (the Kubernetes API through ``kubernetes_asyncio``), all of it through one call helper:

* ``connection``: credentials (kubeconfig or the pod's service account) → one ``ApiClient``;
* ``call``: ``KubeApi.call`` — typed errors, retries, metrics, each problem logged once — and
  ``KubeApi.resource``, the handle through which a verb module states a request in one line;
* ``errors``: the exception tree and the one line each failure says (pure);
* ``schema``: the shape of every Kubernetes answer read, and what is wrong with one (pure);
* ``scale``: read and merge-patch the Deployment's scale subresource (the one thing it scales);
* ``deletion_cost``: before a scale-down, tell the ReplicaSet which pods to remove first;
* ``events``: Kubernetes Events on the Deployment (``kubectl describe deploy bolina``);
* ``deployment``: the Deployment itself, watched for its pause annotations;
* ``status_annotation``: writes the ``bolina-scaler/status`` annotation on the Deployment;
* ``lazy_client``: ``kubernetes_asyncio`` without its generated API classes and models, which
  the daemon never uses (installed here, before any module of the package imports the library).
"""

from bolina_scaler.actuator import lazy_client

lazy_client.install()
