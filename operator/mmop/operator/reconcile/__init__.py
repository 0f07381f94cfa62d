"""Reconcile: observe the cluster, decide, write only the difference (through kube.py)."""
