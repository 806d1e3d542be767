#!/usr/bin/env bash
# Run the test suite; "no tests collected" (pytest exit code 5) is a failure, not a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
# The layers of ARCHITECTURE.md and no import cycles ([tool.importlinter] in pyproject.toml).
.venv/bin/lint-imports --no-cache || { echo "error: lint-imports found an upward import or a cycle" >&2; exit 1; }
# Two workers (one per core; every test runs torch on one thread), files kept together so a file's
# fixtures are built once per worker. Extra arguments go to pytest.
.venv/bin/python -m pytest -q -n 2 --dist loadfile --durations=25 "$@"
code=$?
if [ "$code" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$code"
