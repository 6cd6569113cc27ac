#!/usr/bin/env bash
# Make sure a Docker engine answers: install docker.io if missing and start dockerd without
# any bridge network (sandboxes run with --network none). Idempotent; used by CI and the demo.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "setup-engine: installing docker.io" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq docker.io >/dev/null
fi
log=${DOCKERD_LOG:-/var/log/agentloop-dockerd.log}
echo "setup-engine: starting dockerd (log: $log)" >&2
nohup dockerd --bridge=none --iptables=false >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then exit 0; fi
  sleep 1
done
echo "setup-engine: dockerd did not answer within 60 s; see $log" >&2
exit 1
