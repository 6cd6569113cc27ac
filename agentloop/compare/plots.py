"""The PNGs `agentloop compare` writes into the run dir (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agentloop.compare.results import ORACLE_LABEL, Comparison, Curve

DPI = 120


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain_log_x(ax: Any) -> None:
    """Log x with plain numbers (1, 2, 4, 1000) instead of 2×10^0."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}" if x >= 1 else f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _band(ax: Any, curve: Curve, label: str, **style: Any) -> str:
    xs = [p.budget for p in curve.points]
    line = ax.plot(xs, [p.mean for p in curve.points], marker="o", ms=3, label=label, **style)[0]
    ax.fill_between(xs, [p.ci_low for p in curve.points], [p.ci_high for p in curve.points], alpha=0.15,
                    color=line.get_color())
    return line.get_color()


def _unit_png(plt: Any, c: Comparison, unit: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=DPI)
    label: str | None = "dotted: " + ORACLE_LABEL.replace("; ", ";\n")
    for cv, oracle in zip(c.success[unit], c.oracle[unit], strict=True):
        if cv.points:
            color = _band(ax, cv, f"{cv.strategy} (adaptive)" if cv.adaptive else cv.strategy)
            ax.plot([p.budget for p in oracle.points], [p.mean for p in oracle.points], linestyle=":",
                    color=color, linewidth=1, label=label)
            label = None
    for kind, by_unit in c.compute_optimal.items():
        if (opt := by_unit.get(unit)) and opt.points:
            _band(ax, Curve(f"optimal ({kind})", unit, False, opt.points), f"compute-optimal ({kind} bins, CV)",
                  linestyle="--", color="black" if kind == "predicted" else "gray")
    _plain_log_x(ax)
    if unit == "generations":
        ax.set_xticks(sorted({p.budget for cv in c.success[unit] for p in cv.points}))
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"budget per task ({unit.replace('_', ' ')})")
    ax.set_ylabel("success (selected attempt passes)")
    ax.set_title(f"{c.suite or 'run'}: success vs {unit.replace('_', ' ')} ({c.tasks} tasks, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(plt, fig, path)


def _bins_png(plt: Any, c: Comparison, path: Path) -> Path:
    full = c.full_budget()
    fig, axes = plt.subplots(1, len(c.bins), figsize=(6 * len(c.bins), 4), dpi=DPI, squeeze=False)
    col = c.grids["generations"].budgets.index(full) if full is not None else None
    for ax, (kind, bt) in zip(axes[0], c.bins.items(), strict=True):
        width = 0.8 / max(1, len(c.strategies))
        for i, s in enumerate(c.strategies):
            vals = [np.nan if col is None or r.success["generations"][s.name][col] is None
                    else r.success["generations"][s.name][col] for r in bt.rows]
            ax.bar(np.arange(len(bt.rows)) + i * width, vals, width,
                   label=s.name + (" (adaptive)" if s.adaptive else ""))
        ax.set_xticks(np.arange(len(bt.rows)) + 0.4 - width / 2, [f"{r.bin}\n({r.tasks} tasks)" for r in bt.rows])
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"{kind} difficulty bin (0 = hardest)")
        ax.set_ylabel(f"success at {full and int(full)} generations")
        ax.set_title(f"{kind} bins")
        ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _pass_at_k_png(plt: Any, c: Comparison, path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=DPI)
    ks = [r.k for r in c.pass_at_k]
    left.plot(ks, [r.mean for r in c.pass_at_k], marker="o", label="pass@k (turn-0 attempts)")
    left.fill_between(ks, [r.ci_low for r in c.pass_at_k], [r.ci_high for r in c.pass_at_k], alpha=0.2)
    left.set(xscale="log", ylim=(0, 1), xlabel="k", ylabel="pass@k", title="pass@k")
    fail = [(r.k, 1 - r.mean) for r in c.pass_at_k if 1 - r.mean > 0]
    if fail:
        right.plot(*zip(*fail, strict=True), marker="o", linestyle="none", label="fail@k = 1 - pass@k")
    pl = c.power_law
    if pl.a is not None:
        right.plot([k for k, _ in pl.fitted], [1 - v for _, v in pl.fitted], linestyle="--",
                   label=f"1 - exp(-a·k^-b), a={pl.a:.2f}, b={pl.b:.2f}")
    right.set(xscale="log", yscale="log", xlabel="k", ylabel="fail@k", title="fail@k (log-log) and power-law fit")
    for ax in (left, right):
        _plain_log_x(ax)
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_pngs(c: Comparison, run_dir: Path) -> list[Path]:
    """compare_{generations,total_tokens,completion_tokens}.png, compare_bins.png, compare_pass_at_k.png
    (a token plot is skipped when the run logged no tokens of that kind)."""
    plt = _pyplot()
    paths = [_unit_png(plt, c, u, run_dir / f"compare_{u}.png") for u, g in c.grids.items() if g.budgets]
    paths.append(_bins_png(plt, c, run_dir / "compare_bins.png"))
    paths.append(_pass_at_k_png(plt, c, run_dir / "compare_pass_at_k.png"))
    return paths

