#!/usr/bin/env bash
# Build the sandbox image without a registry: debootstrap a minimal Debian bookworm with python3
# and numpy, then `docker import` it. Usage: build-offline.sh [IMAGE_TAG]
set -euo pipefail
tag=${1:-agentloop-sandbox:latest}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if ! command -v debootstrap >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq debootstrap >/dev/null
fi
root=$(mktemp -d /tmp/agentloop-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-numpy bookworm "$root" "$mirror" >&2
# Trim what a sandbox never needs; keeps the image small and the import fast.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
mkdir -p "$root/scratch" && chmod 1777 "$root/scratch"
tar -C "$root" -c . | docker import \
  --change 'USER 65534:65534' --change 'WORKDIR /scratch' \
  --change 'ENV PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8 PATH=/usr/local/bin:/usr/bin:/bin' \
  --change 'LABEL agentloop.image=sandbox' \
  - "$tag" >&2
echo "$tag"
