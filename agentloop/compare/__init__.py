"""`agentloop compare RUN_DIR`: strategies of one run compared at equal compute.

Does sequential revision with test feedback beat parallel sampling at the same budget, and on
which tasks (Snell et al. 2024, arXiv 2408.03314)? Modules, one job each:

| module | job |
| --- | --- |
| data | read the store (streaming) into Candidates per (strategy, task); turn-0 and probe counts |
| walk | the budget walk: expected success/oracle of one (strategy, task) at every budget |
| budgets | budget grids per unit and how far each strategy's curve reaches |
| per_task | grids for a run; every (strategy, task) walked |
| stats | bootstrap CIs over tasks, pass@k rows, the fail@k power law |
| bins | difficulty bins (bin 0 = hardest) and the best strategy per bin |
| optimal | the cross-validated compute-optimal curve |
| adaptive | the per-bin table an adaptive run reads (`adaptive_table`, `fold_table`, `strategy_for`) |
| build | `build_comparison` |
| render, plots | tables and PNGs |
"""

from __future__ import annotations

import json
from pathlib import Path

from agentloop.compare.adaptive import adaptive_table, fold_table, strategy_for
from agentloop.compare.bins import bin_of
from agentloop.compare.build import build_comparison
from agentloop.compare.plots import write_pngs
from agentloop.compare.render import print_comparison
from agentloop.compare.results import Comparison

JSON_NAME = "compare.json"


def write_json(c: Comparison, run_dir: Path) -> Path:
    path = Path(run_dir) / JSON_NAME
    path.write_text(json.dumps(c.to_json(), indent=1))
    return path


__all__ = [
    "JSON_NAME",
    "Comparison",
    "adaptive_table",
    "bin_of",
    "build_comparison",
    "fold_table",
    "print_comparison",
    "strategy_for",
    "write_json",
    "write_pngs",
]
