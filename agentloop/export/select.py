"""Which attempts of one task become records: verified ones deduplicated and capped (SFT), and
verified/failing pairs that prefer near misses (DPO).

Verified means the grading tests passed (math: the answer equals the reference by canonical
form), or with `verified_by="feedback"` the feedback tests passed, for suites without hidden
tests. Infra errors never get here (only completed attempts are read), so a server or sandbox
failure is never a rejected answer. A code that both passed and failed (a flaky test or a
timeout) is never used as a rejected answer.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agentloop.export.source import Row
from agentloop.sandbox.types import Verdict
from agentloop.selection import code_key

FAILING = frozenset({Verdict.FAILED.value, Verdict.TIMEOUT.value, Verdict.ERROR.value})
SIMILARITY_POOL = 256
"""Rejected candidates scored for similarity per pair (the rest of a huge pool is not compared)."""
_SPACE = re.compile(r"\s+")


def judged(row: Row, verified_by: str, math: bool) -> str | None:
    """The verdict that decides: grading (always for math), or the feedback tests."""
    return row.feedback_verdict if verified_by == "feedback" and not math else row.verdict


def dedup_key(row: Row, dedup: str, math: bool) -> str:
    """`code`: AST-normalized code (math: the canonical answer); `text`: the reply with whitespace
    collapsed; `none`: every attempt is distinct."""
    if dedup == "none":
        return f"{row.run}:{row.id}"
    if dedup == "text":
        text = _SPACE.sub(" ", row.completion or "").strip()
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
    if math:
        return row.code or ""
    return code_key(row.code or "")


def trajectory_key(row: Row, chains: dict[tuple[int, str, int], dict[int, Row]], key: Callable[[Row], str]) -> str:
    """A chain up to `row`, keyed by each turn's dedup key: the same fixes in the same order match."""
    turns = chains.get(row.chain_key, {})
    return "|".join(key(turns[t]) if t in turns else "?" for t in range(row.turn + 1))


def unique(rows: Sequence[Row], key: Callable[[Row], str]) -> tuple[list[Row], int]:
    """The first row of each key, in order; and how many rows were duplicates."""
    seen: set[str] = set()
    kept = []
    for r in rows:
        k = key(r)
        if k not in seen:
            seen.add(k)
            kept.append(r)
    return kept, len(rows) - len(kept)


@dataclass(frozen=True)
class Pair:
    chosen: Row
    rejected: Row
    near_miss: str
    """`feedback_pass`: the rejected code passes the feedback tests but fails grading; `similar`:
    the most similar failing code (by changed lines) to the chosen one."""
    similarity: float


def pairs(chosen: Sequence[Row], rejected: Sequence[Row], count: int, *, verified_by: str,
          math: bool, prompt_of: Callable[[Row], str]) -> list[Pair]:
    """Up to `count` pairs with distinct rejected answers; chosen answers are used in turn. Only
    answers to the same prompt pair up."""
    result: list[Pair] = []
    used: set[tuple[int, int]] = set()
    while len(result) < count:
        before = len(result)
        for c in chosen[: count - len(result)]:
            pool = [r for r in rejected if (r.run, r.id) not in used and prompt_of(r) == prompt_of(c)]
            if not pool:
                continue
            near = [r for r in pool
                    if not math and verified_by == "grading" and r.feedback_verdict == Verdict.PASSED.value]
            tier, kind = (near, "feedback_pass") if near else (pool, "similar")
            # Most similar first; ties go to the earlier attempt.
            score, _, best = max((similarity(c, r, math), -n, r) for n, r in enumerate(tier[:SIMILARITY_POOL]))
            used.add((best.run, best.id))
            result.append(Pair(c, best, kind, round(score, 4)))
        if len(result) == before:
            break
    return result


def similarity(a: Row, b: Row, math: bool) -> float:
    """How alike two answers are: matching lines (code; the whole reply for math), 0..1."""
    text_a, text_b = (a.completion, b.completion) if math else (a.code, b.code)
    lines_a = [line.strip() for line in (text_a or "").splitlines() if line.strip()]
    lines_b = [line.strip() for line in (text_b or "").splitlines() if line.strip()]
    return difflib.SequenceMatcher(None, lines_a, lines_b, autojunk=False).ratio()
