"""agentloop: test-time compute on verifiable tasks (parallel samples, sequential revisions, agent episodes).

The curated public API; everything else is internal and may change. Locked by tests/test_api.py.

Names are imported on first use (PEP 562): ``import agentloop.math`` (and the math checker's
worker processes) must not pay for openai, the runner or the sandbox.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentloop.errors import (
    AgentloopError,
    ConfigError,
    ContextLengthExceeded,
    DataError,
    DockerUnavailable,
    ImageMissing,
    InfraError,
    RunDirError,
    ServerUnreachable,
    WorkspaceError,
)

if TYPE_CHECKING:
    from agentloop.agent.config import AgentConfig
    from agentloop.attempt import Attempt, AttemptKind
    from agentloop.config import RunConfig, load_config
    from agentloop.export import ExportOptions, ExportStats, export_runs
    from agentloop.math import AnswerVerdict, answers_equal, canonical_answer, grade_answer
    from agentloop.metrics import pass_at_k
    from agentloop.model.client import Completion, ModelClient
    from agentloop.model.config import ModelConfig, SamplingParams
    from agentloop.report import Report, build_report
    from agentloop.runner import run
    from agentloop.sandbox import DockerPool, ExecResult, Sandbox, SandboxConfig, Verdict, Workspace, WorkspacePool
    from agentloop.store import AttemptStore
    from agentloop.tasks.loaders import load_jsonl
    from agentloop.tasks.model import Suite, Task
    from agentloop.tasks.suites import load_suite

_LAZY = {
    "agentloop.agent.config": ("AgentConfig",),
    "agentloop.attempt": ("Attempt", "AttemptKind"),
    "agentloop.config": ("RunConfig", "load_config"),
    "agentloop.export": ("ExportOptions", "ExportStats", "export_runs"),
    "agentloop.math": ("AnswerVerdict", "answers_equal", "canonical_answer", "grade_answer"),
    "agentloop.metrics": ("pass_at_k",),
    "agentloop.model.client": ("Completion", "ModelClient"),
    "agentloop.model.config": ("ModelConfig", "SamplingParams"),
    "agentloop.report": ("Report", "build_report"),
    "agentloop.runner": ("run",),
    "agentloop.sandbox": ("DockerPool", "ExecResult", "Sandbox", "SandboxConfig", "Verdict", "Workspace",
                          "WorkspacePool"),
    "agentloop.store": ("AttemptStore",),
    "agentloop.tasks.loaders": ("load_jsonl",),
    "agentloop.tasks.model": ("Suite", "Task"),
    "agentloop.tasks.suites": ("load_suite",),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'agentloop' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = [
    "AgentConfig", "AgentloopError", "AnswerVerdict", "Attempt", "AttemptKind", "AttemptStore", "Completion",
    "ConfigError", "ContextLengthExceeded", "DataError", "DockerPool", "DockerUnavailable", "ExecResult",
    "ExportOptions", "ExportStats", "ImageMissing", "InfraError", "ModelClient", "ModelConfig", "Report",
    "RunConfig", "RunDirError", "SamplingParams", "Sandbox", "SandboxConfig", "ServerUnreachable", "Suite",
    "Task", "Verdict", "Workspace", "WorkspaceError", "WorkspacePool", "answers_equal", "build_report",
    "canonical_answer", "export_runs", "grade_answer", "load_config", "load_jsonl", "load_suite", "pass_at_k",
    "run",
]
