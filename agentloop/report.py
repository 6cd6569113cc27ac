"""`agentloop report RUN_DIR`: per-strategy results, pass@k, JSON, and a PNG, from the store alone.

pass@k is over first turns (every chain's turn 0 is an independent sample of the first prompt, so
all strategies but agent episodes contribute: an episode's step 0 is a first action, not an
answer). Per strategy, "success" is the answer `selection` picks with the feedback tests passing
the grading tests; "oracle" (any attempt passes) is labelled as such.

Agent strategies (`agent:NxM`): an episode's answer is its final state (the workspace's
solution.py after its last completed step); earlier steps are superseded states, not answers.
Success selects among the episodes' final states, oracle is any final state passing, and the
strategy's pass@k is over k episodes' final states (unbiased, n = episodes of the task). The
episodes section adds steps, outcomes, format errors and per-step tokens.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agentloop.attempt import Attempt, AttemptKind
from agentloop.math.metrics import METHODS, Sample, VoteRow, vote_rows
from agentloop.metrics import PassAtK, TaskCounts, bootstrap_ci, count_by_task, pass_at_k, pass_at_ks
from agentloop.sandbox.types import Verdict
from agentloop.schedule import allocate
from agentloop.selection import Candidate, code_key, select
from agentloop.store import AttemptStore
from agentloop.strategy import ADAPTIVE, fixed_splits, is_agent, parse_split

PNG_NAME = "pass_at_k.png"
MAX_REASONS = 3


@dataclass
class StrategySummary:
    strategy: str
    tasks: int  # tasks with at least one completed attempt
    generations: int  # completed attempts (infra errors excluded)
    chains: int
    infra_errors: int
    prompt_tokens: int  # every turn's prompt, re-sent context included; once per request
    cached_prompt_tokens: int  # of which the server's prefix cache served (when it reports it)
    completion_tokens: int
    success: float  # selected answer (feedback tests only) passes the grading tests, mean over tasks
    success_ci: tuple[float, float]
    oracle: float  # any attempt passes the grading tests: not a selectable result
    first_turn_pass: float | None  # pass@1 of this strategy's turn-0 attempts (None for agent episodes)
    feedback_selected: float  # share of tasks whose selected answer passes the feedback tests
    agent: bool = False
    """Agent episodes: chains are episodes, success/oracle are over their final states."""
    pass_at_k: list[PassAtK] = field(default_factory=list)
    """Agent episodes: pass@k over k episodes' final states (empty for other strategies)."""


OUTCOMES = ("submitted", "step_limit", "token_limit", "context_full", "time_limit", "format_errors")
"""How an episode ends (extra["episode"]["outcome"] of its last step)."""
UNFINISHED = ("infra_error", "unfinished")
"""Episodes without an outcome: the last row is an infra error, or the run stopped mid-episode
(`--resume` continues both)."""


@dataclass
class EpisodeSummary:
    """One agent strategy's episodes (an episode = one chain; its answer is its final state)."""

    strategy: str
    protocol: str  # "text", "tools", or both joined with "+"
    episodes: int
    resolved: float  # share of episodes whose final state passes the grading tests
    steps_mean: float  # completed steps per episode
    steps_median: float
    outcomes: dict[str, int]
    """Every name of OUTCOMES and UNFINISHED, with its count (0 included)."""
    format_errors: int  # replies with zero or several actions, summed over episodes
    prompt_tokens_mean: float  # per completed step
    cached_share: float  # cached prompt tokens / prompt tokens over completed steps (0 when not reported)
    completion_tokens_mean: float


@dataclass
class Report:
    run_dir: str
    run_id: str
    suite: str
    model: str | None  # None for a graded run (`agentloop grade`): no model was involved
    samples_requested: int  # graded runs: the most rows any task has
    tasks: int
    attempts: int  # completed attempts: pass@k's n summed over tasks
    infra_errors: int
    missing: int
    """`agentloop run`: requested slots with no completed attempt (`--resume` fills them). Graded
    runs: rows of the file with no completed attempt (interrupted, infra errors; grade the file
    again). A task with fewer rows than another is not missing anything."""
    verdicts: dict[str, int]
    prompt_tokens: int  # counted once per request (n samples share one prefill)
    completion_tokens: int
    pass_at_k: list[PassAtK]
    per_task: list[dict[str, Any]] = field(default_factory=list)
    infra_error_reasons: list[dict[str, Any]] = field(default_factory=list)
    """The most common infra-error messages: [{"error": ..., "count": ...}], most frequent first."""
    strategies: list[StrategySummary] = field(default_factory=list)
    episodes: list[EpisodeSummary] = field(default_factory=list)
    """Agent strategies only (empty when the run has none)."""
    math: list[VoteRow] = field(default_factory=list)
    """Math runs: pass@n, maj@n, weighted@n, best-of-n over first-turn samples; per level and subject."""
    graded_file: str | None = None
    """Graded runs: the samples file `agentloop grade` read (None: a run made by `agentloop run`)."""
    graded_rows: int | None = None
    """Graded runs: rows in that file."""
    samples_per_task: tuple[int, int] = (0, 0)
    """(fewest, most) completed first-turn samples of a task: pass@k covers the tasks with n >= k."""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for row in d["pass_at_k"]:  # the tasks each k covers (n >= k) out of all the run's tasks
            row["tasks_total"] = self.tasks
        return d

    @property
    def graded(self) -> bool:
        return self.graded_file is not None


class _Scan:
    """One pass over the attempts: what the report needs, grouped by strategy and task."""

    def __init__(self) -> None:
        self.verdicts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.request_prompt: dict[str, tuple[str, int, int | None]] = {}
        self.completion: Counter[str] = Counter()
        self.infra: Counter[str] = Counter()
        self.candidates: dict[tuple[str, str], list[Candidate]] = {}
        self.chains: dict[tuple[str, str, int], Attempt] = {}  # last attempt per chain
        self.decisions: dict[str, str] = {}  # adaptive: task → split chosen
        self.math: dict[str, list[Sample]] = {}  # first-turn samples of math tasks
        self.current: dict[tuple[str, str, int], Candidate] = {}  # agent: an episode's last completed step
        self.steps: Counter[tuple[str, str, int]] = Counter()  # agent: completed steps per episode
        self.format_errors: dict[tuple[str, str, int], int] = {}
        self.protocols: dict[str, set[str]] = {}
        self.step_tokens: dict[str, list[int]] = {}  # agent: [steps, prompt, cached, completion]

    def first_turns(self, attempts: Any) -> Any:
        for a in attempts:
            self.add(a)
            if a.turn == 0 and not is_agent(a.strategy):
                yield a

    def add(self, a: Attempt) -> None:
        self.verdicts[a.verdict.value if a.verdict else AttemptKind.INFRA_ERROR.value] += 1
        key = (a.strategy, a.task_id, a.chain)
        if key not in self.chains or a.turn >= self.chains[key].turn:
            self.chains[key] = a
        if a.request_id and a.prompt_tokens is not None:  # spent even when the sandbox then failed
            self.request_prompt[a.request_id] = (a.strategy, a.prompt_tokens, a.cached_prompt_tokens)
        self.completion[a.strategy] += a.completion_tokens or 0
        if a.kind is AttemptKind.INFRA_ERROR:
            reason = a.error or "unknown"
            self.reasons[reason if reason in self.reasons or len(self.reasons) < 1000 else "(other messages)"] += 1
            self.infra[a.strategy] += 1
            return
        candidate = Candidate(
            a.chain, a.turn, code_key(a.code) if a.code else f"none/{a.chain}/{a.turn}",  # no code: no vote
            a.feedback_verdict is Verdict.PASSED, a.passed)
        self.candidates.setdefault((a.strategy, a.task_id), []).append(candidate)
        if is_agent(a.strategy):
            self._step(key, a, candidate)
        if a.turn == 0 and "answer" in a.extra:
            self.math.setdefault(a.task_id, []).append(Sample(a.code, a.passed, a.extra.get("score")))
        if a.strategy == ADAPTIVE and (info := a.extra.get("adaptive")):
            self.decisions[a.task_id] = info.get("split", "")


    def _step(self, key: tuple[str, str, int], a: Attempt, candidate: Candidate) -> None:
        if key not in self.current or a.turn >= self.current[key].turn:
            self.current[key] = candidate
        self.steps[key] += 1
        episode = a.extra.get("episode") or {}
        self.format_errors[key] = max(self.format_errors.get(key, 0), int(episode.get("format_errors") or 0))
        if episode.get("protocol"):
            self.protocols.setdefault(a.strategy, set()).add(str(episode["protocol"]))
        t = self.step_tokens.setdefault(a.strategy, [0, 0, 0, 0])
        t[0] += 1
        t[1] += a.prompt_tokens or 0
        t[2] += a.cached_prompt_tokens or 0
        t[3] += a.completion_tokens or 0


def build_report(run_dir: Path) -> Report:
    store = AttemptStore.open(run_dir)
    try:
        cfg = store.get_meta("config", {})
        tasks = [t for t, _ in store.tasks()]
        task_ids = [t.id for t in tasks]
        scan = _Scan()
        counts = count_by_task(scan.first_turns(store.iter_attempts()), task_ids)
        samples = int(cfg.get("samples", 0))
        graded_file = store.get_meta("graded_file")
        graded_rows = store.get_meta("graded_rows") if graded_file else None
        if graded_file and graded_rows is None:  # graded before the row count was stored
            graded_rows = sum(scan.verdicts.values())
        per_task = [
            {"task_id": t, "n": tc.n, "passed": tc.c, "infra_errors": tc.infra_errors,
             "pass@1": pass_at_k(tc.n, tc.c, 1) if tc.n else None}
            for t, tc in counts.items()
        ]
        summaries = [_summary(name, scan) for name in sorted({k[0] for k in scan.candidates} | set(scan.infra))]
        attempts = sum(len(c) for c in scan.candidates.values())
        ns = [tc.n for tc in counts.values()]
        return Report(
            run_dir=str(run_dir), run_id=store.get_meta("run_id", ""), suite=cfg.get("suite", ""),
            model=None if graded_file else cfg.get("model", {}).get("model", ""), samples_requested=samples,
            tasks=len(counts), attempts=attempts, infra_errors=sum(scan.infra.values()),
            missing=(max(0, int(graded_rows) - attempts) if graded_rows is not None
                     else _missing(cfg, task_ids, scan, store.get_meta("adaptive"))),
            verdicts=dict(sorted(scan.verdicts.items())),
            prompt_tokens=sum(p for _, p, _ in scan.request_prompt.values()),
            completion_tokens=sum(scan.completion.values()), pass_at_k=pass_at_ks(counts), per_task=per_task,
            infra_error_reasons=[{"error": e, "count": n} for e, n in scan.reasons.most_common(MAX_REASONS)],
            strategies=summaries, episodes=[_episodes(s.strategy, scan) for s in summaries if s.agent],
            math=_math_rows(scan, tasks), graded_file=graded_file, graded_rows=graded_rows,
            samples_per_task=(min(ns), max(ns)) if ns else (0, 0),
        )
    finally:
        store.close()


def _math_rows(scan: _Scan, tasks: list[Any]) -> list[VoteRow]:
    scored = any(s.score is not None for samples in scan.math.values() for s in samples)
    methods = METHODS if scored else ("pass", "majority")  # weighted and best-of-n need scores
    return vote_rows(scan.math, {t.id: t.metadata for t in tasks}, methods=methods)


def _summary(name: str, scan: _Scan) -> StrategySummary:
    agent = is_agent(name)
    groups = {t: c for (s, t), c in scan.candidates.items() if s == name}
    if agent:  # an episode's answer is its current state: earlier steps are superseded
        finals: dict[str, list[Candidate]] = {t: [] for t in groups}
        for (s, t, _), c in scan.current.items():
            if s == name:
                finals[t].append(c)
        groups = finals
    chosen = [select(c) for c in groups.values()]
    success = np.array([float(c.passed) for c in chosen if c])
    first = [c.passed for cs in groups.values() for c in cs if c.turn == 0]
    prompts = [(p, cached) for s, p, cached in scan.request_prompt.values() if s == name]
    generations = sum(n for k, n in scan.steps.items() if k[0] == name) if agent else sum(
        len(c) for c in groups.values())
    return StrategySummary(
        strategy=name, tasks=len(groups), generations=generations,
        chains=sum(1 for k in scan.chains if k[0] == name), infra_errors=scan.infra[name],
        prompt_tokens=sum(p for p, _ in prompts), cached_prompt_tokens=sum(c or 0 for _, c in prompts),
        completion_tokens=scan.completion[name],
        success=float(success.mean()) if len(success) else 0.0, success_ci=bootstrap_ci(success),
        oracle=float(np.mean([any(c.passed for c in cs) for cs in groups.values()])) if groups else 0.0,
        first_turn_pass=None if agent else float(np.mean(first)) if first else 0.0,
        feedback_selected=float(np.mean([c.feedback_passed for c in chosen if c])) if chosen else 0.0,
        agent=agent, pass_at_k=pass_at_ks(_episode_counts(groups)) if agent else [],
    )


def _episode_counts(groups: dict[str, list[Candidate]]) -> dict[str, TaskCounts]:
    """Per task: n = episodes with a completed step, c = those whose final state passes."""
    return {t: TaskCounts(len(cs), sum(c.passed for c in cs)) for t, cs in groups.items()}


def _outcome(scan: _Scan, key: tuple[str, str, int]) -> str:
    last = scan.chains[key]
    if last.kind is AttemptKind.INFRA_ERROR:
        return "infra_error"
    outcome = (last.extra.get("episode") or {}).get("outcome")
    return str(outcome) if outcome else "unfinished"


def _episodes(name: str, scan: _Scan) -> EpisodeSummary:
    keys = [k for k in scan.chains if k[0] == name]
    steps = [scan.steps[k] for k in keys]
    outcomes = Counter(_outcome(scan, k) for k in keys)
    finals = [scan.current[k].passed for k in keys if k in scan.current]
    n, prompt, cached, completion = scan.step_tokens.get(name, [0, 0, 0, 0])
    return EpisodeSummary(
        strategy=name, protocol="+".join(sorted(scan.protocols.get(name, set()))) or "?", episodes=len(keys),
        resolved=float(np.sum(finals)) / len(keys) if keys else 0.0,
        steps_mean=float(np.mean(steps)) if steps else 0.0, steps_median=float(np.median(steps)) if steps else 0.0,
        outcomes={o: outcomes[o] for o in (*OUTCOMES, *UNFINISHED)} | dict(outcomes),
        format_errors=sum(scan.format_errors.get(k, 0) for k in keys),
        prompt_tokens_mean=prompt / n if n else 0.0, cached_share=cached / prompt if prompt else 0.0,
        completion_tokens_mean=completion / n if n else 0.0,
    )


def _missing(cfg: dict[str, Any], task_ids: list[str], scan: _Scan, adaptive: dict[str, Any] | None) -> int:
    """Chains a resume would start or continue: never started, or ended by an infra error, or
    interrupted before their last turn (runs made by `agentloop run`; graded runs have no slots).
    An agent episode that ended early (submitted, a token/context/time limit, too many format
    errors: its last step's outcome) is complete, as a revision chain that stopped on a feedback pass."""
    stop = cfg.get("revision", {}).get("stop_on_feedback_pass", True)
    expected: dict[tuple[str, str], list[int]] = {}
    missing = 0
    samples = int(cfg.get("samples", 0))
    splits = fixed_splits(cfg.get("splits"), samples, bool(adaptive))
    agents = {split.name for split in splits if split.agent}
    for split in splits:
        for t in task_ids:
            expected[(split.name, t)] = [split.turns] * split.chains
    if adaptive:
        probe, budget = adaptive["table"]["probe"], cfg.get("budget") or 0
        for t in adaptive["tasks"]:
            decided = scan.decisions.get(t)
            expected[(ADAPTIVE, t)] = allocate(probe, parse_split(decided).turns, budget) if decided else [1] * probe
            probed = all((ADAPTIVE, t, c) in scan.chains for c in range(probe))
            missing += not decided and probed and budget > probe  # probed, but the rest never started
    for (strategy, t), caps in expected.items():
        for chain, turns in enumerate(caps):
            last = scan.chains.get((strategy, t, chain))
            if strategy in agents:  # an episode is done when its last step has an outcome (e.g. submitted)
                missing += last is None or last.kind is AttemptKind.INFRA_ERROR or (
                    last.turn + 1 < turns and not (last.extra.get("episode") or {}).get("outcome"))
                continue
            missing += last is None or last.kind is AttemptKind.INFRA_ERROR or (
                last.turn + 1 < turns and not (stop and last.feedback_verdict is Verdict.PASSED)
                and cfg.get("budget_unit") != "tokens")
    return missing


def print_report(report: Report, console: Console) -> None:
    fewest, most = report.samples_per_task
    made = (f"graded={escape(report.graded_file or '')} ({report.graded_rows} rows)" if report.graded
            else f"model={report.model}")
    console.print(
        f"[bold]{report.run_dir}[/]  suite={report.suite} {made} tasks={report.tasks} "
        + (f"strategies={','.join(s.strategy for s in report.strategies)}" if _chains(report)
           else f"samples/task={most if fewest == most else f'{fewest}–{most}'}")
    )
    table = Table("k", "pass@k", "95% CI (tasks bootstrap)", "tasks (n ≥ k)", title="pass@k over first turns")
    for row in report.pass_at_k:
        table.add_row(str(row.k), f"{row.mean:.3f}", f"[{row.ci_low:.3f}, {row.ci_high:.3f}]",
                      f"{row.tasks} of {report.tasks}")
    console.print(table)
    if partial := [row for row in report.pass_at_k if row.tasks < report.tasks]:
        console.print(f"pass@k averages over the tasks with at least k completed samples only: pass@{partial[0].k} "
                      f"over {partial[0].tasks} of {report.tasks} tasks"
                      + (f", pass@{partial[-1].k} over {partial[-1].tasks} of {report.tasks}"
                         if len(partial) > 1 else ""),
                      markup=False, highlight=False)
    if _chains(report):
        console.print(strategy_table(report.strategies))
    if report.episodes:
        console.print(episode_table(report.episodes))
        for summary in (s for s in report.strategies if s.agent and s.pass_at_k):
            console.print(f"{summary.strategy} pass@k over k episodes' final states: " + ", ".join(
                f"pass@{r.k} {r.mean:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" for r in summary.pass_at_k),
                markup=False, highlight=False)
    if report.math:
        console.print(math_table(report.math))
    verdicts = ", ".join(f"{k} {v}" for k, v in report.verdicts.items())
    if report.graded:  # no slots to resume: a task with fewer rows simply has fewer samples
        console.print(
            f"attempts: {report.attempts} graded ({verdicts}); infra errors: {report.infra_errors} (excluded from n)"
            + (f"; rows not graded: {report.missing} of {report.graded_rows} (grade the file again)"
               if report.missing else ""), markup=False, highlight=False)
    else:
        console.print(
            f"attempts: {report.attempts} graded ({verdicts}); infra errors: {report.infra_errors} "
            f"(excluded from n); missing: {report.missing}"
            + (f" (run `agentloop run --resume {report.run_dir}`)" if report.missing else "")
        )
    for reason in report.infra_error_reasons:
        console.print(f"  infra error ×{reason['count']}: {reason['error']}", markup=False, highlight=False)
    if not report.graded:  # a graded file's rows were made elsewhere: no tokens were spent here
        console.print(f"tokens: {report.prompt_tokens} prompt (once per request), "
                      f"{report.completion_tokens} completion")


def math_table(rows: list[VoteRow]) -> Table:
    """One row per (group, n): pass@n (oracle), maj@n, weighted@n, best-of-n, each with its CI."""
    table = Table("tasks", "n", "pass@n*", "maj@n", "weighted@n", "best-of-n",
                  title="math, first-turn samples (95% CI over tasks; * oracle, not selectable; "
                        "weighted and best-of-n need a scorer)")
    cells: dict[tuple[str, int], dict[str, VoteRow]] = {}
    for r in rows:
        cells.setdefault((r.group, r.n), {})[r.method] = r
    for (group, n), by in cells.items():
        first = next(iter(by.values()))
        table.add_row(f"{group} ({first.tasks})", str(n), *(
            f"{by[m].mean:.3f} [{by[m].ci_low:.2f}, {by[m].ci_high:.2f}]" if m in by else "–"
            for m in ("pass", "majority", "weighted", "best")))
    return table


def _chains(report: Report) -> bool:
    """Whether the run is more than plain parallel sampling (several strategies, or revisions)."""
    return len(report.strategies) > 1 or any(s.generations > s.chains for s in report.strategies)


def strategy_table(rows: list[StrategySummary]) -> Table:
    table = Table("strategy", "success", "95% CI", "oracle*", "turn-0 pass", "gens", "prompt tok (cached)",
                  "compl. tok",
                  title="per strategy: success = the answer picked with the feedback tests passes the grading tests\n"
                        "(* oracle: any attempt passes the grading tests; not selectable; agent strategies: over "
                        "the episodes' final states, gens = steps)")
    for r in rows:
        table.add_row(r.strategy, f"{r.success:.3f}", f"[{r.success_ci[0]:.3f}, {r.success_ci[1]:.3f}]",
                      f"{r.oracle:.3f}", "–" if r.first_turn_pass is None else f"{r.first_turn_pass:.3f}",
                      str(r.generations), f"{r.prompt_tokens} ({r.cached_prompt_tokens})", str(r.completion_tokens))
    return table


def episode_table(rows: list[EpisodeSummary]) -> Table:
    table = Table("strategy", "protocol", "episodes", "resolved", "steps (median)", "outcomes", "format errors",
                  "tok/step: prompt (cached), compl.",
                  title="agent episodes (resolved = the final state passes the grading tests)")
    for r in rows:
        outcomes = ", ".join(f"{k} {v}" for k, v in r.outcomes.items() if v)
        table.add_row(r.strategy, r.protocol, str(r.episodes), f"{r.resolved:.3f}",
                      f"{r.steps_mean:.1f} ({r.steps_median:g})", outcomes or "–", str(r.format_errors),
                      f"{r.prompt_tokens_mean:.0f} ({r.cached_share:.0%}), {r.completion_tokens_mean:.0f}")
    return table


def write_png(report: Report, path: Path) -> Path | None:
    if not report.pass_at_k:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r.k for r in report.pass_at_k]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    label = Path(report.graded_file).name if report.graded_file else report.model or "model"
    ax.plot(ks, [r.mean for r in report.pass_at_k], marker="o", label=label)
    ax.fill_between(ks, [r.ci_low for r in report.pass_at_k], [r.ci_high for r in report.pass_at_k], alpha=0.25,
                    label="95% CI")
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
