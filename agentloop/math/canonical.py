"""Canonical answer forms: group equivalent final answers without ground truth.

Two stages. ``normalize`` (pure string work, in this process) removes spelling differences.
Then, for anything that is not a plain integer, text or choice letter, a pool worker parses the
string with latex2sympy2, simplifies it with sympy and prints it back (``sympy.sstr``; sets sorted,
tuples in order, intervals and unions as sympy sets, equations as ``Eq(lhs - rhs, 0)`` without
sign or content, matrices element-wise). A parse failure, a crash or the hard timeout (default
2 s per item) falls back to the normalized string, so equal strings still compare equal.

Numeric tolerance: real scalars also carry a float value, and two answers whose values agree
within a relative 1e-6 (absolute 1e-9 near zero) are equal, e.g. ``0.5773503`` and
``\\frac{1}{\\sqrt3}``. Results are cached by input string (an LRU in the parent).
"""

from __future__ import annotations

import atexit
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from agentloop.math.normalize import normalize
from agentloop.math.pool import CanonPool

REL_TOL, ABS_TOL = 1e-6, 1e-9
MAX_PARSE_CHARS = 1000  # longer answers are never a sensible final answer: keep the string


@dataclass(frozen=True, slots=True)
class Canon:
    """A canonical form: its text (what votes group by) and, for real scalars, its value."""

    text: str
    value: float | None = None
    parsed: bool = False


class _State:
    """The process-wide pool and cache, created on first use and closed at exit."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cache: OrderedDict[str, Canon] = OrderedDict()
        self.max_cache = 200_000
        self.pool: CanonPool | None = None
        self.workers, self.timeout_s = 2, 2.0

    def get_pool(self) -> CanonPool:
        with self.lock:
            if self.pool is None:
                self.pool = CanonPool(self.workers, self.timeout_s)
            return self.pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None


_STATE = _State()
atexit.register(_STATE.close)


def configure(workers: int = 2, timeout_s: float = 2.0, cache_size: int = 200_000) -> None:
    """Set the pool size and the per-item timeout (restarts the pool; keeps the cache)."""
    _STATE.close()
    _STATE.workers, _STATE.timeout_s, _STATE.max_cache = workers, timeout_s, cache_size


def _fast(norm: str) -> Canon | None:
    """Forms that need no sympy: integers, plain text, multiple-choice letters, empty."""
    if not norm:
        return Canon("")
    if re.fullmatch(r"-?\d{1,300}", norm):
        return Canon(str(int(norm)), float(int(norm)) if len(norm) < 300 else None, True)
    if m := re.fullmatch(r"\(?([A-E])\)?", norm):
        return Canon(m.group(1), None, True)
    if re.fullmatch(r"[A-Za-z][A-Za-z ]*[A-Za-z]", norm) and len(norm.replace(" ", "")) >= 3:
        return Canon(norm.lower(), None, True)  # "Evelyn", "even": words, not products of symbols
    return None


def _cache_put(key: str, canon: Canon) -> None:
    cache = _STATE.cache
    cache[key] = canon
    if len(cache) > _STATE.max_cache:
        cache.popitem(last=False)


def canonicals(strings: Iterable[str]) -> list[Canon]:
    """Batch canonicalization: dedup, cache lookups, the rest fanned out over the pool."""
    strings = list(strings)
    found: dict[str, Canon] = {}
    pending: dict[str, str] = {}  # raw -> normalized
    for s in set(strings):
        if (hit := _STATE.cache.get(s)) is not None:
            found[s] = hit
        elif (quick := _fast(norm := normalize(s))) is not None or len(norm) > MAX_PARSE_CHARS:
            found[s] = quick or Canon(norm)
        else:
            pending[s] = norm
    todo = sorted(set(pending.values()))
    results = dict(zip(todo, _STATE.get_pool().map(todo), strict=True)) if todo else {}
    for s, norm in pending.items():
        r = results[norm]
        found[s] = Canon(r[0], r[1], True) if r is not None else Canon(norm)
    for s, canon in found.items():
        _cache_put(s, canon)
    return [found[s] for s in strings]


def canonical_answers(strings: Iterable[str]) -> list[str]:
    """The canonical text of each answer, in order (see the module docstring)."""
    return [c.text for c in canonicals(strings)]


def canonical_answer(s: str) -> str:
    """The canonical text of one answer: equal texts mean equal answers (up to tolerance)."""
    return canonicals([s])[0].text


def close_enough(a: Canon, b: Canon) -> bool:
    """Same text, or both real numbers within the documented tolerance."""
    if a.text == b.text:
        return True
    if a.value is None or b.value is None:
        return False
    return math.isclose(a.value, b.value, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def answers_equal(a: str, b: str) -> bool:
    """Whether two final answers are the same answer (``0.5`` and ``\\frac12`` are)."""
    ca, cb = canonicals([a, b])
    return close_enough(ca, cb)


async def canonical_answers_async(strings: Iterable[str]) -> list[str]:
    """``canonical_answers`` for the anyio runner: the blocking pool call runs in a thread."""
    import anyio.to_thread

    items = list(strings)
    return await anyio.to_thread.run_sync(canonical_answers, items)
