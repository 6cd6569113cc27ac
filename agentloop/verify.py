"""Grading a candidate in the sandbox, with time limits calibrated like evalplus.

A task's limit is max(floor, factor × the reference solution's runtime measured in this sandbox
image), so a slow task isn't failed by a fixed limit and a fast one doesn't wait for a hung
candidate. Runtimes and limits are CPU seconds (what the sandbox charges a job, so a loaded or
stalled machine changes no verdict). Measurements are cached per (image, program) in the user
cache dir.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import anyio
import structlog

from agentloop.attempt import Attempt, AttemptKind
from agentloop.errors import MathWorkerError
from agentloop.feedback import feedback_message
from agentloop.math.canonical import canonical_answer
from agentloop.math.grade import AnswerVerdict, grade_answer
from agentloop.sandbox.types import ExecResult, Sandbox, Tests, Verdict
from agentloop.tasks.extract import assemble, build_program, extract_code
from agentloop.tasks.model import Suite, Task

log = structlog.get_logger()
CALIBRATION_TIMEOUT_S = 120.0


def cache_dir() -> Path:
    return Path(os.environ.get("AGENTLOOP_CACHE", Path.home() / ".cache" / "agentloop"))


async def grade(sandbox: Sandbox, task: Task, code: str, time_limit_s: float, tests: str | None = None, *,
                as_is: bool = False) -> ExecResult:
    """Run the candidate against `tests` (the grading tests unless given). `as_is`: `code` is the
    whole module (no prompt above it), as evalplus grades a `solution`."""
    tests = task.grading_tests if tests is None else tests
    return await sandbox.run_tests(code if as_is else assemble(task, code), tests, task.entry_point, time_limit_s)


async def graded_attempt(sandbox: Sandbox, task: Task, text: str, time_limit_s: float, *, as_is: bool = False,
                         feedback_chars: int | None = None, last_answer_wins: bool = False, **fields: Any) -> Attempt:
    """Extract the code from a reply, grade it, and make the attempt record. A sandbox failure
    keeps the completion and becomes `infra_error`, never a wrong answer. Math tasks are graded
    by canonical answer instead (no sandbox). `as_is`: `text` is the whole program, graded
    without extraction and without the prompt above it (`agentloop grade`'s `solution` rows).
    `feedback_chars`: also run the feedback tests, in the same sandbox job against a fresh fork
    of the candidate, and set the attempt's feedback message (capped) and feedback verdict.
    `last_answer_wins`: math only (see `graded_math_attempt`)."""
    if task.is_math:
        return await graded_math_attempt(task, text, last_answer_wins=last_answer_wins, **fields)
    code = text if as_is else extract_code(text, task.entry_point)
    suites = [Tests(task.grading_tests, task.entry_point)]
    check_feedback = feedback_chars is not None and bool(task.feedback_tests.strip())
    if check_feedback:
        suites.append(Tests(task.feedback_tests, task.entry_point))
    results = await sandbox.run_suites(code if as_is else assemble(task, code), suites, time_limit_s)
    result, checked = results[0], (results[1] if check_feedback else None)
    infra = next((r for r in results if r.verdict is Verdict.INFRA_ERROR), None)
    if infra is not None:
        which = "sandbox" if infra is result else "sandbox (feedback tests)"
        return Attempt(**fields, task_id=task.id, kind=AttemptKind.INFRA_ERROR, finished_at=time.time(),
                       completion=text, code=code, verdict=None, grading=result, error=f"{which}: {infra.detail}")
    feedback = None if feedback_chars is None else feedback_message(checked, feedback_chars)
    return Attempt(**fields, task_id=task.id, kind=AttemptKind.COMPLETED, finished_at=time.time(), completion=text,
                   code=code, verdict=result.verdict, grading=result, feedback=feedback,
                   feedback_verdict=checked.verdict if checked else None)


async def graded_math_attempt(task: Task, text: str, *, last_answer_wins: bool = False, **fields: Any) -> Attempt:
    """Grade a math reply with `agentloop.math.grade.grade_answer`, exactly as a user calling it
    would: the reply's stated final answer against the task's answer, the reply's finish_reason
    (from ``extra``) applied, hedged replies failed unless ``last_answer_wins``. `code` holds the
    graded answer's canonical form (what votes compare; None when the reply states no single
    answer), ``extra["answer"]`` the answer as written; a reply with none is `failed`. A checker
    that cannot answer (`MathWorkerError`) makes the attempt `infra_error`, keeping the reply."""
    started = time.monotonic()
    extra = dict(fields.pop("extra", None) or {})
    finish = extra.get("finish_reason")
    finish_reason = finish if isinstance(finish, str) else "stop"
    try:
        verdict, canon = await anyio.to_thread.run_sync(_grade_math, text, task.answer or "", finish_reason,
                                                        last_answer_wins)
    except MathWorkerError as e:  # the checker could not answer: never a verdict, the reply is kept
        return Attempt(**fields, task_id=task.id, kind=AttemptKind.INFRA_ERROR, finished_at=time.time(),
                       completion=text, code=None, verdict=None, extra=extra, error=f"math checker: {e}")
    extra["answer"] = verdict.answer
    detail = verdict.detail if canon is None else f"answer {canon!r:.200}: {verdict.detail}"
    result = ExecResult(Verdict.PASSED if verdict.passed else Verdict.FAILED, round(time.monotonic() - started, 6),
                        detail=detail)
    return Attempt(**fields, task_id=task.id, kind=AttemptKind.COMPLETED, finished_at=time.time(), completion=text,
                   code=canon, verdict=result.verdict, grading=result, extra=extra)


def _grade_math(text: str, truth: str, finish_reason: str, last_answer_wins: bool) -> tuple[AnswerVerdict, str | None]:
    verdict = grade_answer(text, truth, finish_reason=finish_reason, last_answer_wins=last_answer_wins)
    return verdict, (canonical_answer(verdict.answer) if verdict.answer is not None else None)


def _reference_program(task: Task) -> str:
    return build_program(task, assemble(task, task.reference or ""), task.grading_tests)


RUNTIME_KIND = "cpu-v2"
"""What the cache of reference runtimes holds: CPU seconds of the job's processes (executor
protocol 2). Keys of the wall-clock seconds cached before carry no kind, so they are never read."""


def _key(image: str, program: str) -> str:
    return hashlib.sha256(f"{RUNTIME_KIND}\0{image}\0{program}".encode()).hexdigest()[:24]


def _read_cache(path: Path) -> dict[str, float]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, data: dict[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=0, sort_keys=True))
    tmp.replace(path)


async def calibrate_time_limits(sandbox: Sandbox, tasks: list[Task], suite: Suite, image: str) -> dict[str, float]:
    """Per-task time limits in seconds; measures (and caches) reference runtimes as needed."""
    path = cache_dir() / "reference_runtimes.json"
    cache = await anyio.to_thread.run_sync(_read_cache, path)
    runtimes: dict[str, float | None] = {}

    async def measure(task: Task) -> None:
        program = _reference_program(task)
        key = _key(image, program)
        if key in cache:
            runtimes[task.id] = cache[key]
            return
        result = await grade(sandbox, task, task.reference or "", CALIBRATION_TIMEOUT_S)
        if result.verdict is Verdict.PASSED and result.cpu_s is not None:
            runtimes[task.id] = cache[key] = round(result.cpu_s, 4)
        else:
            runtimes[task.id] = None
            log.warning("reference solution does not pass; using the default time limit",
                        task=task.id, verdict=result.verdict.value, detail=result.detail)

    async with anyio.create_task_group() as tg:
        for task in tasks:
            if task.reference is not None:
                tg.start_soon(measure, task)
    await anyio.to_thread.run_sync(_write_cache, path, cache)
    limits = {}
    for task in tasks:
        ref = runtimes.get(task.id)
        limits[task.id] = suite.time_default_s if ref is None else max(suite.time_floor_s, suite.time_factor * ref)
    return limits
