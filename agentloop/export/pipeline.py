"""`export_runs`: run dirs → fine-tuning JSONL, streamed one task at a time.

Outputs are written to temporary files renamed into place at the end, so a failed export leaves
no half-written dataset (and the run dirs are only ever read).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rich.console import Console

from agentloop.errors import ConfigError
from agentloop.export.episodes import Episode, dpo_episode_record, episodes, iter_unique, sft_episode_record, split_rows
from agentloop.export.records import attempt_meta, dpo_record, final_messages, sft_record, trajectory_messages
from agentloop.export.select import FAILING, dedup_key, judged, pairs, trajectory_key, unique
from agentloop.export.source import Row, RunSource, close_runs, open_runs, task_groups
from agentloop.export.split import val_tasks
from agentloop.export.stats import ExportStats, print_stats
from agentloop.export.tokens import TokenCounter
from agentloop.sandbox.types import Verdict

FORMATS = ("sft", "dpo", "openai", "openai-dpo")
SHAPES = ("final", "trajectory")
VERIFIED_BY = ("grading", "feedback")
DEDUP = ("code", "text", "none")


@dataclass(frozen=True)
class ExportOptions:
    format: str = "sft"
    """`sft` (TRL messages), `dpo` (TRL prompt/chosen/rejected), `openai` (chat fine-tuning
    JSONL), `openai-dpo` (OpenAI preference fine-tuning JSONL)."""
    shape: str = "final"
    """SFT: `final` (task prompt → verified reply) or `trajectory` (the revision chain with its
    feedback turns, ending in the verified reply). Agent episodes are always whole transcripts."""
    verified_by: str = "grading"
    """`feedback`: trust the feedback tests (suites without hidden tests). Math always uses the reference."""
    dedup: str = "code"
    max_per_task: int | None = None
    """SFT: at most this many records per task (the first unique ones, runs in the order given)."""
    pairs_per_task: int = 1
    """DPO: pairs per task, each with a different rejected answer."""
    val_fraction: float = 0.0
    seed: int = 0
    tokenizer: str | None = None
    """Tokenizer for the token counts (`usage`: the server's numbers); default: the run's model's, if local."""

    @property
    def preference(self) -> bool:
        return self.format in ("dpo", "openai-dpo")

    def check(self) -> None:
        for name, allowed in (("format", FORMATS), ("shape", SHAPES), ("verified_by", VERIFIED_BY), ("dedup", DEDUP)):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"--{name.replace('_', '-')} {getattr(self, name)!r}: expected one of {', '.join(allowed)}")
        if self.preference and self.shape != "final":
            raise ConfigError(f"--shape {self.shape}: {self.format} pairs share the task prompt; use --shape final")
        if self.preference and self.max_per_task is not None:
            raise ConfigError(f"--max-per-task applies to SFT records; {self.format} takes --pairs-per-task")
        if self.max_per_task is not None and self.max_per_task < 1:
            raise ConfigError(f"--max-per-task {self.max_per_task}: expected an integer >= 1")
        if self.pairs_per_task < 1:
            raise ConfigError(f"--pairs-per-task {self.pairs_per_task}: expected an integer >= 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction {self.val_fraction}: expected a number in [0, 1)")


def output_paths(out: Path, val: bool, sidecar: bool) -> dict[str, Path]:
    """`out` (train), `<stem>.val<suffix>`, their `.metadata.jsonl` sidecars (OpenAI formats take
    no extra keys), and `<stem>.stats.json`."""
    stem, suffix = (out.name[: -len(out.suffix)], out.suffix) if out.suffix else (out.name, ".jsonl")
    paths = {"train": out}
    if val:
        paths["val"] = out.with_name(f"{stem}.val{suffix}")
    if sidecar:
        paths |= {f"{k}_meta": p.with_name(f"{p.name[: -len(p.suffix)] if p.suffix else p.name}.metadata.jsonl")
                  for k, p in list(paths.items())}
    return paths | {"stats": out.with_name(f"{stem}.stats.json")}


class _Outputs:
    """Temporary files, renamed into place only when every record is written."""

    def __init__(self, paths: dict[str, Path]):
        self.paths = paths
        self._tmp = {k: p.with_name(f".{p.name}.tmp") for k, p in paths.items()}
        self._files: dict[str, IO[str]] = {}

    def __enter__(self) -> _Outputs:
        for key, tmp in self._tmp.items():
            if key != "stats":
                self._files[key] = open(tmp, "w", encoding="utf-8")
        return self

    def write(self, key: str, record: dict[str, Any]) -> None:
        self._files[key].write(json.dumps(record, ensure_ascii=False) + "\n")

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        for f in self._files.values():
            f.close()
        for key, tmp in self._tmp.items():
            if exc_type is None and tmp.exists():
                tmp.replace(self.paths[key])
            else:
                tmp.unlink(missing_ok=True)


def export_runs(run_dirs: Sequence[str | Path], out: str | Path, options: ExportOptions | None = None,
                console: Console | None = None) -> ExportStats:
    """Export the verified attempts (SFT) or verified/failing pairs (DPO) of one or more run dirs
    to `out`; returns the stats, which are also printed and written to `<stem>.stats.json`."""
    opts = options or ExportOptions()
    opts.check()
    if isinstance(run_dirs, (str, Path)):  # one run dir, not a sequence of characters
        run_dirs = [run_dirs]
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a directory; expected a file path like {out}/train.jsonl")
    if not run_dirs:
        raise ConfigError("no run directory given; expected one or more RUN_DIR")
    sources = open_runs([Path(d) for d in run_dirs])
    try:
        stats = _export(sources, out, opts)
    finally:
        close_runs(sources)
    print_stats(stats, console or Console(stderr=True))
    return stats


def _export(sources: list[RunSource], out: Path, opts: ExportOptions) -> ExportStats:
    task_ids = set().union(*(s.tasks for s in sources))
    val = val_tasks(task_ids, opts.val_fraction, opts.seed)
    counter = TokenCounter(sources, opts.tokenizer)
    stats = ExportStats(opts.format, opts.shape, opts.verified_by, opts.dedup, tasks_total=len(task_ids),
                        val_tasks=sorted(val))
    read = dict.fromkeys(range(len(sources)), 0)
    paths = output_paths(out, opts.val_fraction > 0, opts.format.startswith("openai"))
    out.parent.mkdir(parents=True, exist_ok=True)
    with _Outputs(paths) as outputs:
        for task_id, rows in task_groups(sources):
            for r in rows:
                read[r.run] += 1
            split = "val" if task_id in val else "train"
            n = 0
            for record, meta, tokens in _records(sources, rows, opts, counter, stats):
                outputs.write(split, record)
                if f"{split}_meta" in paths:
                    outputs.write(f"{split}_meta", meta)
                stats.tokens["prompt"] += tokens[0]
                stats.tokens["completion"] += tokens[1]
                n += 1
            if n:
                stats.per_task[task_id] = n
                stats.records[split] += n
    stats.attempts_read = sum(read.values())
    stats.runs = [{"run": s.run_id, "run_dir": str(s.run_dir), "model": s.model, "suite": s.suite.name,
                   "attempts_read": read[s.index], "finished": s.finished, "tokens_from": counter.sources[s.run_id]}
                  for s in sources]
    stats.files = [str(p) for p in paths.values()]
    stats.write(paths["stats"])
    return stats


Record = tuple[dict[str, Any], dict[str, Any], tuple[int, int]]


def _per_row(fn: Callable[[Row], str]) -> Callable[[Row], str]:
    """`fn` computed once per row of a task (dedup keys are the expensive part of an export)."""
    memo: dict[tuple[int, int], str] = {}

    def cached(r: Row) -> str:
        k = (r.run, r.id)
        if k not in memo:
            memo[k] = fn(r)
        return memo[k]
    return cached


def _records(sources: list[RunSource], rows: list[Row], opts: ExportOptions, counter: TokenCounter,
             stats: ExportStats) -> Iterator[Record]:
    """One task's records (with their metadata and token counts)."""
    agent_rows, rows = split_rows(rows)
    if agent_rows:
        yield from _episode_records(sources, agent_rows, opts, counter, stats)
    if not rows:
        return
    firsts: dict[int, Row] = {}
    turn0: dict[int, int] = {}
    for r in rows:
        firsts.setdefault(r.run, r)
        if r.turn == 0 and r.prompt_tokens is not None:
            turn0.setdefault(r.run, r.prompt_tokens)
    # A list, not a generator: it checks that every run knows the task.
    math = any([sources[run].task(r).is_math for run, r in firsts.items()])  # noqa: C419
    key = _per_row(lambda r: dedup_key(r, opts.dedup, math))
    verified = [r for r in rows if judged(r, opts.verified_by, math) == Verdict.PASSED.value]
    stats.verified += len(verified)
    if opts.preference:
        code = key if opts.dedup == "code" else _per_row(lambda r: dedup_key(r, "code", math))
        yield from _pairs(sources, rows, verified, key, code, math, opts, counter, stats, turn0)
        return
    if opts.shape == "trajectory":
        chains: dict[tuple[int, str, int], dict[int, Row]] = {}
        for r in rows:
            chains.setdefault(r.chain_key, {})[r.turn] = r
        kept, dups = unique(verified, lambda r: trajectory_key(r, chains, key))
    else:
        kept, dups = unique(verified, key)
    stats.duplicates += dups
    if opts.max_per_task is not None and len(kept) > opts.max_per_task:
        stats.capped += len(kept) - opts.max_per_task
        kept = kept[: opts.max_per_task]
    for r in kept:
        source = sources[r.run]
        messages = (trajectory_messages if opts.shape == "trajectory" else final_messages)(source, r)
        meta = {"shape": opts.shape, "verified_by": "reference" if math else opts.verified_by,
                **attempt_meta(source, r)}
        usage_prompt = r.prompt_tokens if opts.shape == "trajectory" else turn0.get(r.run, r.prompt_tokens)
        tokens = counter.count(r.run, messages[:-1], [r], usage_prompt)
        yield sft_record(opts.format, messages, meta), meta, tokens


def _pairs(sources: list[RunSource], rows: list[Row], verified: list[Row], key: Callable[[Row], str],
           code: Callable[[Row], str], math: bool, opts: ExportOptions, counter: TokenCounter, stats: ExportStats,
           turn0: dict[int, int]) -> Iterator[Record]:
    chosen, dups = unique(verified, key)
    stats.duplicates += dups
    # Never reject a code that also passed (a flaky test or a timeout): compare by normalized code.
    passed = {code(r) for r in verified}
    failing = [r for r in rows if judged(r, opts.verified_by, math) in FAILING and code(r) not in passed]
    rejected, _ = unique(failing, key)
    if chosen and not rejected:
        stats.tasks_without_pair += 1
    for p in pairs(chosen, rejected, opts.pairs_per_task, verified_by=opts.verified_by, math=math,
                   prompt_of=lambda r: sources[r.run].prompt_key(r)):
        source = sources[p.chosen.run]
        prompt = source.prompt(p.chosen)
        meta = {"task_id": p.chosen.task_id, "near_miss": p.near_miss, "similarity": p.similarity,
                "verified_by": "reference" if math else opts.verified_by,
                "chosen": attempt_meta(source, p.chosen), "rejected": attempt_meta(sources[p.rejected.run], p.rejected)}
        stats.near_miss[p.near_miss] += 1
        tokens = counter.count(p.chosen.run, prompt, [p.chosen, p.rejected], turn0.get(p.chosen.run))
        yield dpo_record(opts.format, prompt, p.chosen, p.rejected, meta), meta, tokens


def _episode_records(sources: list[RunSource], rows: list[Row], opts: ExportOptions, counter: TokenCounter,
                     stats: ExportStats) -> Iterator[Record]:
    """One task's agent episodes: verified transcripts (SFT, OpenAI) or resolved/unresolved pairs (DPO)."""
    ended, unfinished = episodes(sources, rows)
    stats.episodes["unfinished"] += unfinished
    stats.episodes["ended"] += len(ended)
    verified_by = opts.verified_by

    def resolved(ep: Episode) -> bool:
        return judged(ep.final, verified_by, False) == Verdict.PASSED.value

    good = [ep for ep in ended if resolved(ep)]
    stats.episodes["resolved"] += len(good)
    stats.verified += len(good)
    if opts.format == "openai-dpo":  # one assistant message per side: a transcript does not fit
        stats.episodes["not_paired"] += len(ended)
        return
    if opts.preference:
        yield from _episode_pairs(ended, good, opts, counter, stats)
        return
    kept = list(iter_unique(good, opts.dedup))
    stats.duplicates += len(good) - len(kept)
    for ep in kept:
        transcript = ep.transcript()
        meta = {"shape": "episode", "verified_by": verified_by, **ep.meta(True)}
        tokens = counter.count_transcript(ep.final.run, transcript, ep.steps, ep.tools())
        yield sft_episode_record(opts.format, ep, transcript, meta), meta, tokens


def _episode_pairs(ended: list[Episode], good: list[Episode], opts: ExportOptions, counter: TokenCounter,
                   stats: ExportStats) -> Iterator[Record]:
    by_row = {(ep.final.run, ep.final.id): ep for ep in ended}
    chosen = list(iter_unique(good, opts.dedup))
    stats.duplicates += len(good) - len(chosen)
    passing = {dedup_key(ep.final, "code", False) for ep in good}
    failing = [ep for ep in ended if judged(ep.final, opts.verified_by, False) in FAILING
               and dedup_key(ep.final, "code", False) not in passing]
    rejected = list(iter_unique(failing, opts.dedup))
    if chosen and not rejected:
        stats.tasks_without_pair += 1

    def prompt_of(r: Row) -> str:  # pair episodes that started from the same prompt (and protocol)
        ep = by_row[(r.run, r.id)]
        messages = ep.source.store.messages(ep.steps[0].messages_hash)
        return json.dumps([messages, ep.tools()], sort_keys=True, default=str)

    for p in pairs([ep.final for ep in chosen], [ep.final for ep in rejected], opts.pairs_per_task,
                   verified_by=opts.verified_by, math=False, prompt_of=prompt_of):
        win, lose = by_row[(p.chosen.run, p.chosen.id)], by_row[(p.rejected.run, p.rejected.id)]
        meta = {"task_id": win.final.task_id, "near_miss": p.near_miss, "similarity": p.similarity,
                "verified_by": opts.verified_by, "chosen": win.meta(True), "rejected": lose.meta(False)}
        stats.near_miss[p.near_miss] += 1
        record = dpo_episode_record(win, lose, meta)
        tokens = counter.count_transcript(win.final.run, win.transcript(), win.steps, win.tools())
        lost = counter.count_transcript(lose.final.run, lose.transcript(), lose.steps, lose.tools())
        yield record, meta, (tokens[0], tokens[1] + lost[1])
