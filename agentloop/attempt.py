"""The attempt record: one turn of one chain, from prompt to verdict. Everything is logged."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from agentloop.sandbox.types import ExecResult, Verdict


class AttemptKind(StrEnum):
    COMPLETED = "completed"  # the model answered and the sandbox gave a verdict
    INFRA_ERROR = "infra_error"  # server or sandbox failure: logged, excluded from pass@k's n


@dataclass(frozen=True)
class Attempt:
    strategy: str
    task_id: str
    chain: int
    turn: int
    kind: AttemptKind
    messages: list[dict[str, Any]]
    """The exact prompt messages sent for this turn."""
    started_at: float
    finished_at: float
    request_id: str | None = None
    """Attempts from one request with n > 1 share it (and its prompt tokens)."""
    completion: str | None = None
    code: str | None = None
    prompt_tokens: int | None = None
    cached_prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    verdict: Verdict | None = None
    """Grading verdict (the hidden tests); None for infra errors."""
    grading: ExecResult | None = None
    feedback: str | None = None
    feedback_verdict: Verdict | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASSED
