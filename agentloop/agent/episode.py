"""Agent episodes: the model acts in its own workspace, step by step, until it submits.

One step is one generation: the model's reply becomes actions (agentloop.agent.protocol), they
run in the episode's workspace, and what they printed goes back as the next message; the prompt
only ever grows, so vLLM's prefix cache hits. After every step the workspace's `solution.py` is
graded by the hidden tests in the job sandbox (never shown to the model), so an episode cut at any
step has an answer: its state then. Every step is one attempt row (see /README "Agent episodes").

An episode ends when the model submits, at its step limit, its token share, its time limit, after
too many format errors, or when its context is full (vLLM's HTTP 400): each is an outcome, recorded
on its last row. A server or workspace failure is an `infra_error` row instead; `--resume` then
replays the stored actions into a fresh workspace and goes on from the last completed step without
asking the model again for any stored step.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import structlog

from agentloop.agent.files import SOLUTION, workspace_files
from agentloop.agent.protocol import Action, first_messages, result_text, text_actions, tool_actions, tool_schemas
from agentloop.attempt import Attempt, AttemptKind
from agentloop.errors import ContextLengthExceeded, InfraError, WorkspaceError
from agentloop.loop import Context, attempt_tokens
from agentloop.model.client import Completion
from agentloop.sandbox.types import ExecResult, StepOutput, Verdict, Workspace, Workspaces
from agentloop.strategy import slot_seed
from agentloop.tasks.model import Task
from agentloop.verify import graded_attempt

log = structlog.get_logger()

NO_SOLUTION = ExecResult(Verdict.FAILED, 0.0, detail=f"no {SOLUTION} in the workspace")


class Bounded:
    """Workspaces, at most `limit` of them live at once (`[agent] max_live`)."""

    def __init__(self, inner: Workspaces, limit: int) -> None:
        self._inner = inner
        self._limiter = anyio.CapacityLimiter(limit)

    @asynccontextmanager
    async def workspace(self, files: Mapping[str, str]) -> AsyncIterator[Workspace]:
        async with self._limiter, self._inner.workspace(files) as ws:
            yield ws


@dataclass
class _State:
    """A graded state of the workspace's solution.py (reused while the file is unchanged)."""

    code: str | None
    kind: AttemptKind = AttemptKind.COMPLETED
    verdict: Verdict | None = None
    grading: ExecResult | None = None
    feedback_verdict: Verdict | None = None
    error: str | None = None


@dataclass
class _Episode:
    task: Task
    chain: int
    steps: int
    messages: list[dict[str, Any]]
    step: int = 0
    tokens: float = 0.0
    acting_s: float = 0.0
    """Time the episode's actions have run in its workspace (what `[agent] time_limit_s` limits)."""
    format_errors: int = 0
    code: str | None = None
    graded: _State | None = None
    diverged: list[int] = field(default_factory=list)
    done: bool = False


async def run_task_episodes(ctx: Context, task: Task, episodes: int, steps: int,
                            stored: Mapping[int, Sequence[Attempt]]) -> None:
    """Episodes 0..episodes-1 of `task`, up to `steps` steps each: start those the store has
    nothing of, continue the unfinished ones (`stored`: each episode's completed rows by step)."""
    async with anyio.create_task_group() as tg:
        for chain in range(episodes):
            rows = list(stored.get(chain, ()))
            if rows and (_episode_extra(rows[-1]).get("outcome") or rows[-1].turn + 1 >= steps):
                continue
            tg.start_soon(run_episode, ctx, task, chain, steps, rows)


def _episode_extra(a: Attempt) -> dict[str, Any]:
    ep = a.extra.get("episode")
    return ep if isinstance(ep, dict) else {}


async def run_episode(ctx: Context, task: Task, chain: int, steps: int, done: Sequence[Attempt] = ()) -> None:
    """One episode, from its start or (on resume) from after its last completed step in `done`."""
    assert ctx.workspaces is not None, "an agent split needs workspaces"
    files = workspace_files(task)
    ep = _Episode(task, chain, steps, first_messages(task.prompt, None, ctx.agent),
                  code=files[SOLUTION])
    started = time.time()
    try:
        async with ctx.workspaces.workspace(files) as ws:
            if done:
                await _replay(ctx, ws, ep, done)
            while not ep.done:
                await _step(ctx, ws, ep)
    except WorkspaceError as e:  # the workspace could not start, or died between steps
        if not ep.done:
            await ctx.record(_infra_row(ctx, ep, started, f"workspace: {e}"))


async def _step(ctx: Context, ws: Workspace, ep: _Episode) -> None:
    agent = ctx.agent
    tools = tool_schemas(agent) if agent.protocol == "tools" else None
    seed = slot_seed(ctx.seed, ctx.strategy, ctx.task_index.get(ep.task.id, 0), ep.chain, ep.step)
    started = time.time()
    try:
        (c,) = await ctx.client.complete(ep.messages, n=1, seed=seed, tools=tools)
    except ContextLengthExceeded as e:  # an outcome of the episode: graded on its current state
        state = await _grade(ctx, ep, ep.code)
        await _record_step(ctx, ep, state, started, None, [], [], {"outcome": "context_full"}, error=str(e))
        return
    except InfraError as e:
        ep.done = True
        await ctx.record(_infra_row(ctx, ep, started, str(e), seed=seed))
        return
    tool_calls = tuple(getattr(c, "tool_calls", ()) or ()) if tools is not None else ()
    actions = tool_actions(tool_calls, agent) if tools is not None else text_actions(c.text)
    assistant: dict[str, Any] = {"role": "assistant", "content": c.text}
    if tool_calls:
        assistant = {"role": "assistant", "content": c.text or None, "tool_calls": list(tool_calls)}
    try:
        logs, observations, submitted = await _act(ctx, ws, ep, actions)
    except WorkspaceError as e:  # the reply is kept; --resume asks again for this step
        ep.done = True
        await ctx.record(replace(_infra_row(ctx, ep, started, f"workspace: {e}", seed=seed), completion=c.text,
                                 prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens))
        return
    if tools is not None:
        obs_messages = [{"role": "tool", "tool_call_id": a.call_id, "content": o}
                        for a, o in zip(actions, observations, strict=False) if a.call_id is not None]
        if len(obs_messages) < len(observations):  # no tool call to answer: a plain message
            obs_messages.append({"role": "user", "content": "\n\n".join(observations[len(obs_messages):])})
    else:
        obs_messages = [{"role": "user", "content": "\n\n".join(observations)}]
    state = await _grade(ctx, ep, ep.code)
    spent = (c.prompt_tokens or 0) + (c.completion_tokens or 0)
    outcome = _outcome(ctx, ep, submitted, ep.tokens + spent)
    info = {"outcome": outcome, "assistant": assistant, "observation_messages": obs_messages, "actions": logs}
    await _record_step(ctx, ep, state, started, c, observations, obs_messages, info, seed=seed)


def _outcome(ctx: Context, ep: _Episode, submitted: bool, tokens: float) -> str | None:
    if submitted:
        return "submitted"
    if ep.format_errors >= ctx.agent.max_format_errors:
        return "format_errors"
    if ep.step + 1 >= ep.steps:
        return "step_limit"
    if ctx.token_share is not None and tokens >= ctx.token_share:
        return "token_limit"
    if ep.acting_s >= ctx.agent.time_limit_s:
        return "time_limit"
    return None


async def _act(ctx: Context, ws: Workspace, ep: _Episode,
               actions: list[Action]) -> tuple[list[dict[str, Any]], list[str], bool]:
    """Run a reply's actions in order (a submit ends them); (action logs, observations, submitted)."""
    logs: list[dict[str, Any]] = []
    observations: list[str] = []
    for action in actions:
        entry: dict[str, Any] = {"kind": action.kind, "command": action.command}
        if action.is_error:
            ep.format_errors += 1
            observation = action.command
        elif action.kind == "submit":
            observation = "Submitted."
        else:
            r, observation = await _run(ctx, ws, ep, action.kind, action.command)
            ep.acting_s += r.duration_s
            entry.update(exit_code=r.exit_code, timed_out=r.timed_out, duration_s=round(r.duration_s, 4))
        entry["observation_sha"] = _sha(observation)
        logs.append(entry)
        observations.append(observation)
        if action.kind == "submit":
            return logs, observations, True
    return logs, observations, False


async def _run(ctx: Context, ws: Workspace, ep: _Episode, kind: str, command: str) -> tuple[StepOutput, str]:
    """Run one action; the episode's solution.py follows it. (result, what the model reads)"""
    r = await ws.run(command, ctx.agent.step_timeout_s, kind=kind, read=(SOLUTION,))
    ep.code = r.files.get(SOLUTION)
    agent = ctx.agent
    return r, result_text(r.exit_code, r.signal, r.timed_out, agent.step_timeout_s, r.stdout, r.stderr,
                          agent.observation_chars)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


async def _grade(ctx: Context, ep: _Episode, code: str | None) -> _State:
    """The hidden tests (and the visible ones, for selection) on `code`, in the job sandbox; the
    same code is graded once per episode."""
    if ep.graded is not None and ep.graded.code == code:
        return ep.graded
    if code is None:
        state = _State(None, verdict=Verdict.FAILED, grading=NO_SOLUTION, feedback_verdict=Verdict.FAILED)
    else:
        a = await graded_attempt(ctx.sandbox, ep.task, code, ctx.time_limits[ep.task.id], as_is=True,
                                 feedback_chars=ctx.revision.feedback_chars, strategy=ctx.strategy, chain=ep.chain,
                                 turn=ep.step, messages=[], started_at=0.0)
        state = _State(code, a.kind, a.verdict, a.grading, a.feedback_verdict, a.error)
    if state.kind is AttemptKind.COMPLETED:
        ep.graded = state
    return state


async def _record_step(ctx: Context, ep: _Episode, state: _State, started: float, c: Completion | None,
                       observations: list[str], obs_messages: list[dict[str, Any]], info: dict[str, Any], *,
                       seed: int | None = None, error: str | None = None) -> None:
    episode = {"protocol": ctx.agent.protocol, "format_errors": ep.format_errors, **info}
    if ep.step == 0 and ctx.agent.protocol == "tools":
        episode["tools"] = tool_schemas(ctx.agent)
    if ep.diverged:
        episode["replay_diverged"], ep.diverged = ep.diverged, []
    extra: dict[str, Any] = {"seed": seed, "time_limit_s": ctx.time_limits[ep.task.id], "episode": episode}
    if c is not None:
        extra.update(finish_reason=c.finish_reason, http_tries=c.attempts)
    kind = state.kind
    a = Attempt(
        strategy=ctx.strategy, task_id=ep.task.id, chain=ep.chain, turn=ep.step, kind=kind, messages=ep.messages,
        started_at=started, finished_at=time.time(), request_id=c.request_id if c else None,
        completion=c.text if c else None, code=state.code, prompt_tokens=c.prompt_tokens if c else None,
        cached_prompt_tokens=c.cached_prompt_tokens if c else None, completion_tokens=c.completion_tokens if c else 0,
        latency_s=c.latency_s if c else None, verdict=state.verdict if kind is AttemptKind.COMPLETED else None,
        grading=state.grading, feedback="\n\n".join(observations) if c else None,
        feedback_verdict=state.feedback_verdict if kind is AttemptKind.COMPLETED else None,
        error=error if kind is AttemptKind.COMPLETED else state.error, extra=extra)
    await ctx.record(a)
    if kind is not AttemptKind.COMPLETED:  # the state could not be graded: --resume redoes this step
        ep.done = True
        return
    ep.tokens += attempt_tokens(a)
    ep.messages = [*ep.messages, episode["assistant"], *obs_messages] if c else ep.messages
    ep.step += 1
    ep.done = episode["outcome"] is not None


def _infra_row(ctx: Context, ep: _Episode, started: float, error: str, seed: int | None = None) -> Attempt:
    return Attempt(strategy=ctx.strategy, task_id=ep.task.id, chain=ep.chain, turn=ep.step,
                   kind=AttemptKind.INFRA_ERROR, messages=ep.messages, started_at=started, finished_at=time.time(),
                   error=error, extra={"seed": seed, "episode": {"protocol": ctx.agent.protocol}})


async def _replay(ctx: Context, ws: Workspace, ep: _Episode, done: Sequence[Attempt]) -> None:
    """Bring a fresh workspace to the state after `done` (stored completed steps, in order) by
    running their actions again; note the steps whose observations come out different."""
    for row in done:
        info = _episode_extra(row)
        for entry in info.get("actions") or []:
            if entry.get("kind") not in ("bash", "python"):
                continue
            _, observation = await _run(ctx, ws, ep, entry["kind"], str(entry.get("command", "")))
            if entry.get("observation_sha") != _sha(observation) and row.turn not in ep.diverged:
                ep.diverged.append(row.turn)
        ep.tokens += attempt_tokens(row)
    last = done[-1]
    info = _episode_extra(last)
    if ep.code != last.code and last.turn not in ep.diverged:
        ep.diverged.append(last.turn)
    if ep.diverged:
        log.warning("replayed actions gave different observations", task=ep.task.id, strategy=ctx.strategy,
                    episode=ep.chain, steps=ep.diverged)
    ep.messages = [*last.messages, info.get("assistant") or {"role": "assistant", "content": last.completion or ""},
                   *(info.get("observation_messages") or [])]
    ep.step = last.turn + 1
    ep.format_errors = int(info.get("format_errors") or 0)
    ep.acting_s = sum(float(e.get("duration_s") or 0.0) for row in done
                      for e in _episode_extra(row).get("actions") or [])
    if last.code == ep.code and last.verdict is not None:
        ep.graded = _State(last.code, verdict=last.verdict, grading=last.grading,
                           feedback_verdict=last.feedback_verdict)
