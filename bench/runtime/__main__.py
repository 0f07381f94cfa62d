"""``python -m bench.runtime``: see ``bench.runtime.cli``."""

from bench.runtime.cli import main

raise SystemExit(main())
