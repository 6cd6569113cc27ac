"""The compute-optimal curve by cross-validation (Snell et al. 2024, arXiv 2408.03314, §3).

Per budget, each task gets the fixed strategy that did best on tasks of its difficulty bin, where
both the bin edges and the per-bin choice come from the OTHER folds: nothing is chosen on the
tasks being scored, so the curve is an honest estimate of what choosing by difficulty buys.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agentloop.compare.bins import best_per_bin, bins_of, quantile_edges


@dataclass(frozen=True)
class CrossValidated:
    success: np.ndarray
    """tasks × budgets: each task's success under the strategy chosen for it."""
    choice: np.ndarray
    """tasks × budgets: index of that strategy."""


def folds_of(n_tasks: int, folds: int, seed: int) -> list[np.ndarray]:
    """min(folds, n_tasks) disjoint folds of task indices, from a seeded permutation."""
    perm = np.random.default_rng(seed).permutation(n_tasks)
    return [f for f in np.array_split(perm, min(folds, n_tasks)) if len(f)]


def cross_validate(stack: np.ndarray, scores: np.ndarray, bins: int, folds: int, seed: int) -> CrossValidated | None:
    """`stack`: strategies × tasks × budgets of expected success, rows in tie-break order;
    `scores`: the difficulty score per task. None when there are fewer than 2 folds."""
    n_tasks = stack.shape[1]
    parts = folds_of(n_tasks, folds, seed)
    if len(parts) < 2 or stack.shape[0] == 0:
        return None
    success = np.empty(stack.shape[1:])
    choice = np.empty(stack.shape[1:], dtype=int)
    for test in parts:
        train = np.setdiff1d(np.arange(n_tasks), test)
        edges = quantile_edges(scores[train], bins)
        best = best_per_bin(stack[:, train, :], bins_of(scores[train], edges), len(edges) + 1)
        chosen = best[bins_of(scores[test], edges)]  # every training bin has tasks: no -1 here
        choice[test] = chosen
        success[test] = np.take_along_axis(stack[:, test, :], chosen[None], axis=0)[0]
    return CrossValidated(success, choice)
