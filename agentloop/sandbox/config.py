"""Settings of the Docker sandbox pool (TOML table `[sandbox]`, CLI `--pool-size` etc.)."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_IMAGE = "agentloop-sandbox:latest"


@dataclass(frozen=True)
class SandboxConfig:
    image: str = DEFAULT_IMAGE
    """Image with python3 and numpy; build it with `agentloop sandbox build`."""
    pool_size: int = max(2, os.cpu_count() or 2)
    """Warm containers kept running; each runs one candidate at a time."""
    memory_mb: int = 1024
    """Memory limit per container (candidate + executor); exceeding it is an `error` (OOM)."""
    pids_limit: int = 256
    """Process limit per container, so a fork bomb stays inside."""
    cpus: float = 1.0
    """CPU quota per container, in cores."""
    scratch_mb: int = 64
    """Size of the tmpfs scratch dir (and /tmp) where a job runs; wiped after each job."""
    output_limit_bytes: int = 16_384
    """Captured stdout/stderr per job; over this, the head and tail are kept."""
    runtime: str | None = None
    """Docker runtime, e.g. `runsc` for gVisor; None uses the engine's default."""
    workspace_mb: int = 64
    """Agent episodes: size of each workspace's tmpfs workdir /work, and of its /tmp and /dev/shm
    (all three count against `memory_mb`; keep 3 x workspace_mb well under it)."""
    workspace_warm: int = 2
    """Agent episodes: idle workspace containers kept started ahead of the episodes that take them."""
    workspace_file_limit_bytes: int = 262_144
    """Agent episodes: largest file a step's `read` returns (a bigger one comes back as None)."""
