"""Turns of chains: prompt → model → sandbox → logged attempts.

`run_request` is one turn of one or more parallel chains; `run_chain` is one revision chain,
turn after turn, each turn seeing the previous code and feedback from the feedback tests. Every
outcome is recorded: a server failure becomes `infra_error` attempts (never `failed`),
a sandbox failure keeps the completion and marks the attempt `infra_error` too.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from agentloop.attempt import Attempt, AttemptKind
from agentloop.errors import InfraError
from agentloop.feedback import DEFAULT_LIMIT_CHARS, feedback_message, revision_messages, run_feedback_tests
from agentloop.model.client import Completion, ModelClient
from agentloop.sandbox.types import Sandbox, Verdict
from agentloop.strategy import Request
from agentloop.tasks.model import Suite, Task
from agentloop.verify import graded_attempt


@dataclass
class Context:
    client: ModelClient
    sandbox: Sandbox
    suite: Suite
    time_limits: dict[str, float]
    record: Callable[[Attempt], Awaitable[None]]
    strategy: str


def first_messages(suite: Suite, task: Task) -> list[dict[str, Any]]:
    messages = [{"role": "user", "content": suite.user_template.replace("{prompt}", task.prompt)}]
    if suite.system_prompt:
        messages.insert(0, {"role": "system", "content": suite.system_prompt})
    return messages


async def run_request(ctx: Context, req: Request, messages: list[dict[str, Any]]) -> None:
    """Sample len(req.chains) completions in one request and grade each one."""
    started = time.time()
    base = dict(strategy=ctx.strategy, turn=req.turn, messages=messages, started_at=started)
    try:
        completions = await ctx.client.complete(messages, n=len(req.chains), seed=req.seed)
    except InfraError as e:
        for chain in req.chains:
            await ctx.record(Attempt(**base, task_id=req.task.id, chain=chain, kind=AttemptKind.INFRA_ERROR,
                                     finished_at=time.time(), error=str(e), extra={"seed": req.seed}))
        return
    if len(completions) == 1:  # the common n=1 case needs no task group
        await _grade_and_record(ctx, req, req.chains[0], completions[0], base)
        return
    async with anyio.create_task_group() as tg:
        for chain, completion in zip(req.chains, completions):
            tg.start_soon(_grade_and_record, ctx, req, chain, completion, base)


async def _grade_and_record(ctx: Context, req: Request, chain: int, c: Completion, base: dict[str, Any]) -> None:
    limit = ctx.time_limits[req.task.id]
    await ctx.record(await graded_attempt(
        ctx.sandbox, req.task, c.text, limit, **base, chain=chain, request_id=c.request_id,
        prompt_tokens=c.prompt_tokens, cached_prompt_tokens=c.cached_prompt_tokens,
        completion_tokens=c.completion_tokens, latency_s=c.latency_s,
        extra={"seed": req.seed, "finish_reason": c.finish_reason, "time_limit_s": limit, "http_tries": c.attempts},
    ))


async def run_chain(
    ctx: Context, task: Task, chain: int, messages: list[dict[str, Any]], turns: int, *,
    first_turn: int = 0, seed: int | None = None, stop_on_feedback_pass: bool = True,
    feedback_chars: int = DEFAULT_LIMIT_CHARS,
) -> None:
    """Turns `first_turn` .. `turns - 1` of one chain. Each turn is graded by the grading tests and
    checked by the feedback tests; only the feedback reaches the next prompt, which extends the
    previous messages unchanged. The chain ends early when the feedback tests pass (unless
    `stop_on_feedback_pass` is off) or at an infra error (resume continues it from there)."""
    limit = ctx.time_limits[task.id]
    for turn in range(first_turn, turns):
        started = time.time()
        base = dict(strategy=ctx.strategy, task_id=task.id, chain=chain, turn=turn, messages=messages,
                    started_at=started)
        turn_seed = None if seed is None else seed + turn
        try:
            (c,) = await ctx.client.complete(messages, n=1, seed=turn_seed)
        except InfraError as e:
            await ctx.record(Attempt(**base, kind=AttemptKind.INFRA_ERROR, finished_at=time.time(), error=str(e),
                                     extra={"seed": turn_seed}))
            return
        attempt = await graded_attempt(
            ctx.sandbox, task, c.text, limit, **{k: v for k, v in base.items() if k != "task_id"},
            request_id=c.request_id, prompt_tokens=c.prompt_tokens, cached_prompt_tokens=c.cached_prompt_tokens,
            completion_tokens=c.completion_tokens, latency_s=c.latency_s,
            extra={"seed": turn_seed, "finish_reason": c.finish_reason, "time_limit_s": limit, "http_tries": c.attempts},
        )
        checked = await run_feedback_tests(ctx.sandbox, task, attempt.code or "", limit)
        if checked is not None and checked.verdict is Verdict.INFRA_ERROR:
            attempt = dataclasses.replace(attempt, kind=AttemptKind.INFRA_ERROR, verdict=None,
                                          error=f"sandbox (feedback tests): {checked.detail}")
        feedback = feedback_message(checked, feedback_chars)
        attempt = dataclasses.replace(attempt, feedback=feedback, feedback_verdict=checked.verdict if checked else None)
        await ctx.record(attempt)
        if attempt.kind is AttemptKind.INFRA_ERROR:
            return
        if stop_on_feedback_pass and checked is not None and checked.verdict is Verdict.PASSED:
            return
        messages = revision_messages(messages, c.text, feedback)
