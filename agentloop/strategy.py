"""Strategies decide which (task, chains, turn) requests to make.

Parallel sampling: n independent chains of one turn per task, sent as requests of up to
`samples_per_request` choices each (vLLM prefills the prompt once per request). Anything already
completed in the store is left out, which is all `--resume` needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentloop.tasks.model import Task

PARALLEL = "parallel"


@dataclass(frozen=True)
class Request:
    task: Task
    chains: tuple[int, ...]
    turn: int
    seed: int | None


def parallel_plan(
    tasks: list[Task], samples: int, per_request: int, done: set[tuple[str, int, int]],
    seed: int | None = None,
) -> list[Request]:
    plan = []
    for ti, task in enumerate(tasks):
        missing = [c for c in range(samples) if (task.id, c, 0) not in done]
        for i in range(0, len(missing), per_request):
            chunk = tuple(missing[i : i + per_request])
            # Seed from the slot, not the request order, so a resumed run asks the same thing.
            req_seed = None if seed is None else seed + ti * samples + chunk[0]
            plan.append(Request(task, chunk, 0, req_seed))
    return plan
