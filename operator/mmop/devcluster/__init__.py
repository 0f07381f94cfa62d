"""mmop.devcluster: an embedded control plane (API server, kubelet, router) for local development
and tests. Start with :class:`mmop.devcluster.cluster.DevCluster` or ``mmop dev``."""
