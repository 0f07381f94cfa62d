"""mmop.devcluster: an embedded control plane (API server, kubelet, router) for local dev and tests."""
