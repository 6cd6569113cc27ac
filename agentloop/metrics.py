"""pass@k (Chen et al. 2021, unbiased) with bootstrap confidence intervals over tasks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from agentloop.attempt import Attempt, AttemptKind


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k) / C(n, k), computed as a stable product."""
    if k > n:
        raise ValueError(f"pass@{k} needs n >= k samples, got n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def default_ks(n_max: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, 100, ... up to n_max, and n_max itself (coverage)."""
    ks, base = [], 1
    while base <= n_max:
        ks += [k for k in (base, 2 * base, 5 * base) if k <= n_max]
        base *= 10
    return ks if not ks or ks[-1] == n_max else [*ks, n_max]


@dataclass
class TaskCounts:
    n: int = 0  # completed attempts (infra errors excluded)
    c: int = 0  # of which passed
    infra_errors: int = 0


def count_by_task(attempts: Iterable[Attempt], task_ids: Iterable[str] = ()) -> dict[str, TaskCounts]:
    """Per-task n/c for first-turn samples (parallel sampling) plus infra errors."""
    counts: dict[str, TaskCounts] = {t: TaskCounts() for t in task_ids}
    for a in attempts:
        tc = counts.setdefault(a.task_id, TaskCounts())
        if a.kind is AttemptKind.INFRA_ERROR:
            tc.infra_errors += 1
        else:
            tc.n += 1
            tc.c += a.passed
    return counts


@dataclass(frozen=True)
class PassAtK:
    k: int
    mean: float
    ci_low: float
    ci_high: float
    tasks: int  # tasks with n >= k that the mean is over


def bootstrap_ci(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile CI of the mean, resampling tasks with replacement."""
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(resamples, len(values)))
    means = values[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def pass_at_ks(counts: dict[str, TaskCounts], ks: list[int] | None = None) -> list[PassAtK]:
    usable = [tc for tc in counts.values() if tc.n > 0]
    if not usable:
        return []
    ks = ks or default_ks(max(tc.n for tc in usable))
    rows = []
    for k in ks:
        vals = np.array([pass_at_k(tc.n, tc.c, k) for tc in usable if tc.n >= k])
        if len(vals) == 0:
            continue
        lo, hi = bootstrap_ci(vals)
        rows.append(PassAtK(k, float(vals.mean()), lo, hi, len(vals)))
    return rows
