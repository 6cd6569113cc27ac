"""maj@n, weighted@n, best-of-n and pass@n vs n for math runs, resampled from the log.

Every task's first-turn samples are iid draws of the first prompt, so a run of N samples per task
gives every n ≤ N: draw random n-subsets, apply the selection rule to each (majority over canonical
answers, score-weighted vote, highest score, or the oracle "any correct"), and average; 95% CIs
bootstrap over tasks. Per level and subject, the same at the largest n.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from agentloop.metrics import bootstrap_ci

METHODS = ("pass", "majority", "weighted", "best")
"""pass@n is the oracle (any sample correct): reported beside, never a selectable result."""


@dataclass(frozen=True)
class Sample:
    key: str | None
    """Canonical answer (None: no final answer, which never wins a vote)."""
    correct: bool
    score: float | None = None


@dataclass(frozen=True)
class VoteRow:
    group: str  # "all", "level 3", "subject Algebra"
    n: int
    method: str
    mean: float
    ci_low: float
    ci_high: float
    tasks: int


def pick(samples: Sequence[Sample], method: str) -> bool:
    """Whether `method` picks a correct answer from `samples` (ties: the earliest sample)."""
    if method == "pass":
        return any(s.correct for s in samples)
    voters = [(s.key, s) for s in samples if s.key is not None]
    if not voters:
        return False
    if method == "best":
        return max(voters, key=lambda v: v[1].score or 0.0)[1].correct  # max keeps the first of equals
    weight: dict[str, float] = defaultdict(float)
    correct: dict[str, bool] = {}
    for key, s in voters:
        weight[key] += 1.0 if method == "majority" else (s.score or 0.0)
        correct[key] = correct.get(key, False) or s.correct
    return correct[max(weight, key=weight.__getitem__)]  # dicts keep first-seen order for ties


def expected(samples: Sequence[Sample], n: int, method: str, draws: int, rng: np.random.Generator) -> float:
    """Mean of `pick` over random n-subsets (the whole set once when n = len(samples))."""
    if n >= len(samples):
        return float(pick(samples, method))
    hits = 0
    for _ in range(draws):
        idx = sorted(rng.choice(len(samples), size=n, replace=False))
        hits += pick([samples[i] for i in idx], method)
    return hits / draws


def ns_for(n_max: int) -> list[int]:
    ns = [1]
    while ns[-1] * 2 <= n_max:
        ns.append(ns[-1] * 2)
    return ns if ns[-1] == n_max else [*ns, n_max]


def vote_rows(by_task: Mapping[str, Sequence[Sample]], metadata: Mapping[str, Mapping[str, object]],
              draws: int = 50, seed: int = 0, methods: Sequence[str] = METHODS) -> list[VoteRow]:
    """Curves over n for all tasks, then each level and subject at the largest common n."""
    usable = {t: s for t, s in by_task.items() if s}
    if not usable:
        return []
    rng = np.random.default_rng(seed)
    rows = []
    n_all = min(len(s) for s in usable.values())
    for n in ns_for(n_all):
        rows += _rows("all", usable, n, methods, draws, rng)
    groups: dict[str, list[str]] = defaultdict(list)
    for t in usable:
        meta = metadata.get(t, {})
        for field in ("level", "subject"):
            if meta.get(field) is not None:
                groups[f"{field} {meta[field]}"].append(t)
    for name in sorted(groups):
        rows += _rows(name, {t: usable[t] for t in groups[name]}, n_all, methods, draws, rng)
    return rows


def _rows(group: str, by_task: Mapping[str, Sequence[Sample]], n: int, methods: Sequence[str], draws: int,
          rng: np.random.Generator) -> list[VoteRow]:
    out = []
    for method in methods:
        values = np.array([expected(s, n, method, draws, rng) for s in by_task.values()])
        lo, hi = bootstrap_ci(values)
        out.append(VoteRow(group, n, method, float(values.mean()), lo, hi, len(values)))
    return out
