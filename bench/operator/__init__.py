"""The operator benchmark: reconcile latency, no-op resyncs, scale and rollout timing.

``python -m bench.operator [--quick]`` runs the real operator (a ``python -m mmop.operator``
process) against the embedded API server of ``mmop.devcluster`` and writes
``bench/results/operator-*.json``.
"""
