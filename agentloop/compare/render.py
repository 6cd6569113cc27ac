"""`agentloop compare`'s tables (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from agentloop.compare.results import ORACLE_LABEL, BinTable, Comparison
from agentloop.compare.stats import Point
from agentloop.report import math_table


def fmt_budget(b: float) -> str:
    return f"{int(b):,}" if b == int(b) else f"{b:,.1f}"


def fmt_point(p: Point | None) -> str:
    return "–" if p is None else f"{p.mean:.2f} [{p.ci_low:.2f}, {p.ci_high:.2f}]"


def _label(c: Comparison, name: str) -> str:
    return f"{name} (adaptive)" if any(s.adaptive and s.name == name for s in c.strategies) else name


def _at(points: list[Point], budget: float) -> Point | None:
    return next((p for p in points if p.budget == budget), None)


def print_comparison(c: Comparison, console: Console) -> None:
    names = ", ".join(_label(c, s.name) for s in c.strategies)
    console.print(f"[bold]{c.run_dir}[/]  suite={c.suite} model={c.model} tasks={c.tasks} strategies: {names}")
    for note in c.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    for unit, grid in c.grids.items():
        if grid.budgets:
            _unit_table(c, unit, console)
    for table in c.bins.values():
        _bin_table(c, table, console)
    _pass_at_k(c, console)
    if c.math:
        console.print(math_table(c.math))


def _unit_table(c: Comparison, unit: str, console: Console) -> None:
    opt = {k: c.compute_optimal[k].get(unit) for k in c.compute_optimal}
    table = Table("budget", *(_label(c, cv.strategy) for cv in c.success[unit]),
                  *(f"compute-optimal ({k} bins, CV)" for k in opt),
                  title=f"success vs {unit.replace('_', ' ')} per task (mean over {c.tasks} tasks, 95% CI over tasks)")
    for b in c.grids[unit].budgets:
        cells = [fmt_point(_at(cv.points, b)) for cv in c.success[unit]]
        cells += [fmt_point(_at(o.points, b) if o else None) for o in opt.values()]
        table.add_row(fmt_budget(b), *cells)
    console.print(table)
    console.print(f"{ORACLE_LABEL}; at each curve's largest budget: " + ", ".join(
        f"{cv.strategy} {fmt_point(cv.points[-1])} @ {fmt_budget(cv.points[-1].budget)}"
        for cv in c.oracle[unit] if cv.points), markup=False, highlight=False)


def _bin_table(c: Comparison, bt: BinTable, console: Console) -> None:
    full = c.full_budget()
    if full is None:
        return
    grid = c.grids["generations"]
    col = grid.budgets.index(full)
    common = [b for b, ok in zip(grid.budgets, grid.common(c.fixed), strict=True) if ok]
    table = Table("bin", "scores", "tasks", *(_label(c, s.name) for s in c.strategies), "best",
                  f"best by budget ({', '.join(fmt_budget(b) for b in common)})",
                  title=f"{bt.kind} difficulty bins (bin 0 = hardest), success at {fmt_budget(full)} generations")
    for row in bt.rows:
        lo = "" if row.score_low is None else f"{row.score_low:.2f}"
        hi = "" if row.score_high is None else f"{row.score_high:.2f}"
        values = [row.success["generations"][s.name][col] for s in c.strategies]
        cells = ["–" if v is None else f"{v:.2f}" for v in values]
        best = row.best["generations"]
        table.add_row(str(row.bin), f"[{lo}, {hi})", str(row.tasks), *cells, best[col] or "–",
                      " → ".join(b for b in best if b))
    console.print(table)


def _pass_at_k(c: Comparison, console: Console) -> None:
    table = Table("k", "pass@k", "95% CI (tasks bootstrap)", "tasks", "power-law fit",
                  title="pass@k of all turn-0 attempts (iid samples of the first prompt; agent steps not included)")
    fitted = dict(c.power_law.fitted)
    for r in c.pass_at_k:
        fit = f"{fitted[r.k]:.3f}" if r.k in fitted else "–"
        table.add_row(str(r.k), f"{r.mean:.3f}", f"[{r.ci_low:.3f}, {r.ci_high:.3f}]", str(r.tasks), fit)
    console.print(table)
    pl = c.power_law
    if pl.a is None:
        console.print(f"fail@k power law: not fitted ({pl.points} point(s) with 0 < pass@k < 1; needs 2)")
    else:
        console.print(f"fail@k power law: a={pl.a:.3f}, b={pl.b:.3f} (log pass@k ≈ -a·k^-b, fit on {pl.points} points)")
