"""Run untrusted Python programs in Docker sandboxes and say how they ended."""

from agentloop.sandbox.config import DEFAULT_IMAGE, SandboxConfig
from agentloop.sandbox.docker_pool import DockerPool, PoolStats
from agentloop.sandbox.engine import (
    build_image,
    build_image_async,
    connect,
    ensure_image,
    exec_file,
    gc,
    gc_async,
    reap_dead_runs,
)
from agentloop.sandbox.types import ExecResult, Sandbox, Tests, Verdict

__all__ = [
    "DEFAULT_IMAGE",
    "DockerPool",
    "ExecResult",
    "PoolStats",
    "Sandbox",
    "SandboxConfig",
    "Tests",
    "Verdict",
    "build_image",
    "build_image_async",
    "connect",
    "ensure_image",
    "exec_file",
    "gc",
    "gc_async",
    "reap_dead_runs",
]
