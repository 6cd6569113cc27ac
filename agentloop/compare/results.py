"""The values a comparison produces (dataclasses), and their JSON form."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import numpy as np

from agentloop.compare.budgets import Grid
from agentloop.compare.data import StrategyInfo
from agentloop.compare.stats import Point, PowerLaw
from agentloop.metrics import PassAtK

ORACLE_LABEL = ("oracle coverage: any attempt (agent: any episode's current state) passes the grading tests; "
                "not a selectable result")


@dataclass(frozen=True)
class Curve:
    strategy: str
    unit: str
    adaptive: bool
    points: list[Point]


@dataclass(frozen=True)
class OptimalCurve:
    """Per task, the fixed strategy that was best on the other folds' tasks of its difficulty bin."""

    kind: str
    """How tasks are binned: `predicted` (feedback-test probe) or `oracle` (grading pass@1)."""
    unit: str
    points: list[Point]
    choices: list[dict[str, int]]
    """Per budget: how many held-out tasks each strategy was chosen for."""


@dataclass(frozen=True)
class BinRow:
    bin: int
    score_low: float | None
    """Scores in [score_low, score_high); None = open end."""
    score_high: float | None
    tasks: int
    success: dict[str, dict[str, list[float | None]]]
    """unit → strategy → mean success per budget of that unit's grid (None: no point)."""
    best: dict[str, list[str | None]]
    """unit → best fixed strategy per budget (None where some fixed strategy has no point)."""


@dataclass(frozen=True)
class BinTable:
    kind: str
    edges: list[float]
    rows: list[BinRow]


@dataclass
class PerTask:
    """Per-task numbers behind every curve (rows follow `task_ids`)."""

    task_ids: list[str]
    oracle_score: np.ndarray
    predicted_score: np.ndarray
    success: dict[str, dict[str, np.ndarray]]
    """unit → strategy → tasks × budgets expected success (NaN where the curve has no point)."""
    oracle: dict[str, dict[str, np.ndarray]]

    def rows(self, task_ids: list[str]) -> np.ndarray:
        where = {t: i for i, t in enumerate(self.task_ids)}
        return np.array([where[t] for t in task_ids], dtype=int)

    def to_json(self) -> dict[str, Any]:
        return {
            "task_ids": self.task_ids, "oracle_score": self.oracle_score.tolist(),
            "predicted_score": self.predicted_score.tolist(),
            "success": {u: {s: np.round(m, 4).tolist() for s, m in by.items()} for u, by in self.success.items()},
        }


@dataclass
class Comparison:
    run_dir: str
    suite: str
    model: str
    settings: dict[str, int]
    tasks: int
    excluded_tasks: list[str]
    strategies: list[StrategyInfo]
    grids: dict[str, Grid]
    success: dict[str, list[Curve]]
    oracle: dict[str, list[Curve]]
    compute_optimal: dict[str, dict[str, OptimalCurve]]
    bins: dict[str, BinTable]
    pass_at_k: list[PassAtK]
    power_law: PowerLaw
    per_task: PerTask
    adaptive: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    math: list[Any] = field(default_factory=list)
    """Math runs: pass@n, maj@n, weighted@n, best-of-n per n, level and subject (`report`'s VoteRows)."""

    @property
    def fixed(self) -> list[str]:
        """Fixed strategies in tie-break order (fewer turns, then name)."""
        return [s.name for s in sorted((s for s in self.strategies if not s.adaptive), key=lambda s: (s.turns, s.name))]

    @property
    def adaptable(self) -> list[str]:
        """The fixed strategies an adaptive run can choose from (revision and parallel splits: an
        adaptive run allocates revision chains, never agent episodes)."""
        agents = {s.name for s in self.strategies if s.agent}
        return [s for s in self.fixed if s not in agents]

    def full_budget(self, unit: str = "generations", strategies: list[str] | None = None) -> float | None:
        """The largest budget of `unit` that every fixed strategy (or every one of `strategies`) reaches."""
        names = self.fixed if strategies is None else strategies
        grid = self.grids[unit]
        common = [b for b, ok in zip(grid.budgets, grid.common(names), strict=True) if ok]
        return common[-1] if common and names else None

    def to_json(self) -> dict[str, Any]:
        out = {f.name: jsonable(getattr(self, f.name)) for f in fields(self) if f.name != "per_task"}
        out["strategies"] = [{**jsonable(s), "adaptive": s.adaptive} for s in self.strategies]
        out["oracle_label"] = ORACLE_LABEL
        out["per_task"] = jsonable(self.per_task.to_json())
        return out


def jsonable(value: Any) -> Any:
    """Dataclasses, numpy values and tuples as plain JSON; NaN/inf → None (compare.json is strict JSON)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
