"""Budget grids: where on the x-axis each strategy's curve has points.

Generations: 1, 2, 4, … up to each strategy's nominal budget (N×M), and every nominal budget.
Tokens: one log-spaced grid shared by all strategies, from the median cost of one attempt to the
largest per-strategy 90th percentile of per-task spend. A strategy's curve stops at its own
90th percentile: beyond it most of its tasks have run out of logged attempts, so a larger
budget would only repeat what was spent (there is no data on what more compute would bring).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

TOKEN_POINTS = 10
SPEND_PERCENTILE = 90


@dataclass(frozen=True)
class Grid:
    unit: str
    budgets: list[float]
    limits: dict[str, float]
    """Per strategy: the largest budget its curve reaches."""

    def has(self, strategy: str, budget: float) -> bool:
        return budget <= self.limits.get(strategy, -1.0) * (1 + 1e-9)

    def mask(self, strategy: str) -> np.ndarray:
        return np.array([self.has(strategy, b) for b in self.budgets], dtype=bool)

    def common(self, strategies: list[str]) -> np.ndarray:
        """Budgets where every one of `strategies` has a point."""
        m = np.ones(len(self.budgets), dtype=bool)
        for s in strategies:
            m &= self.mask(s)
        return m


def generation_grid(nominal: Mapping[str, int]) -> Grid:
    top = max(nominal.values(), default=0)
    powers = [2**i for i in range(top.bit_length()) if 2**i <= top]
    budgets = sorted({*powers, *nominal.values()} - {0})
    return Grid("generations", [float(b) for b in budgets], {s: float(n) for s, n in nominal.items()})


def token_grid(unit: str, attempt_costs: np.ndarray, task_spend: Mapping[str, np.ndarray],
               points: int = TOKEN_POINTS) -> Grid:
    """`attempt_costs`: every completed attempt's cost; `task_spend`: per strategy, each task's total."""
    limits = {s: float(np.percentile(v, SPEND_PERCENTILE)) for s, v in task_spend.items() if len(v)}
    hi = max(limits.values(), default=0.0)
    lo = float(np.median(attempt_costs)) if len(attempt_costs) else 0.0
    if hi <= 0 or lo <= 0:  # the run logged no tokens of this kind
        return Grid(unit, [], limits)
    raw = [hi] if lo >= hi else np.geomspace(lo, hi, points)
    budgets = sorted({float(np.floor(b)) for b in raw} - {0.0}) or [hi]
    return Grid(unit, budgets, limits)
