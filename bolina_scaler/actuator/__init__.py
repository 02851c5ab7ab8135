"""The actuator: decisions in, Kubernetes API requests out. Everything the scaler changes in the cluster.

Does I/O (the Kubernetes API through ``kubernetes_asyncio``), all of it through one call helper:

* ``connection``: credentials (kubeconfig or the pod's service account) → one ``ApiClient``;
* ``call``: ``KubeApi.call`` — typed errors, retries, metrics, each problem logged once;
* ``scale``: read and merge-patch the Deployment's scale subresource (the one thing it scales);
* ``deletion_cost``: before a scale-down, tell the ReplicaSet which pods to remove first;
* ``events``: Kubernetes Events on the Deployment (``kubectl describe deploy bolina``).
"""
