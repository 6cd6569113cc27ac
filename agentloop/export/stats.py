"""What an export produced: printed after it and written next to it (`<out>.stats.json`)."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console


@dataclass
class ExportStats:
    format: str
    shape: str
    verified_by: str
    dedup: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    """Per run: id, dir, model, suite, attempts read, whether it finished, token count source."""
    attempts_read: int = 0
    """Completed attempts streamed from the stores (infra errors are not read)."""
    verified: int = 0
    duplicates: int = 0
    """Verified attempts dropped as duplicates (same normalized code, answer or chain)."""
    capped: int = 0
    """Unique verified attempts left out by the per-task cap."""
    records: dict[str, int] = field(default_factory=lambda: {"train": 0, "val": 0})
    tasks_total: int = 0
    """Tasks in the runs' task tables (union by id)."""
    val_tasks: list[str] = field(default_factory=list)
    per_task: dict[str, int] = field(default_factory=dict)
    """Records per task id (tasks without records are absent)."""
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0})
    """Summed over records: prompt tokens and reply tokens (DPO: chosen + rejected)."""
    near_miss: Counter[str] = field(default_factory=Counter)
    """DPO: pairs by how their rejected answer was picked."""
    tasks_without_pair: int = 0
    """DPO: tasks with a verified answer but no failing one to pair it with."""
    files: list[str] = field(default_factory=list)
    episodes: Counter[str] = field(default_factory=Counter)
    """Agent episodes: `ended` (read), `resolved` (final state verified), `unfinished` (left out:
    no outcome yet), `not_paired` (openai-dpo takes one reply per side, not a transcript)."""

    @property
    def dedup_ratio(self) -> float:
        """Unique verified attempts / verified attempts (1.0: no duplicates)."""
        return round((self.verified - self.duplicates) / self.verified, 4) if self.verified else 1.0

    def covered(self, split: str | None = None) -> int:
        val = set(self.val_tasks)
        return sum(1 for t in self.per_task if split is None or (t in val) == (split == "val"))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["near_miss"] = dict(self.near_miss)
        d["episodes"] = dict(self.episodes)
        counts = sorted(self.per_task.values())
        d |= {
            "dedup_ratio": self.dedup_ratio, "tasks_covered": self.covered(),
            "tasks_covered_by_split": {"train": self.covered("train"), "val": self.covered("val")},
            "records_per_task": ({"min": counts[0], "median": statistics.median(counts), "max": counts[-1]}
                                 if counts else None),
            "tokens": {**self.tokens, "total": sum(self.tokens.values()),
                       "counted_with": sorted({r["tokens_from"] for r in self.runs})},
        }
        return d

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n")


def print_stats(stats: ExportStats, console: Console) -> None:
    d = stats.to_json()
    kind = "pairs" if stats.format in ("dpo", "openai-dpo") else "records"
    r = stats.records
    console.print(f"{kind}: {r['train'] + r['val']:,} (train {r['train']:,}, val {r['val']:,}) from "
                  f"{len(stats.runs)} run(s), {stats.attempts_read:,} completed attempts read",
                  highlight=False, soft_wrap=True)
    by_split = d["tasks_covered_by_split"]
    console.print(f"tasks covered: {d['tasks_covered']}/{stats.tasks_total} (train {by_split['train']}, "
                  f"val {by_split['val']} of {len(stats.val_tasks)} val tasks)", highlight=False, soft_wrap=True)
    console.print(f"verified attempts: {stats.verified:,} ({stats.verified_by}); "
                  f"unique: {stats.verified - stats.duplicates:,} "
                  f"(dedup ratio {stats.dedup_ratio:.2f}, by {stats.dedup}); "
                  f"left out by the per-task cap: {stats.capped:,}",
                  highlight=False, soft_wrap=True)
    if per := d["records_per_task"]:
        console.print(f"{kind} per task: min {per['min']}, median {per['median']:g}, max {per['max']}",
                      highlight=False, soft_wrap=True)
    if stats.near_miss or stats.tasks_without_pair:
        console.print(f"rejected picked by: {dict(stats.near_miss)}; "
                      f"tasks with nothing to pair: {stats.tasks_without_pair}",
                      highlight=False, soft_wrap=True)
    if stats.episodes:
        e = stats.episodes
        skipped = f", {e['not_paired']:,} (openai-dpo takes one reply per side)" if e["not_paired"] else ""
        console.print(f"agent episodes: {e['ended']:,} ended ({e['resolved']:,} resolved); left out: "
                      f"{e['unfinished']:,} unfinished{skipped}",
                      highlight=False, soft_wrap=True)
    t = d["tokens"]
    console.print(f"tokens ({', '.join(t['counted_with'])}): prompt {t['prompt']:,}, reply {t['completion']:,}, "
                  f"total {t['total']:,}", highlight=False, soft_wrap=True)
    for run in stats.runs:
        if not run["finished"]:
            console.print(f"note: run {run['run']} has not finished (resume it to complete it); exported what it has",
                          highlight=False, soft_wrap=True)
