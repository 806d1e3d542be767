# The two commands a newcomer runs (README): `make demo` and `make test`.
.PHONY: demo test lint bench

demo:
	bash scripts/setup-env.sh
	.venv/bin/genleak demo

test:
	bash scripts/setup-env.sh dev,mlflow
	bash scripts/run-tests.sh

lint:
	.venv/bin/ruff check src tests benchmarks

bench:
	.venv/bin/python benchmarks/attacks.py
