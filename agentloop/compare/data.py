"""Read a run dir's store once, streaming, into the small records the comparison works from.

Each completed attempt becomes a `Candidate` (selection.py) carrying its share of its request's
prompt tokens. Infra errors are not generations and not wrong answers: they only count as
siblings when a request's prompt tokens are split. An agent strategy's attempts are episode steps
(`agent:NxM`, StrategyInfo.agent): its step 0 is a first action, not an iid sample of an answer
to the first prompt, so agent steps are left out of the turn-0 and probe counts.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeGuard

import numpy as np

from agentloop.attempt import Attempt, AttemptKind
from agentloop.errors import AgentloopError, RunDirError
from agentloop.metrics import TaskCounts
from agentloop.sandbox.types import Verdict
from agentloop.selection import Candidate, code_key
from agentloop.store import AttemptStore
from agentloop.strategy import ADAPTIVE, is_agent, split_of

GroupKey = tuple[str, str]  # (strategy, task_id)
PARALLEL_KEYS = 2000  # distinct codes per extra process


@dataclass(frozen=True)
class StrategyInfo:
    name: str
    chains: int | None
    """N (None for adaptive, whose split varies by task)."""
    turns: int | None
    """M, the most turns one chain may take."""
    nominal: int
    """Generations budget per task: N×M, or adaptive's configured (or largest logged) budget."""
    attempts: int
    """Completed attempts (infra errors excluded)."""
    infra_errors: int
    agent: bool = False
    """Agent episodes (`agent:NxM`): chains are episodes, turns are steps, and only an episode's
    last included step is a candidate (walk.walk_group's `episodes`)."""

    @property
    def adaptive(self) -> bool:
        return self.chains is None


@dataclass
class RunData:
    run_dir: Path
    config: dict[str, Any]
    task_ids: list[str]
    """Tasks with completed attempts in every strategy: only these are compared."""
    excluded_tasks: list[str]
    strategies: list[StrategyInfo]
    groups: dict[GroupKey, list[Candidate]]
    """Completed attempts per (strategy, task), sorted by (chain, turn)."""
    turn0: dict[str, TaskCounts]
    """Turn-0 attempts of all non-agent strategies per task: iid samples of the first prompt."""
    probe: dict[str, TaskCounts]
    """Turn-0 attempts with chain < probe that ran the feedback tests; c = feedback passes."""
    feedback_checked: Counter[str]
    """Per strategy: completed attempts that ran the feedback tests."""

    @property
    def fixed(self) -> list[StrategyInfo]:
        """Fixed N:M strategies, in tie-break order (fewer turns first, then name)."""
        return sorted((s for s in self.strategies if not s.adaptive), key=lambda s: (s.turns, s.name))

    def oracle_scores(self) -> np.ndarray:
        """pass@1 of all turn-0 attempts (grading tests): difficulty as only an oracle knows it (0 for a
        task with none, e.g. in a run of agent strategies alone)."""
        counts = [self.turn0.get(t, TaskCounts()) for t in self.task_ids]
        return np.array([tc.c / tc.n if tc.n else 0.0 for tc in counts])

    def predicted_scores(self) -> np.ndarray:
        """Feedback-test pass rate of the probe attempts (0 where none ran the feedback tests)."""
        counts = [self.probe.get(t, TaskCounts()) for t in self.task_ids]
        return np.array([tc.c / tc.n if tc.n else 0.0 for tc in counts])


class Row(NamedTuple):
    """The fields of a completed attempt the comparison reads (no messages, completion or output)."""

    strategy: str
    task_id: str
    chain: int
    turn: int
    request_id: str | None
    code: str | None
    feedback_verdict: Verdict | None
    passed: bool
    prompt_tokens: int | None
    completion_tokens: int | None

    @classmethod
    def of(cls, a: Attempt) -> Row:
        return cls(a.strategy, a.task_id, a.chain, a.turn, a.request_id, a.code, a.feedback_verdict, a.passed,
                   a.prompt_tokens, a.completion_tokens)


@dataclass
class _Scan:
    rows: list[Row]
    siblings: Counter[str]
    infra: Counter[str]


def _scan(store: AttemptStore) -> _Scan:
    rows: list[Row] = []
    siblings: Counter[str] = Counter()
    infra: Counter[str] = Counter()
    for a in store.iter_attempts():
        if a.request_id:
            siblings[a.request_id] += 1
        if a.kind is AttemptKind.INFRA_ERROR:
            infra[a.strategy] += 1
        else:
            rows.append(Row.of(a))
    return _Scan(rows, siblings, infra)


def has_code(code: str | None) -> TypeGuard[str]:
    return bool(code and code.strip())


def code_keys(codes: Iterable[str]) -> dict[str, str]:
    """`code_key` of each distinct code. The AST normalization costs ~0.25 ms a code, most of a big
    comparison's time, so many codes are spread over processes."""
    unique = list(set(codes))
    workers = min(os.cpu_count() or 1, len(unique) // PARALLEL_KEYS)
    # Forked workers start at once; fork is only safe in a single-threaded process (e.g. the CLI).
    if workers > 1 and sys.platform == "linux" and threading.active_count() == 1:
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                return dict(zip(unique, pool.map(code_key, unique, chunksize=512), strict=True))
        except (OSError, BrokenProcessPool):
            pass  # no processes to be had here: one at a time
    return {c: code_key(c) for c in unique}


def to_candidate(a: Attempt | Row, siblings: int, keys: Mapping[str, str] | None = None) -> Candidate:
    """Missing or empty code gets a key of its own: attempts without code never win a vote together."""
    if has_code(a.code):
        key = keys[a.code] if keys is not None and a.code in keys else code_key(a.code)
    else:
        key = f"no-code/{a.chain}/{a.turn}"
    return Candidate(
        chain=a.chain, turn=a.turn, code_key=key, feedback_passed=a.feedback_verdict is Verdict.PASSED,
        passed=a.passed, prompt_tokens=(a.prompt_tokens or 0) / max(1, siblings),
        completion_tokens=a.completion_tokens or 0,
    )


def load_run(run_dir: Path, probe: int) -> RunData:
    """Everything the comparison needs from `run_dir`'s store (RunDirError if it has nothing to compare)."""
    store = AttemptStore.open(run_dir)
    try:
        config = store.get_meta("config", {}) or {}
        order = [t.id for t, _ in store.tasks()]
        scan = _scan(store)
    finally:
        store.close()
    if not scan.rows:
        raise RunDirError(f"{run_dir}: no completed attempts to compare")
    groups: dict[GroupKey, list[Candidate]] = defaultdict(list)
    turn0: dict[str, TaskCounts] = defaultdict(TaskCounts)
    probes: dict[str, TaskCounts] = defaultdict(TaskCounts)
    checked: Counter[str] = Counter()
    keys = code_keys(a.code for a in scan.rows if has_code(a.code))
    for a in scan.rows:
        checked[a.strategy] += a.feedback_verdict is not None
        siblings = scan.siblings[a.request_id] if a.request_id else 1
        groups[(a.strategy, a.task_id)].append(to_candidate(a, siblings, keys))
        if a.turn == 0 and not is_agent(a.strategy):
            turn0[a.task_id].n += 1
            turn0[a.task_id].c += a.passed
            if a.chain < probe and a.feedback_verdict is not None:
                probes[a.task_id].n += 1
                probes[a.task_id].c += a.feedback_verdict is Verdict.PASSED
    for cands in groups.values():
        cands.sort(key=lambda c: (c.chain, c.turn))
    strategies = _strategies(groups, config, scan.infra)
    task_ids, excluded = _common_tasks(groups, [s.name for s in strategies], order)
    if not task_ids:
        names = ", ".join(s.name for s in strategies)
        raise RunDirError(f"{run_dir}: no task has completed attempts in every strategy ({names}); nothing to compare")
    return RunData(run_dir, config, task_ids, excluded, strategies, dict(groups), dict(turn0), dict(probes), checked)


def _common_tasks(groups: dict[GroupKey, list[Candidate]], names: list[str],
                  order: list[str]) -> tuple[list[str], list[str]]:
    seen = {t for _, t in groups}
    ordered = [t for t in order if t in seen] + sorted(seen - set(order))
    common = [t for t in ordered if all((s, t) in groups for s in names)]
    return common, [t for t in ordered if t not in set(common)]


def _strategies(groups: dict[GroupKey, list[Candidate]], config: dict[str, Any],
                infra: Counter[str]) -> list[StrategyInfo]:
    by_name: dict[str, list[list[Candidate]]] = defaultdict(list)
    for (name, _), cands in groups.items():
        by_name[name].append(cands)
    return [_strategy_info(name, tasks, config, infra[name]) for name, tasks in sorted(by_name.items())]


def _strategy_info(name: str, tasks: list[list[Candidate]], config: dict[str, Any], infra: int) -> StrategyInfo:
    attempts = sum(len(c) for c in tasks)
    most = max(len(c) for c in tasks)
    if name == ADAPTIVE:
        unit = config.get("budget_unit") or "generations"
        budget = config.get("budget") if unit == "generations" else None
        return StrategyInfo(name, None, None, int(budget or most), attempts, infra)
    try:
        split = split_of(name, int(config.get("samples") or 0))
    except (AgentloopError, ValueError):
        split = None  # a name no split stands for (e.g. `grade`): the shape the data has
    if split is None or split.generations < 1:
        chains = max(len({c.chain for c in cands}) for cands in tasks)
        turns = max(c.turn for cands in tasks for c in cands) + 1
        return StrategyInfo(name, chains, turns, max(most, chains * turns), attempts, infra, is_agent(name))
    return StrategyInfo(name, split.chains, split.turns, split.generations, attempts, infra, split.agent)
