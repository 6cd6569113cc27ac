"""Turns of chains: prompt → model → sandbox → feedback → logged attempt → next turn.

`run_request` is the first turn of one or more chains in one request (n samples share one
prefill); each chain then goes on alone in `run_chain`, every turn seeing the previous code and
feedback from the feedback tests only. Every outcome is recorded: a server failure becomes
`infra_error` attempts (never `failed`), a sandbox failure keeps the completion and marks the
attempt `infra_error` too; either ends the chain, and `--resume` continues it from there.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from agentloop.agent.config import AgentConfig
from agentloop.attempt import Attempt, AttemptKind
from agentloop.config import RevisionConfig
from agentloop.errors import InfraError
from agentloop.feedback import MATH_REVISION_PROMPT, revision_messages
from agentloop.model.client import Completion, ModelClient
from agentloop.sandbox.types import Sandbox, Verdict, Workspaces
from agentloop.strategy import Request, slot_seed
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
    revision: RevisionConfig = field(default_factory=RevisionConfig)
    seed: int | None = None
    """Base seed: each turn's request is seeded from its slot (strategy.slot_seed)."""
    task_index: Mapping[str, int] = field(default_factory=dict)
    token_share: float | None = None
    """Tokens one chain may spend (token budgets): no new turn starts once it is spent."""
    scorer: Callable[[str, str], Awaitable[float | None]] | None = None
    """Math: (problem, solution) → score for weighted voting and best-of-n."""
    last_answer_wins: bool = False
    """Math: grade a hedged reply by its last final answer (`[math] last_answer_wins`)."""
    agent: AgentConfig = field(default_factory=AgentConfig)
    """Agent episodes: protocol and limits (`[agent]`)."""
    workspaces: Workspaces | None = None
    """Agent episodes: where each episode gets its workspace (None: the run has no agent split)."""


def first_messages(suite: Suite, task: Task) -> list[dict[str, Any]]:
    messages = [{"role": "user", "content": suite.user_template.replace("{prompt}", task.prompt)}]
    if suite.system_prompt:
        messages.insert(0, {"role": "system", "content": suite.system_prompt})
    return messages


def attempt_tokens(a: Attempt, siblings: int = 1) -> float:
    """What a turn cost: its share of the request's prompt (re-sent context included) + completion."""
    return (a.prompt_tokens or 0) / max(1, siblings) + (a.completion_tokens or 0)


def goes_on(ctx: Context, a: Attempt, turns: int, tokens: float) -> bool:
    """Whether the chain that made `a` takes another turn (at most `turns` in all)."""
    if a.kind is AttemptKind.INFRA_ERROR or a.turn + 1 >= turns:
        return False
    if ctx.revision.stop_on_feedback_pass and a.feedback_verdict is Verdict.PASSED:
        return False
    return ctx.token_share is None or tokens < ctx.token_share


async def run_request(ctx: Context, req: Request, messages: list[dict[str, Any]],
                      turns: Mapping[int, int] | int = 1) -> None:
    """Turn `req.turn` of len(req.chains) chains in one request; then each chain goes on alone up
    to its number of `turns` (one number for all chains, or per chain)."""
    try:
        completions = await ctx.client.complete(messages, n=len(req.chains), seed=req.seed)
    except InfraError as e:
        for chain in req.chains:
            await ctx.record(_infra(ctx, req.task, chain, req.turn, messages, time.time(), e, req.seed))
        return
    n = len(completions)
    caps = turns if isinstance(turns, Mapping) else dict.fromkeys(req.chains, turns)
    if n == 1:  # the common n=1 case needs no task group
        await _turn_then_chain(ctx, req, req.chains[0], completions[0], messages, n, caps[req.chains[0]])
        return
    async with anyio.create_task_group() as tg:
        for chain, completion in zip(req.chains, completions, strict=False):  # a server may return fewer
            tg.start_soon(_turn_then_chain, ctx, req, chain, completion, messages, n, caps[chain])


async def _turn_then_chain(ctx: Context, req: Request, chain: int, c: Completion,
                           messages: list[dict[str, Any]], siblings: int, turns: int) -> None:
    a = await finish_turn(ctx, req.task, chain, req.turn, messages, c, req.seed)
    tokens = attempt_tokens(a, siblings)
    if goes_on(ctx, a, turns, tokens):
        await run_chain(ctx, req.task, chain, revision_messages(messages, c.text, a.feedback or ""), turns,
                        first_turn=req.turn + 1, tokens=tokens)


async def run_chain(ctx: Context, task: Task, chain: int, messages: list[dict[str, Any]], turns: int, *,
                    first_turn: int = 0, tokens: float = 0.0) -> None:
    """Turns `first_turn` .. `turns - 1` of one chain, one request each; `messages` are this
    turn's prompt, and each next prompt extends it unchanged (so vLLM's prefix cache hits)."""
    for turn in range(first_turn, turns):
        seed = slot_seed(ctx.seed, ctx.strategy, ctx.task_index.get(task.id, 0), chain, turn)
        started = time.time()
        try:
            (c,) = await ctx.client.complete(messages, n=1, seed=seed)
        except InfraError as e:
            await ctx.record(_infra(ctx, task, chain, turn, messages, started, e, seed))
            return
        a = await finish_turn(ctx, task, chain, turn, messages, c, seed, started)
        tokens += attempt_tokens(a)
        if not goes_on(ctx, a, turns, tokens):
            return
        messages = revision_messages(messages, c.text, a.feedback or "")


async def finish_turn(ctx: Context, task: Task, chain: int, turn: int, messages: list[dict[str, Any]],
                      c: Completion, seed: int | None, started: float | None = None) -> Attempt:
    """Grade a completion (grading tests) and check it (feedback tests) in one sandbox job, record the attempt."""
    limit = ctx.time_limits[task.id]
    attempt = await graded_attempt(
        ctx.sandbox, task, c.text, limit, feedback_chars=None if task.is_math else ctx.revision.feedback_chars,
        last_answer_wins=ctx.last_answer_wins,
        strategy=ctx.strategy, chain=chain, turn=turn, messages=messages,
        started_at=started or time.time() - c.latency_s, request_id=c.request_id, prompt_tokens=c.prompt_tokens,
        cached_prompt_tokens=c.cached_prompt_tokens, completion_tokens=c.completion_tokens, latency_s=c.latency_s,
        extra={"seed": seed, "finish_reason": c.finish_reason, "time_limit_s": limit, "http_tries": c.attempts},
    )
    if task.is_math:  # no tests to show: a revision turn asks the model to check its own work
        extra = await _scored(ctx, task, c, attempt)
        attempt = dataclasses.replace(attempt, feedback=MATH_REVISION_PROMPT, extra=extra)
    await ctx.record(attempt)
    return attempt


async def _scored(ctx: Context, task: Task, c: Completion, attempt: Attempt) -> dict[str, Any]:
    """The attempt's extra with its score; a scorer failure leaves the score out (never a wrong answer)."""
    if ctx.scorer is None:
        return attempt.extra
    try:
        return {**attempt.extra, "score": await ctx.scorer(task.prompt, c.text)}
    except InfraError as e:
        return {**attempt.extra, "score": None, "score_error": str(e)}


def _infra(ctx: Context, task: Task, chain: int, turn: int, messages: list[dict[str, Any]], started: float,
           e: Exception, seed: int | None) -> Attempt:
    return Attempt(strategy=ctx.strategy, task_id=task.id, chain=chain, turn=turn, kind=AttemptKind.INFRA_ERROR,
                   messages=messages, started_at=started, finished_at=time.time(), error=str(e), extra={"seed": seed})
