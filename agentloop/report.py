"""`agentloop report RUN_DIR`: pass@k table, JSON, and a PNG of pass@k vs k, from the store alone."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentloop.attempt import AttemptKind
from agentloop.metrics import PassAtK, count_by_task, pass_at_k, pass_at_ks
from agentloop.store import AttemptStore

PNG_NAME = "pass_at_k.png"
MAX_REASONS = 3


@dataclass
class Report:
    run_dir: str
    run_id: str
    suite: str
    model: str
    samples_requested: int
    tasks: int
    attempts: int  # completed attempts: pass@k's n summed over tasks
    infra_errors: int
    missing: int  # requested slots with no completed attempt (resume fills them)
    verdicts: dict[str, int]
    prompt_tokens: int  # counted once per request (n samples share one prefill)
    completion_tokens: int
    pass_at_k: list[PassAtK]
    per_task: list[dict[str, Any]] = field(default_factory=list)
    infra_error_reasons: list[dict[str, Any]] = field(default_factory=list)
    """The most common infra-error messages: [{"error": ..., "count": ...}], most frequent first."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def build_report(run_dir: Path) -> Report:
    store = AttemptStore.open(run_dir)
    try:
        cfg = store.get_meta("config", {})
        task_ids = [t.id for t, _ in store.tasks()]
        verdicts: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        request_prompt: dict[str, int] = {}
        completion_tokens = 0

        def scan():
            nonlocal completion_tokens
            for a in store.iter_attempts():
                verdicts[a.verdict.value if a.verdict else AttemptKind.INFRA_ERROR.value] += 1
                if a.kind is AttemptKind.INFRA_ERROR:
                    reason = a.error or "unknown"
                    reasons[reason if reason in reasons or len(reasons) < 1000 else "(other messages)"] += 1
                if a.request_id and a.prompt_tokens is not None:
                    request_prompt[a.request_id] = a.prompt_tokens
                completion_tokens += a.completion_tokens or 0
                yield a

        counts = count_by_task(scan(), task_ids)
        samples = int(cfg.get("samples", 0))
        per_task = [
            {"task_id": t, "n": tc.n, "passed": tc.c, "infra_errors": tc.infra_errors,
             "pass@1": pass_at_k(tc.n, tc.c, 1) if tc.n else None}
            for t, tc in counts.items()
        ]
        return Report(
            run_dir=str(run_dir), run_id=store.get_meta("run_id", ""), suite=cfg.get("suite", ""),
            model=cfg.get("model", {}).get("model", ""), samples_requested=samples, tasks=len(counts),
            attempts=sum(tc.n for tc in counts.values()),
            infra_errors=sum(tc.infra_errors for tc in counts.values()),
            missing=sum(max(0, samples - tc.n) for tc in counts.values()),
            verdicts=dict(sorted(verdicts.items())), prompt_tokens=sum(request_prompt.values()),
            completion_tokens=completion_tokens, pass_at_k=pass_at_ks(counts), per_task=per_task,
            infra_error_reasons=[{"error": e, "count": n} for e, n in reasons.most_common(MAX_REASONS)],
        )
    finally:
        store.close()


def print_report(report: Report, console: Console) -> None:
    console.print(
        f"[bold]{report.run_dir}[/]  suite={report.suite} model={report.model} tasks={report.tasks} "
        f"samples/task={report.samples_requested}"
    )
    table = Table("k", "pass@k", "95% CI (tasks bootstrap)", "tasks")
    for row in report.pass_at_k:
        table.add_row(str(row.k), f"{row.mean:.3f}", f"[{row.ci_low:.3f}, {row.ci_high:.3f}]", str(row.tasks))
    console.print(table)
    verdicts = ", ".join(f"{k} {v}" for k, v in report.verdicts.items())
    console.print(
        f"attempts: {report.attempts} graded ({verdicts}); infra errors: {report.infra_errors} "
        f"(excluded from n); missing: {report.missing}"
        + (f" (run `agentloop run --resume {report.run_dir}`)" if report.missing else "")
    )
    for reason in report.infra_error_reasons:
        console.print(f"  infra error ×{reason['count']}: {reason['error']}", markup=False, highlight=False)
    console.print(f"tokens: {report.prompt_tokens} prompt (once per request), {report.completion_tokens} completion")


def write_png(report: Report, path: Path) -> Path | None:
    if not report.pass_at_k:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r.k for r in report.pass_at_k]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(ks, [r.mean for r in report.pass_at_k], marker="o", label=report.model or "model")
    ax.fill_between(ks, [r.ci_low for r in report.pass_at_k], [r.ci_high for r in report.pass_at_k], alpha=0.25, label="95% CI")
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_ylim(0, 1)
    ax.set_xlabel("k (samples per task)")
    ax.set_ylabel("pass@k")
    ax.set_title(f"{report.suite}: pass@k over {report.tasks} tasks")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(run_dir: Path) -> Report:
    """report.json and the PNG next to the store (used at the end of every run)."""
    report = build_report(run_dir)
    (run_dir / "report.json").write_text(json.dumps(report.to_json(), indent=2))
    write_png(report, run_dir / PNG_NAME)
    return report
