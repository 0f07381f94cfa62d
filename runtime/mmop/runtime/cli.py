"""``mmop-runtime``: placeholder until the runtime lands (issue: the model runtime)."""

import sys


def main() -> None:
    sys.exit("mmop-runtime is not implemented yet")
