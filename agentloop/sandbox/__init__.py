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
from agentloop.sandbox.types import ExecResult, Sandbox, Tests, Verdict, Workspace
from agentloop.sandbox.workspace import StepResult, WorkspacePool

__all__ = [
    "DEFAULT_IMAGE",
    "DockerPool",
    "ExecResult",
    "PoolStats",
    "Sandbox",
    "SandboxConfig",
    "StepResult",
    "Tests",
    "Verdict",
    "Workspace",
    "WorkspacePool",
    "build_image",
    "build_image_async",
    "connect",
    "ensure_image",
    "exec_file",
    "gc",
    "gc_async",
    "reap_dead_runs",
]
