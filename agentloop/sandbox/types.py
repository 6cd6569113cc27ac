"""Values that cross the sandbox boundary: verdicts and execution results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar, Protocol


class Verdict(StrEnum):
    PASSED = "passed"  # every test ran and none failed (a plain program: ran to its end, exit 0)
    FAILED = "failed"  # an exception (usually AssertionError) or a non-zero exit
    TIMEOUT = "timeout"  # over its CPU-time limit, or still running at the wall-clock backstop
    ERROR = "error"  # crash: killed by a signal, OOM, MemoryError, RecursionError
    INFRA_ERROR = "infra_error"  # the sandbox itself failed; never the candidate's fault


@dataclass(frozen=True)
class ExecResult:
    verdict: Verdict
    duration_s: float
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""  # head and tail kept when over the cap
    stderr: str = ""
    truncated: bool = False
    detail: str = ""  # one line: exception type and message, "timed out after 3.0 s", "OOM", ...
    extra: dict[str, Any] = field(default_factory=dict)
    cpu_s: float | None = None
    """CPU seconds the job's processes used (what the time limit is charged); None where no
    sandbox ran (math answers, results stored before CPU-time limits)."""

    def to_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies, and this runs once per attempt on the hot path.
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["verdict"] = self.verdict.value
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ExecResult:
        return cls(**{**d, "verdict": Verdict(d["verdict"])})


@dataclass(frozen=True)
class Tests:
    """One suite of tests for a candidate module: `code` defines `check(candidate)`, which is
    called with the candidate's `entry_point`."""

    __test__: ClassVar[bool] = False  # not a pytest class
    code: str
    entry_point: str


class Sandbox(Protocol):
    """Runs untrusted Python and says how it ended. Docker is one implementation."""

    async def run_suites(self, candidate: str, suites: Sequence[Tests], timeout_s: float) -> list[ExecResult]:
        """Grade the candidate module against each suite in one job: a fresh candidate process per
        suite, each held to `timeout_s` CPU seconds, one result per suite in order."""
        ...

    async def run_tests(self, candidate: str, tests: str, entry_point: str, timeout_s: float) -> ExecResult:
        """Run `tests` (which define `check(candidate)`) against the candidate module."""
        ...

    async def run(self, program: str, timeout_s: float) -> ExecResult:
        """Run one plain program."""
        ...


class StepOutput(Protocol):
    """How one action in a workspace ended (agentloop.sandbox.workspace.StepResult)."""

    @property
    def exit_code(self) -> int | None: ...
    @property
    def signal(self) -> int | None: ...
    @property
    def timed_out(self) -> bool: ...
    @property
    def duration_s(self) -> float: ...
    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...
    @property
    def files(self) -> Mapping[str, str | None]: ...


class Workspace(Protocol):
    """An agent episode's place to act: files persist across steps, processes do not. Raises
    `WorkspaceError` when it cannot answer (never a made-up result)."""

    async def run(self, command: str, timeout_s: float, *, kind: str = "bash",
                  read: Sequence[str] = ("solution.py",)) -> StepOutput: ...

    async def write(self, files: Mapping[str, str]) -> None: ...

    async def read(self, paths: Sequence[str]) -> dict[str, str | None]: ...


class Workspaces(Protocol):
    """Hands out fresh workspaces: `async with pool.workspace(files) as ws:` (destroyed on exit)."""

    def workspace(self, files: Mapping[str, str]) -> AbstractAsyncContextManager[Workspace]: ...
