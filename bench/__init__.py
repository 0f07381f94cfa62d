"""Benchmarks of mmop (never tests): ``python -m bench.runtime`` and ``python -m bench.operator``.

Results are JSON files under ``bench/results/`` (ignored by git); ``python -m bench.report``
renders the latest ones into ``docs/benchmarks.md`` and ``docs/benchmarks/*.png``.
"""

import sys


def log(message: str) -> None:
    """A progress line on stderr (stdout stays for results), flushed at once."""
    print(message, file=sys.stderr, flush=True)
