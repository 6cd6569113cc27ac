"""Run dirs as export sources: validated up front, then streamed one task at a time.

Each store is read in task order (its task index), and the runs' streams are merged by task id,
so a task's attempts from every run arrive together and nothing bigger than one task is held.
Messages stay in the store until a record needs them.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

from agentloop.errors import RunDirError
from agentloop.loop import first_messages
from agentloop.store import AttemptStore
from agentloop.tasks.model import Suite, Task


class Row(NamedTuple):
    """One completed attempt as export reads it (store.EXPORT_COLUMNS, after the run's index)."""

    run: int
    id: int
    strategy: str
    task_id: str
    chain: int
    turn: int
    messages_hash: str
    completion: str | None
    code: str | None
    prompt_tokens: int | None
    cached_prompt_tokens: int | None
    completion_tokens: int | None
    verdict: str | None
    feedback_verdict: str | None
    extra: str

    @property
    def chain_key(self) -> tuple[int, str, int]:
        return self.run, self.strategy, self.chain

    def extra_json(self) -> dict[str, Any]:
        value = json.loads(self.extra or "{}")
        return value if isinstance(value, dict) else {}


@dataclass
class RunSource:
    index: int
    run_dir: Path
    store: AttemptStore
    run_id: str
    model: str
    suite: Suite
    sampling: dict[str, Any]
    tasks: dict[str, Task]
    finished: bool
    _prompts: dict[str, tuple[list[dict[str, Any]], str]] = field(default_factory=dict)

    def prompt(self, row: Row) -> list[dict[str, Any]]:
        """The turn-0 prompt this run sent for the row's task: its stored messages up to the first
        user turn (later turns extend it unchanged); a graded run (no messages) gets the suite's."""
        return self._prompt(row)[0]

    def prompt_key(self, row: Row) -> str:
        """Equal for runs that sent the same turn-0 prompt (DPO pairs share one)."""
        return self._prompt(row)[1]

    def _prompt(self, row: Row) -> tuple[list[dict[str, Any]], str]:
        if row.task_id not in self._prompts:
            self._prompts.clear()  # tasks arrive one at a time
            messages = self.store.messages(row.messages_hash)
            users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
            prompt = messages[: users[0] + 1] if users else first_messages(self.suite, self.task(row))
            self._prompts[row.task_id] = prompt, json.dumps(prompt, sort_keys=True)
        return self._prompts[row.task_id]

    def task(self, row: Row) -> Task:
        try:
            return self.tasks[row.task_id]
        except KeyError:
            raise RunDirError(f"{self.store.path}: attempt {row.id} is for task {row.task_id!r:.80}, "
                              "which the run's task table lacks (corrupt attempt store)") from None

    def rows(self) -> Iterator[Row]:
        for r in self.store.iter_completed_by_task():
            yield Row(self.index, *r)


def open_runs(run_dirs: Sequence[Path]) -> list[RunSource]:
    """Open and check every run dir before anything is written (a bad one is a one-line error)."""
    seen: dict[Path, Path] = {}
    sources: list[RunSource] = []
    try:
        for i, run_dir in enumerate(run_dirs):
            resolved = run_dir.resolve()
            if resolved in seen:
                raise RunDirError(f"{run_dir}: given twice (as {seen[resolved]}); each run is exported once")
            seen[resolved] = run_dir
            sources.append(_open(i, run_dir))
    except BaseException:
        close_runs(sources)
        raise
    return sources


def close_runs(sources: Sequence[RunSource]) -> None:
    for s in sources:
        s.store.close()


def _open(index: int, run_dir: Path) -> RunSource:
    store = AttemptStore.open(run_dir)
    try:
        meta = {k: store.get_meta(k) for k in ("run_id", "config", "suite", "finished_at")}
        for key in ("run_id", "config", "suite"):
            if meta[key] is None:
                raise RunDirError(f"{store.path}: no {key} recorded (a half-written run dir, or one from an older "
                                  "agentloop); nothing to export")
        config, suite = meta["config"], meta["suite"]
        if not isinstance(config, dict) or not isinstance(suite, dict):
            raise RunDirError(f"{store.path}: meta 'config'/'suite' are not JSON objects (corrupt attempt store)")
        try:
            suite_obj = Suite(**{**suite, "skip": tuple(suite.get("skip", ()))})
        except TypeError as e:
            raise RunDirError(f"{store.path}: meta 'suite' does not describe a suite ({e})") from None
        tasks = {t.id: t for t, _ in store.tasks()}
        if not tasks:
            raise RunDirError(f"{store.path}: no tasks recorded (half-written run dir); nothing to export")
        return RunSource(
            index=index, run_dir=run_dir, store=store, run_id=str(meta["run_id"]),
            model=str((config.get("model") or {}).get("model") or ""), suite=suite_obj,
            sampling=dict(config.get("sampling") or {}), tasks=tasks, finished=meta["finished_at"] is not None,
        )
    except BaseException:
        store.close()
        raise


def task_groups(sources: Sequence[RunSource]) -> Iterator[tuple[str, list[Row]]]:
    """(task id, its completed attempts from every run), in task-id order; within a task, runs in
    the order given, then the order attempts were recorded."""
    task_of = attrgetter("task_id")
    merged = sources[0].rows() if len(sources) == 1 else heapq.merge(*(s.rows() for s in sources), key=task_of)
    for task_id, rows in groupby(merged, key=task_of):
        yield task_id, list(rows)
