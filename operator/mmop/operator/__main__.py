"""``python -m mmop.operator``: run the operator (options as ``mmop run``)."""

from mmop.operator.cli import main

if __name__ == "__main__":
    import sys

    main(["run", *sys.argv[1:]])
