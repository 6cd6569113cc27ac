"""The table an adaptive run reads: difficulty-bin edges of the feedback probe and the best fixed
strategy per bin, at the largest generations budget every fixed strategy reaches.

An adaptive run probes a task (turn 0 of its first `probe` chains, feedback tests only), computes
the feedback pass rate, and looks up `strategy_for(table, score)`. `adaptive_table` fits the table
on all tasks of a comparison (written to compare.json as "adaptive"); `fold_table` fits it on a
subset, e.g. the first fold of a run, so the remaining tasks can be run adaptively and scored
without having informed the choice.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from agentloop.compare.bins import best_per_bin, bin_of, bins_of, quantile_edges
from agentloop.compare.results import Comparison
from agentloop.errors import ConfigError


def fold_table(source: Comparison | Path, task_ids: Iterable[str], *, probe: int | None = None,
               budget: int | None = None) -> dict[str, Any]:
    """The adaptive table fitted on `task_ids` only. `source` is a built Comparison, or a run dir
    (compared first, with `probe` probe chains and default settings otherwise). `budget`: the
    generations budget to choose at (default: the largest that every fixed strategy reaches).

    Returns {"unit": "generations", "budget": B, "probe": P, "edges": [...], "best": {"0": name, ...},
    "strategies": [fixed strategies, tie-break order], "tasks": n}; budget None and best {} when
    the run has no fixed strategy. Agent strategies are not in the table (an adaptive run
    allocates revision chains): it chooses among `Comparison.adaptable`. Tasks the comparison
    does not hold (no completed attempt in some strategy) are left out; "tasks" counts those used.
    ConfigError for a budget some fixed strategy does not reach, or a probe other than the one the
    Comparison was built with."""
    if not isinstance(source, Comparison):
        from agentloop.compare.build import build_comparison

        source = build_comparison(Path(source), **({} if probe is None else {"probe": probe}))
    c = source
    known = set(c.per_task.task_ids)
    ids = [t for t in task_ids if t in known]
    if probe is not None and probe != c.settings["probe"]:
        raise ConfigError(f"{c.run_dir}: compared with a probe of {c.settings['probe']} chains, not {probe}")
    names = c.adaptable
    full = _budget(c, budget, names)
    table: dict[str, Any] = {"unit": "generations", "budget": None if full is None else int(full),
                             "probe": c.settings["probe"], "edges": [], "best": {}, "strategies": names,
                             "tasks": len(ids)}
    if full is None or not ids:
        return table
    rows = c.per_task.rows(ids)
    col = c.grids["generations"].budgets.index(full)
    stack = np.stack([c.per_task.success["generations"][s][rows, col] for s in names])[:, :, None]
    scores = c.per_task.predicted_score[rows]
    edges = quantile_edges(scores, c.settings["bins"])
    best = best_per_bin(stack, bins_of(scores, edges), len(edges) + 1)[:, 0]
    table["edges"] = edges
    table["best"] = {str(b): names[i] for b, i in enumerate(best) if i >= 0}
    return table


def _budget(c: Comparison, budget: int | None, names: list[str]) -> float | None:
    if budget is None or not names:
        return c.full_budget(strategies=names) if budget is None else None
    grid = c.grids["generations"]
    if not (float(budget) in grid.budgets and all(grid.has(s, budget) for s in names)):
        reach = ", ".join(f"{s} {grid.limits[s]:g}" for s in names)
        raise ConfigError(f"{c.run_dir}: not every fixed split reaches {budget} generations per task ({reach})")
    return float(budget)


def adaptive_table(c: Comparison) -> dict[str, Any]:
    """`fold_table` over every task of the comparison."""
    return fold_table(c, c.per_task.task_ids)


def strategy_for(table: dict[str, Any], score: float) -> str:
    """The strategy an adaptive run uses for a task whose probe passed the feedback tests at rate `score`."""
    return table["best"][str(bin_of(score, table["edges"]))]
