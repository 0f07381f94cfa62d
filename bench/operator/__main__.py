"""``python -m bench.operator``: see ``bench.operator.cli``."""

from bench.operator.cli import main

raise SystemExit(main())
