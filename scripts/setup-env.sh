#!/usr/bin/env bash
# Create (or reuse) .venv and install genleak with the extras named in $1 (default: dev,all: the test
# tools and every optional feature, so each test runs; mlflow adds ~50 packages in ~40 s and keeps torch).
# torch is installed first and pinned here, not in pyproject.toml (which takes any torch>=2.2, so a
# user's CUDA build stays): an unpinned torch pulls several GB of CUDA packages, and torch==2.13.0
# resolves to a local CPU wheel on the project's machines.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[${1:-dev,all}]"
