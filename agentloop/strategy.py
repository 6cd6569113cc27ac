"""Strategies: how a per-task budget is split into N parallel chains of up to M turns.

`N:M` is N chains × up to M turns ("16:1" is parallel sampling, "1:16" one long revision chain).
`agent:NxM` is N agent episodes × up to M steps each (agentloop/agent): the same budget shape, a
step being one generation. `parallel` (the `samples` setting alone) is `samples:1` under its
historical name. Seeds follow
the slot (strategy, task, chain, turn), never the request order, so a resumed run asks the same
thing; different strategies draw different samples.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from agentloop.errors import ConfigError
from agentloop.tasks.model import Task

PARALLEL = "parallel"
ADAPTIVE = "adaptive"
GRADE = "grade"
"""`agentloop grade`: completions made elsewhere, row i of a task as chain i, turn 0."""
AGENT_PREFIX = "agent:"
_SPLIT = re.compile(r"^\s*(agent\s*:\s*)?(\d+)\s*[:x]\s*(\d+)\s*$")


@dataclass(frozen=True)
class Split:
    name: str
    chains: int
    """N: independent chains per task."""
    turns: int
    """M: the most turns one chain may take (1 = parallel sampling); for agent episodes, steps."""
    agent: bool = False
    """N agent episodes of up to M steps (`agent:NxM`) instead of revision chains."""

    @property
    def generations(self) -> int:
        return self.chains * self.turns


@dataclass(frozen=True)
class Request:
    """One request: the same turn of `chains` (n = len(chains) choices of one prompt)."""

    task: Task
    chains: tuple[int, ...]
    turn: int
    seed: int | None


def parse_split(text: str, where: str = "splits") -> Split:
    """`"4:4"` (or `"4x4"`) → Split("4:4", 4, 4); `"agent:2x16"` → Split("agent:2x16", 2, 16, agent=True)."""
    m = _SPLIT.match(text)
    if not m or int(m[2]) < 1 or int(m[3]) < 1:
        raise ConfigError(f"{where}: {text!r:.40} is not a split; expected 'N:M' (N chains × up to M turns, "
                          "both >= 1), e.g. '4:4', or 'agent:NxM' (N episodes × up to M steps), e.g. 'agent:2x16'")
    n, t = int(m[2]), int(m[3])
    if m[1]:
        return Split(f"{AGENT_PREFIX}{n}x{t}", n, t, agent=True)
    return Split(f"{n}:{t}", n, t)


def fixed_splits(splits: list[str] | None, samples: int, adaptive: bool = False) -> list[Split]:
    """The run's fixed strategies: its `splits`, else parallel sampling of `samples` per task
    (none when the run is adaptive with a table and no splits: adaptive alone)."""
    if splits:
        return [parse_split(s) for s in splits]
    return [] if adaptive else [Split(PARALLEL, samples, 1)]


def split_of(strategy: str, samples: int) -> Split | None:
    """The split a stored strategy name stands for (None for `adaptive`, whose chains vary by task).
    `parallel` and `grade` (graded files) are samples × 1."""
    if strategy in (PARALLEL, GRADE):
        return Split(strategy, samples, 1)
    if strategy == ADAPTIVE:
        return None
    return parse_split(strategy, "strategy")


def slot_seed(seed: int | None, strategy: str, task_index: int, chain: int, turn: int) -> int | None:
    """A request's seed from its first slot: distinct per slot and stable across resumes."""
    if seed is None:
        return None
    return seed + zlib.crc32(f"{strategy}/{task_index}/{chain}/{turn}".encode()) % 1_000_003


def chunks(items: list[int], size: int) -> list[tuple[int, ...]]:
    return [tuple(items[i : i + size]) for i in range(0, len(items), size)]


def is_agent(strategy: str) -> bool:
    """Whether a stored strategy name is agent episodes (`agent:NxM`)."""
    return strategy.startswith(AGENT_PREFIX)
