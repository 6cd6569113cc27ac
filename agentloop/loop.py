"""One turn of one or more chains: prompt → model → sandbox → logged attempts.

Every outcome is recorded: a server failure becomes `infra_error` attempts (never `failed`),
a sandbox failure keeps the completion and marks the attempt `infra_error` too.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from agentloop.attempt import Attempt, AttemptKind
from agentloop.errors import InfraError
from agentloop.model.client import Completion, ModelClient
from agentloop.sandbox.types import Sandbox
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
