"""Which attempt a user would submit for a task, decided without the grading tests.

The rule (documented in the README):
1. Candidates are the attempts whose code passes the feedback tests; if none does, every
   completed attempt is a candidate.
2. Among candidates, the code most of them agree on wins (codes compared after AST
   normalization, so formatting and comments don't split the vote).
3. Ties go to the attempt produced first: lowest turn, then lowest chain.
Success is the selected attempt passing the grading tests; oracle coverage (any attempt passes
the grading tests) is reported separately because no user could pick that way.
"""

from __future__ import annotations

import ast
import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Candidate:
    """The parts of an attempt selection and budget accounting need (cheap to hold by the million)."""

    chain: int
    turn: int
    code_key: str
    feedback_passed: bool
    passed: bool
    """Graded by the hidden tests: used to score the selection, never to make it."""
    prompt_tokens: float = 0.0
    """This attempt's share of its request's prompt tokens (siblings of one request split it)."""
    completion_tokens: int = 0


@lru_cache(maxsize=65536)
def code_key(code: str) -> str:
    """A key equal for codes that differ only in formatting and comments."""
    try:
        parts: list[str] = []
        _flatten(ast.parse(code), parts)
        text = "\x00".join(parts)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        text = "\n".join(line.rstrip() for line in code.strip().splitlines())
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _flatten(node: object, out: list[str]) -> None:
    """The syntax tree without positions: what `ast.dump` gives, ~1.5x faster (export and compare
    key every distinct code). Reprs never hold a raw NUL, so the joined parts cannot collide."""
    if isinstance(node, ast.AST):
        out.append(type(node).__name__)
        for name in node._fields:
            _flatten(getattr(node, name, None), out)
        out.append(")")
    elif isinstance(node, list):
        out.append("[")
        for item in node:
            _flatten(item, out)
        out.append("]")
    else:
        out.append(repr(node))


def select(candidates: Sequence[Candidate]) -> Candidate | None:
    if not candidates:
        return None
    pool = [c for c in candidates if c.feedback_passed] or list(candidates)
    votes = Counter(c.code_key for c in pool)
    return min(pool, key=lambda c: (-votes[c.code_key], c.turn, c.chain))
