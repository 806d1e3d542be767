#!/usr/bin/env bash
# Create (or reuse) .venv and install genleak with its test tools.
# torch is installed first and pinned: an unpinned torch pulls several GB of CUDA packages,
# and torch==2.13.0 resolves to a local CPU wheel on the project's machines.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev]"
