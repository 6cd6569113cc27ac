"""agentloop: test-time compute on verifiable tasks (parallel samples, sequential revisions).

The curated public API; everything else is internal and may change. Locked by tests/test_api.py.
"""

from agentloop.attempt import Attempt, AttemptKind
from agentloop.config import RunConfig, load_config
from agentloop.errors import (
    AgentloopError,
    ConfigError,
    DataError,
    DockerUnavailable,
    ImageMissing,
    InfraError,
    RunDirError,
    ServerUnreachable,
)
from agentloop.export import ExportOptions, ExportStats, export_runs
from agentloop.math import AnswerVerdict, answers_equal, canonical_answer, grade_answer
from agentloop.metrics import pass_at_k
from agentloop.model.client import Completion, ModelClient
from agentloop.model.config import ModelConfig, SamplingParams
from agentloop.report import Report, build_report
from agentloop.runner import run
from agentloop.sandbox import DockerPool, ExecResult, Sandbox, SandboxConfig, Verdict
from agentloop.store import AttemptStore
from agentloop.tasks.loaders import load_jsonl
from agentloop.tasks.model import Suite, Task
from agentloop.tasks.suites import load_suite

__all__ = [
    "AgentloopError", "AnswerVerdict", "Attempt", "AttemptKind", "AttemptStore", "Completion", "ConfigError",
    "DataError", "DockerPool", "DockerUnavailable", "ExecResult", "ExportOptions", "ExportStats", "ImageMissing",
    "InfraError",
    "ModelClient", "ModelConfig", "Report", "RunConfig", "RunDirError", "SamplingParams", "Sandbox",
    "SandboxConfig", "ServerUnreachable", "Suite", "Task", "Verdict", "answers_equal", "build_report",
    "canonical_answer", "export_runs", "grade_answer", "load_config", "load_jsonl", "load_suite", "pass_at_k", "run",
]
