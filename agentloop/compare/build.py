"""`build_comparison`: every number `agentloop compare` reports, from a run dir's store alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agentloop.compare.adaptive import adaptive_table
from agentloop.compare.bins import best_index, bins_of, quantile_edges
from agentloop.compare.budgets import Grid
from agentloop.compare.data import RunData, load_run
from agentloop.compare.optimal import cross_validate
from agentloop.compare.per_task import make_grids, walk_all
from agentloop.compare.results import BinRow, BinTable, Comparison, Curve, OptimalCurve, PerTask
from agentloop.compare.stats import bootstrap_points, fit_power_law, pass_at_k_rows
from agentloop.errors import ConfigError
from agentloop.metrics import TaskCounts
from agentloop.report import build_report

KINDS = ("predicted", "oracle")


def build_comparison(
    run_dir: Path, *, bins: int = 5, folds: int = 5, probe: int = 2, permutations: int = 50,
    resamples: int = 1000, seed: int = 0,
) -> Comparison:
    """Compare the strategies of one run at equal compute. Raises RunDirError for a path that is
    not a run dir or a run with no completed attempts, ConfigError for a setting below 1."""
    settings = {"bins": bins, "folds": folds, "probe": probe, "permutations": permutations,
                "resamples": resamples, "seed": seed}
    for name, value in settings.items():
        if name != "seed" and value < 1:
            raise ConfigError(f"--{name} must be an integer >= 1, got {value}")
    data = load_run(Path(run_dir), probe)
    grids = make_grids(data)
    per_task = walk_all(data, grids, permutations, seed)
    fixed = [s.name for s in data.fixed]
    scores = {"predicted": per_task.predicted_score, "oracle": per_task.oracle_score}
    pass_rows = pass_at_k_rows({t: data.turn0.get(t, TaskCounts()) for t in data.task_ids})
    c = Comparison(
        run_dir=str(run_dir), suite=str(data.config.get("suite", "")),
        model=str((data.config.get("model") or {}).get("model", "")), settings=settings,
        tasks=len(data.task_ids), excluded_tasks=data.excluded_tasks, strategies=data.strategies, grids=grids,
        success=_curves(per_task.success, data, grids, resamples, seed),
        oracle=_curves(per_task.oracle, data, grids, resamples, seed),
        compute_optimal={k: _optimal(k, per_task, scores[k], fixed, grids, settings) for k in KINDS},
        bins={k: _bin_table(k, per_task, scores[k], fixed, grids, bins) for k in KINDS},
        pass_at_k=pass_rows, power_law=fit_power_law([r.k for r in pass_rows], [r.mean for r in pass_rows]),
        per_task=per_task, notes=_notes(data),
    )
    c.adaptive = adaptive_table(c)
    c.math = build_report(Path(run_dir)).math  # maj@n, weighted@n, best-of-n for math runs
    return c


def _curves(by_unit: dict[str, dict[str, np.ndarray]], data: RunData, grids: dict[str, Grid], resamples: int,
            seed: int) -> dict[str, list[Curve]]:
    return {u: [Curve(s.name, u, s.adaptive, bootstrap_points(by_unit[u][s.name], g.budgets, resamples, seed))
                for s in data.strategies] for u, g in grids.items()}


def _optimal(kind: str, per_task: PerTask, scores: np.ndarray, fixed: list[str], grids: dict[str, Grid],
             settings: dict[str, int]) -> dict[str, OptimalCurve]:
    out = {}
    for u, g in grids.items():
        common = g.common(fixed) if fixed else np.zeros(len(g.budgets), dtype=bool)
        if not common.any():
            continue
        stack = np.stack([per_task.success[u][s][:, common] for s in fixed])
        cv = cross_validate(stack, scores, settings["bins"], settings["folds"], settings["seed"])
        if cv is None:
            continue
        budgets = [b for b, ok in zip(g.budgets, common, strict=True) if ok]
        choices = [{s: int((cv.choice[:, j] == i).sum()) for i, s in enumerate(fixed)} for j in range(len(budgets))]
        points = bootstrap_points(cv.success, budgets, settings["resamples"], settings["seed"])
        out[u] = OptimalCurve(kind, u, points, choices)
    return out


def _bin_table(kind: str, per_task: PerTask, scores: np.ndarray, fixed: list[str], grids: dict[str, Grid],
               bins: int) -> BinTable:
    """Per bin, fitted on all tasks (descriptive; the compute-optimal curve is the honest estimate)."""
    edges = quantile_edges(scores, bins)
    which = bins_of(scores, edges)
    rows = []
    for b in range(len(edges) + 1):
        members = which == b
        success = {u: {s: [None if np.isnan(v) else float(v) for v in m[members].mean(axis=0)] for s, m in by.items()}
                   for u, by in per_task.success.items()}
        rows.append(BinRow(b, edges[b - 1] if b else None, edges[b] if b < len(edges) else None, int(members.sum()),
                           success, {u: _best_names(per_task.success[u], members, fixed, g) for u, g in grids.items()}))
    return BinTable(kind, edges, rows)


def _best_names(by: dict[str, np.ndarray], members: np.ndarray, fixed: list[str], grid: Grid) -> list[str | None]:
    if not fixed or not members.any():
        return [None] * len(grid.budgets)
    means = np.stack([np.nan_to_num(by[s][members].mean(axis=0), nan=-1.0) for s in fixed])
    common = grid.common(fixed)
    return [fixed[i] if ok else None for i, ok in zip(best_index(means), common, strict=True)]


def _notes(data: RunData) -> list[str]:
    notes = []
    if data.excluded_tasks:
        notes.append(f"{len(data.excluded_tasks)} task(s) lack completed attempts in some strategy and are left out: "
                     + ", ".join(data.excluded_tasks[:5]) + (" …" if len(data.excluded_tasks) > 5 else "")
                     + ("; adaptive runs only on tasks its table was not fitted on"
                        if any(s.adaptive for s in data.strategies) else ""))
    for s in data.strategies:
        if not data.feedback_checked[s.name]:
            notes.append(f"{s.name}: no attempt ran the feedback tests, "
                         "so its selection is a majority vote of the code")
    if agents := [s.name for s in data.strategies if s.agent]:
        notes.append(f"{', '.join(agents)}: agent episodes; at a budget cut an episode's candidate is its last "
                     "included step (its current state), earlier steps are superseded; agent steps are not in "
                     "the turn-0 pass@k, difficulty scores or the adaptive table")
    if not any(tc.n for tc in data.probe.values()):
        notes.append("no probe attempt ran the feedback tests: every task's predicted score is 0 (one predicted bin)")
    return notes
