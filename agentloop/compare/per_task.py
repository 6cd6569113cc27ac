"""Budget grids for a run, and the walk of every (strategy, task) at every budget."""

from __future__ import annotations

import zlib

import numpy as np

from agentloop.compare.budgets import Grid, generation_grid, token_grid
from agentloop.compare.data import RunData
from agentloop.compare.results import PerTask
from agentloop.compare.walk import UNITS, cost, walk_group


def make_grids(data: RunData) -> dict[str, Grid]:
    grids = {"generations": generation_grid({s.name: s.nominal for s in data.strategies})}
    compared = set(data.task_ids)
    for unit in UNITS[1:]:
        every = np.array([cost(c, unit) for (_, t), cands in data.groups.items() if t in compared for c in cands])
        spend = {s.name: np.array([sum(cost(c, unit) for c in data.groups[(s.name, t)]) for t in data.task_ids])
                 for s in data.strategies}
        grids[unit] = token_grid(unit, every, spend)
    return grids


def group_rng(seed: int, strategy: str, task_id: str) -> np.random.Generator:
    """Chain orders depend on (seed, strategy, task) only: adding a strategy or task to a run
    changes no other group's numbers."""
    return np.random.default_rng([seed, zlib.crc32(strategy.encode()), zlib.crc32(task_id.encode())])


def walk_all(data: RunData, grids: dict[str, Grid], permutations: int, seed: int) -> PerTask:
    budgets = {u: np.array(g.budgets, dtype=float) for u, g in grids.items()}
    success: dict[str, dict[str, np.ndarray]] = {u: {} for u in grids}
    oracle: dict[str, dict[str, np.ndarray]] = {u: {} for u in grids}
    for s in data.strategies:
        walks = [walk_group(data.groups[(s.name, t)], budgets, permutations, group_rng(seed, s.name, t),
                            episodes=s.agent)
                 for t in data.task_ids]
        for u, grid in grids.items():
            blank = ~grid.mask(s.name)
            for out, i in ((success, 0), (oracle, 1)):
                m = np.array([w[u][i] for w in walks]).reshape(len(walks), len(grid.budgets))
                m[:, blank] = np.nan
                out[u][s.name] = m
    return PerTask(data.task_ids, data.oracle_scores(), data.predicted_scores(), success, oracle)
