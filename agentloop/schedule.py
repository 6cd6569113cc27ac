"""Which chains to start or continue, per task and strategy, given what the store already holds.

A fixed split N:M gives every task N chains of up to M turns. Chains with no completed turn start
together (their first turns share requests of up to `samples_per_request` choices); a chain that
stopped part-way (an infra error, an interrupted run) goes on from its last completed turn with the
exact stored messages, so `--resume` continues chains instead of redoing them.

`adaptive` first spends a probe (turn 0 of `probe` chains) per task, predicts the task's
difficulty bin from the share of probe samples that pass the feedback tests, and spends the rest of
the budget on the split the table names for that bin: the probe chains go on as that split's
chains and new chains fill the budget (`allocate`).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio

from agentloop.attempt import Attempt, AttemptKind
from agentloop.feedback import revision_messages
from agentloop.loop import Context, attempt_tokens, first_messages, goes_on, run_chain, run_request
from agentloop.sandbox.types import Verdict
from agentloop.strategy import Request, chunks, parse_split, slot_seed
from agentloop.tasks.model import Task

Tails = Mapping[tuple[str, int], tuple[Attempt, float]]
"""(task id, chain) → (last completed attempt, tokens the chain spent): `AttemptStore.chain_tails`."""


async def run_task_chains(ctx: Context, task: Task, caps: list[int], tails: Tails, per_request: int) -> None:
    """Chain i of `task` gets up to caps[i] turns: start the chains the store has nothing of,
    continue the unfinished ones."""
    fresh = [c for c in range(len(caps)) if (task.id, c) not in tails]
    ti = ctx.task_index.get(task.id, 0)
    async with anyio.create_task_group() as tg:
        for chunk in chunks(fresh, per_request):
            seed = slot_seed(ctx.seed, ctx.strategy, ti, chunk[0], 0)
            turns = {c: caps[c] for c in chunk}
            tg.start_soon(run_request, ctx, Request(task, chunk, 0, seed), first_messages(ctx.suite, task), turns)
        for chain in range(len(caps)):
            if (task.id, chain) in tails:
                last, tokens = tails[(task.id, chain)]
                if goes_on(ctx, last, caps[chain], tokens):
                    messages = revision_messages(last.messages, last.completion or "", last.feedback or "")
                    tg.start_soon(partial(run_chain, ctx, task, chain, messages, caps[chain],
                                          first_turn=last.turn + 1, tokens=tokens))


@dataclass(frozen=True)
class AdaptiveTable:
    """Predicted-bin edges on the probe score and the best split per bin (from `compare`)."""

    budget: int
    probe: int
    edges: list[float]
    best: dict[str, str]
    """Bin index (as a string, 0 = hardest) → split name."""

    def split_for(self, score: float) -> str:
        return self.best[str(bisect.bisect_right(self.edges, score))]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AdaptiveTable:
        return cls(budget=int(d["budget"]), probe=int(d["probe"]), edges=[float(e) for e in d["edges"]],
                   best={str(k): str(v) for k, v in d["best"].items()})


def allocate(probe: int, turns: int, budget: int) -> list[int]:
    """Turns per chain for a task: the probe chains (one turn spent) go on to `turns` turns,
    then new chains of up to `turns` turns until `budget` generations are planned."""
    caps, left = [1] * probe, budget - probe
    for i in range(probe):
        extra = max(0, min(turns - 1, left))
        caps[i] += extra
        left -= extra
    while left > 0:
        caps.append(min(turns, left))
        left -= caps[-1]
    return caps


async def run_adaptive_task(ctx: Context, task: Task, table: AdaptiveTable, budget: int, tails: Tails,
                            probe_passed: Mapping[tuple[str, int], bool], per_request: int) -> None:
    """Probe, decide, spend the rest. `probe_passed` has the stored probe results (turn 0 of the
    probe chains: did it pass the feedback tests) so a resumed run decides the same way."""
    passed = dict(probe_passed)
    tails = dict(tails)

    async def record(a: Attempt) -> None:
        await ctx.record(a)
        if a.kind is AttemptKind.COMPLETED:
            passed[(a.task_id, a.chain)] = a.feedback_verdict is Verdict.PASSED
            tails[(a.task_id, a.chain)] = (a, attempt_tokens(a))

    probe = [c for c in range(table.probe) if (task.id, c) not in passed]
    if probe:
        await run_task_chains(dataclasses.replace(ctx, record=record), task, [1] * table.probe,
                              {k: v for k, v in tails.items() if k[1] < table.probe}, per_request)
    if any((task.id, c) not in passed for c in range(table.probe)):
        return  # a probe sample hit an infra error: --resume redoes it, then decides
    score = sum(passed[(task.id, c)] for c in range(table.probe)) / table.probe
    split = parse_split(table.split_for(score), "adaptive table")
    decided = dataclasses.replace(ctx, record=_tagged(ctx.record, {"probe_score": score, "split": split.name}))
    await run_task_chains(decided, task, allocate(table.probe, split.turns, budget), tails, per_request)


def _tagged(record: Callable[[Attempt], Awaitable[None]], info: dict[str, Any]) -> Callable[[Attempt], Awaitable[None]]:
    """A record function that notes the adaptive decision in each attempt's `extra`."""
    async def tagged(a: Attempt) -> None:
        await record(dataclasses.replace(a, extra={**a.extra, "adaptive": info}))
    return tagged
