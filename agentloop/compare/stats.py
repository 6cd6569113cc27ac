"""Means with bootstrap CIs over tasks, pass@k of the turn-0 samples, and the fail@k power law."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from agentloop.metrics import PassAtK, TaskCounts, pass_at_ks


@dataclass(frozen=True)
class Point:
    budget: float
    mean: float
    ci_low: float
    ci_high: float


def bootstrap_points(values: np.ndarray, budgets: list[float], resamples: int, seed: int) -> list[Point]:
    """Per column of a tasks × budgets matrix: the mean and a 95% percentile CI from resampling tasks
    with replacement. Columns that hold NaN (no data at that budget) get no point. Every curve uses
    the same resampled task sets for a given seed, so curves of one run are paired."""
    keep = ~np.isnan(values).any(axis=0) if values.size else np.zeros(len(budgets), dtype=bool)
    if not keep.any():
        return []
    v = values[:, keep]
    n = v.shape[0]
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples)
    means = weights @ v / n
    lo, hi = np.percentile(means, [2.5, 97.5], axis=0)
    kept = [b for b, k in zip(budgets, keep, strict=True) if k]
    return [Point(b, float(m), float(min(low, m)), float(max(high, m)))
            for b, m, low, high in zip(kept, v.mean(axis=0), lo, hi, strict=True)]


def powers_of_two(n: int) -> list[int]:
    """1, 2, 4, … up to n, and n itself."""
    ks = [2**i for i in range(max(1, n).bit_length()) if 2**i <= n]
    return ks if not ks or ks[-1] == n else [*ks, n]


def pass_at_k_rows(counts: dict[str, TaskCounts]) -> list[PassAtK]:
    usable = [tc.n for tc in counts.values() if tc.n > 0]
    return pass_at_ks(counts, powers_of_two(max(usable))) if usable else []


@dataclass(frozen=True)
class PowerLaw:
    """Coverage c(k) ≈ exp(-a·k^(-b)) (Large Language Monkeys, Brown et al. 2024): fail@k = 1 - c(k)."""

    a: float | None
    b: float | None
    points: int
    """pass@k points with 0 < coverage < 1 that the fit used."""
    fitted: list[tuple[int, float]]
    """(k, fitted coverage) at each k of the pass@k table."""


def fit_power_law(ks: list[int], coverage: list[float]) -> PowerLaw:
    """Least squares of log(-log c) = log a - b·log k over the points with 0 < c < 1."""
    pts = [(k, c) for k, c in zip(ks, coverage, strict=True) if 0 < c < 1]
    if len(pts) < 2 or len({k for k, _ in pts}) < 2:
        return PowerLaw(None, None, len(pts), [])
    x = np.log([k for k, _ in pts])
    y = np.log([-math.log(c) for _, c in pts])
    slope, intercept = np.polyfit(x, y, 1)
    a, b = float(math.exp(intercept)), float(-slope)
    return PowerLaw(a, b, len(pts), [(k, math.exp(-a * k ** (-b))) for k in ks])
