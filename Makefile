# One command each for a fresh machine: `make dev` (set up + run the local control plane with a
# sample model) and `make test` (set up + run every test).
.PHONY: setup dev test lint crd bench

setup:
	scripts/setup

dev: setup
	.venv/bin/mmop dev --demo

test: setup
	PATH="$(CURDIR)/.tools/bin:$$PATH" .venv/bin/python -m pytest

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

crd: setup
	.venv/bin/mmop crd

bench: setup
	.venv/bin/python -m bench.runtime && .venv/bin/python -m bench.operator
