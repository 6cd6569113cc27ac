"""Difficulty bins and the best fixed strategy per bin.

A task's score is a pass rate (higher = easier). Edges are quantiles of the scores, taken at
scores that occur (so no bin is empty), and a task goes to bin i when edges[i-1] <= score <
edges[i]: bin 0 holds the hardest tasks (the lowest scores).
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

TIE = 1e-12


def bin_of(score: float, edges: list[float]) -> int:
    return bisect_right(edges, score)


def n_bins(n_tasks: int, bins: int) -> int:
    """At most `bins`, and at least two tasks per bin on average."""
    return max(1, min(bins, n_tasks // 2))


def quantile_edges(scores: np.ndarray, bins: int) -> list[float]:
    """Up to n_bins(len(scores), bins) - 1 edges; fewer when scores tie (fewer, fuller bins)."""
    nb = n_bins(len(scores), bins)
    if nb < 2 or len(scores) == 0:
        return []
    qs = np.quantile(scores, np.arange(1, nb) / nb, method="inverted_cdf")
    return sorted({float(q) for q in qs if q > scores.min()})


def bins_of(scores: np.ndarray, edges: list[float]) -> np.ndarray:
    return np.array([bin_of(float(s), edges) for s in scores], dtype=int)


def best_index(success: np.ndarray) -> np.ndarray:
    """Per column of a strategies × budgets matrix of mean success, the best row. Rows come in
    tie-break order (fewer turns, then name), so a tie goes to the earlier row."""
    return np.argmax(np.round(success / TIE) * TIE, axis=0) if success.size else np.zeros(0, dtype=int)


def best_per_bin(success: np.ndarray, bins: np.ndarray, n: int) -> np.ndarray:
    """`success`: strategies × tasks × budgets. Returns bins × budgets of best-row indices, from the
    tasks in each bin (-1 for a bin without tasks)."""
    out = np.full((n, success.shape[2]), -1, dtype=int)
    for b in range(n):
        members = bins == b
        if members.any():
            out[b] = best_index(success[:, members, :].mean(axis=1))
    return out
