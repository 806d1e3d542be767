# The two commands a newcomer runs (README): `make demo` and `make test`.
.PHONY: demo test lint bench

demo:
	bash scripts/setup-env.sh all
	.venv/bin/genleak demo

test:
	bash scripts/setup-env.sh dev,all
	bash scripts/run-tests.sh

lint:
	.venv/bin/ruff check src tests benchmarks

bench:
	.venv/bin/python benchmarks/attacks.py
