"""`agentloop grade`: grade completions produced elsewhere into a normal run dir.

Rows are evalplus-style: `task_id` plus `completion` (continues the prompt: the prompt is put
above it) or `solution` (a whole program, graded as is: nothing is put above it, so a solution
that uses `List` without importing it fails, as in evalplus and plain Python). The i-th row of a
task becomes chain i, turn 0, so `report` (and later `compare`/`export`) read the run like any other.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import anyio
from rich.console import Console

from agentloop import logs
from agentloop.attempt import Attempt
from agentloop.config import RunConfig, validate
from agentloop.errors import DataError
from agentloop.report import Report, write_outputs
from agentloop.runner import create_store, new_run_dir
from agentloop.sandbox import DockerPool
from agentloop.sandbox.types import Sandbox
from agentloop.store import AttemptStore
from agentloop.strategy import GRADE
from agentloop.tasks.loaders import read_jsonl
from agentloop.tasks.model import Task
from agentloop.tasks.suites import load_suite
from agentloop.verify import calibrate_time_limits, graded_attempt


def load_samples(path: Path, known: set[str]) -> list[tuple[str, str, bool]]:
    """(task_id, code, is_solution) per row, in file order; errors name file:line and the field.
    `is_solution`: the row's code is a `solution` (a whole program), not a `completion`."""
    samples = []
    for where, row in read_jsonl(path):
        task_id = row.get("task_id")
        if "task_id" not in row:
            raise DataError(f"{where}: missing field 'task_id' (expected a string)")
        if not isinstance(task_id, str):
            raise DataError(f"{where}: field 'task_id' must be a string, got {task_id!r:.60}")
        if task_id not in known:
            raise DataError(f"{where}: task_id {task_id!r:.60} is not in the suite")
        key = "solution" if "solution" in row else "completion"
        code = row.get(key)
        if key not in row:
            raise DataError(f"{where}: expected a string field 'completion' or 'solution', got neither")
        if not isinstance(code, str):
            raise DataError(f"{where}: field '{key}' must be a string, got {code!r:.60}")
        samples.append((task_id, code, key == "solution"))
    if not samples:
        raise DataError(f"{path}: no samples (empty file); expected one JSON object per line")
    return samples


async def grade_file(cfg: RunConfig, samples_path: Path, console: Console | None = None) -> Report:
    console = console or Console(stderr=True)
    validate(cfg)
    suite, all_tasks = await anyio.to_thread.run_sync(load_suite, cfg.suite, cfg.data)
    by_id = {t.id: t for t in all_tasks}
    samples = await anyio.to_thread.run_sync(load_samples, samples_path, set(by_id))
    chains: dict[str, int] = {}
    slots = []
    for task_id, code, is_solution in samples:
        slots.append((by_id[task_id], chains.get(task_id, 0), code, is_solution))
        chains[task_id] = chains.get(task_id, 0) + 1
    tasks = [by_id[t] for t in chains]
    cfg = replace(cfg, samples=max(chains.values()))
    run_dir, run_id = new_run_dir(cfg)
    async with DockerPool.start(cfg.sandbox, run_id) as pool:
        store: AttemptStore = await anyio.to_thread.run_sync(create_store, run_dir, run_id, cfg, tasks, suite)
        try:
            await anyio.to_thread.run_sync(store.set_meta, "graded_file", str(samples_path))
            await anyio.to_thread.run_sync(store.set_meta, "graded_rows", len(samples))
            with logs.to_file(run_dir / "log.jsonl"):
                limits = await calibrate_time_limits(pool, tasks, suite, cfg.sandbox.image)
                await anyio.to_thread.run_sync(store.put_tasks, tasks, limits)
                async with store.writer() as writer, anyio.create_task_group() as tg:
                    for task, chain, text, is_solution in slots:
                        tg.start_soon(_grade_one, pool, writer.add, task, chain, text, is_solution, limits[task.id])
        finally:
            store.close()
    return await anyio.to_thread.run_sync(write_outputs, run_dir)


async def _grade_one(sandbox: Sandbox, add: Callable[[Attempt], Awaitable[None]], task: Task, chain: int,
                     text: str, is_solution: bool, limit: float) -> None:
    """A `solution` is graded as is (as_is: no prompt above it, no code extraction); a
    `completion` continues the task's prompt."""
    extra = {"time_limit_s": limit, "field": "solution" if is_solution else "completion"}
    await add(await graded_attempt(sandbox, task, text, limit, as_is=is_solution, strategy=GRADE, chain=chain,
                                   turn=0, messages=[], started_at=time.time(), extra=extra))
