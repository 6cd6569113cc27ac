"""Canonical answer forms and answer comparison: group and compare final answers.

Two stages. ``normalize`` (pure string work, in this process) removes spelling differences and
reads plain numbers exactly (``Fraction``); numbers, number-only tuples/sets/intervals, words and
choice letters never leave this process. Everything else goes to a pool worker, which parses the
string with latex2sympy2, simplifies it with sympy and prints it back (`agentloop.math._sym`).
A parse failure or an item over its limit (default 2 CPU seconds, see `agentloop.math.worker`) falls
back to the normalized string, so equal strings still compare equal; a pool that cannot answer at
all raises `MathWorkerError` (never a string-comparison verdict it did not compute).

Numbers (see `numbers_equal`): two integers compare exactly (``1450000`` is not ``1450001``,
however large). A tolerance applies only when a value is not an integer: if either answer is
written with a decimal (``0.333333``), the values must agree to ``precision`` decimal places
(|a − b| ≤ 10^−precision, and within 5·10^−precision relative, so ``6.72e-5`` is not ``6.73e-5``);
two exact non-integers (``\\sqrt{2}``, ``99/70``) must agree to 12 significant digits (a numeric
identity check, not a rounding allowance). Tuples, sets, intervals and matrices apply the rule
leaf by leaf.

Labelled and relational answers (see `analyze`): ``x = 3``, ``(p,q) = (3,2)``, ``f(x) = 2x+3``,
``x \\in [-2,7]``, ``x \\ge 5`` state a value for a label; compared with an unlabelled answer, the
value is what counts (``x \\ge 5`` is the interval ``[5, oo)``). Two labelled answers need the same
label (unless ``strict=False``). Other equations compare as ``Eq(lhs - rhs, 0)`` up to sign and
content, other univariate inequalities as the set they describe. Results are cached by string.
"""

from __future__ import annotations

import atexit
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from agentloop.math.normalize import (
    NeedSympy,
    Num,
    decimal_comma,
    fast_scalar,
    has_percent,
    is_inexact,
    is_tower,
    normalize,
    outer_group,
    parse_number,
    set_items,
    split_top,
    structure,
)
from agentloop.math.pool import CanonPool

DEFAULT_PRECISION = 6
EXACT_REL = 1e-12
MAX_PARSE_CHARS = 1000  # longer answers are never a sensible final answer: keep the string


@dataclass(frozen=True, slots=True)
class Canon:
    """A canonical form: its text (what votes group by), its number leaves and how it was written.

    ``shape`` is ``text`` with each real-number leaf replaced by ``#`` ("" when there is none);
    ``nums`` are those leaves (int when an integer, else float); ``inexact``: written with a
    decimal; ``percent``: written as a percentage; ``parsed``: canonicalized (not a fallback).
    """

    text: str
    shape: str = ""
    nums: tuple[Num, ...] = ()
    inexact: bool = False
    percent: bool = False
    parsed: bool = False

    @property
    def value(self) -> Num | None:
        """The number, for a plain real number; else None."""
        return self.nums[0] if self.shape == "#" else None


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
    """Set the pool size and the per-item limit in CPU seconds (restarts the pool; keeps the cache)."""
    _STATE.close()
    _STATE.workers, _STATE.timeout_s, _STATE.max_cache = workers, timeout_s, cache_size


def _fast(norm: str) -> Canon | None:
    """Forms that need no sympy: numbers and number-only structures, words, choice letters."""
    if not norm:
        return Canon("")
    try:
        text, shape, nums = structure(norm, fast_scalar)
    except (NeedSympy, ValueError, RecursionError):
        return None
    return Canon(text, shape, nums, is_inexact(norm), False, True)


def _cache_put(key: str, canon: Canon) -> None:
    cache = _STATE.cache
    cache[key] = canon
    if len(cache) > _STATE.max_cache:
        cache.popitem(last=False)


def _canon_norms(norms: list[str]) -> list[Canon]:
    """Canonical forms of normalized strings: cache, parent fast path, then one pool round trip."""
    found: dict[str, Canon] = {}
    todo: list[str] = []
    for n in dict.fromkeys(norms):
        key = "\x00" + n
        if (hit := _STATE.cache.get(key)) is not None:
            found[n] = hit
        elif len(n) > MAX_PARSE_CHARS or is_tower(n):
            found[n] = Canon(n)
        elif (quick := _fast(n)) is not None:
            found[n] = quick
        else:
            todo.append(n)
    if todo:
        for n, r in zip(todo, _STATE.get_pool().map(todo), strict=True):
            found[n] = Canon(r[0], r[1], r[2], is_inexact(n), False, True) if r is not None else Canon(n)
    for n, canon in found.items():
        _cache_put("\x00" + n, canon)
    return [found[n] for n in norms]


# ---------------------------------------------------------------------------------------------
# labelled and relational answers

_GREEK = ("alpha|beta|gamma|delta|epsilon|varepsilon|zeta|eta|theta|vartheta|iota|kappa|lambda|mu|nu|xi|"
          "rho|sigma|tau|upsilon|phi|varphi|chi|psi|omega|Gamma|Delta|Theta|Lambda|Xi|Sigma|Phi|Psi|Omega")
_REL_OPS = re.compile(r"\\le(?![a-zA-Z])|\\ge(?![a-zA-Z])|\\ne(?![a-zA-Z])|\\approx(?![a-zA-Z])|"
                      r"\\in(?![a-zA-Z])|<|>|=")


def is_label(s: str) -> bool:
    """Whether ``s`` names something rather than states a value: ``x``, ``a_1``, ``AB``, ``|AB|``,
    ``(p,q)``, ``f(x)``, ``S_{MBCN}:S``, ``\\\\frac{NO}{BO}``, ``\\\\angle ABC``, ``\\\\theta``."""
    if not s or len(s) > 60:
        return False
    if re.fullmatch(r"[a-zA-Z](?:\^\{?-1\}?)?\([^()]*\)", s):  # f(x), f(2), g^{-1}(3)
        return True
    t = re.sub(r"_\{[^{}]*\}|_[a-zA-Z0-9]", "", s)
    t = re.sub(r"\\(?:angle|triangle|overline|vec|hat|bar|widehat|overrightarrow|measuredangle|m)(?![a-zA-Z])"
               r"|\\frac|\\(?:" + _GREEK + r")(?![a-zA-Z])|[|:(){},' ]|\\prime", "x", t)
    return bool(re.fullmatch(r"[a-zA-Z]+", t)) and "\\" not in t


def _split_rel(n: str) -> tuple[list[str], list[str]]:
    """Top-level relation chain: sides and operators (``x=5+5+1=11`` → 3 sides, 2 ``=``)."""
    sides, ops, depth, start, i = [], [], 0, 0, 0
    while i < len(n):
        c = n[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and (m := _REL_OPS.match(n, i)):
            sides.append(n[start:i].strip())
            ops.append(m.group(0))
            start = i = m.end()
            continue
        i += 1
    sides.append(n[start:].strip())
    return sides, ops


_LOWER = {"<": "<", "\\le": "\\le"}
_UPPER = {">": ">", "\\ge": "\\ge"}


def _interval(lo: str, lo_op: str, hi: str, hi_op: str) -> str:
    return ("(" if lo_op in ("<", ">") else "[") + lo + "," + hi + (")" if hi_op in ("<", ">") else "]")


@dataclass(frozen=True, slots=True)
class Form:
    """What an answer states: ``kind`` plain (a value), label (``label`` = value, or ``label`` in
    the set ``value``), rel (a general relation, ``value`` is all of it), list (labelled items)."""

    value: str
    kind: str = "plain"
    label: str | None = None
    from_ineq: bool = False
    whole: str = ""
    items: tuple[tuple[str, str], ...] = ()


def _ineq_form(sides: list[str], ops: list[str], whole: str) -> Form | None:
    """``x \\\\ge 5``, ``5 < x``, ``-2 \\\\le x \\\\le 7``, ``x \\\\ne 3`` on a label → the set of values."""
    if len(sides) == 2 and ops[0] == "\\ne" and is_label(sides[0]) and not is_label(sides[1]):
        c = sides[1]
        return Form(f"(-\\infty,{c})\\cup({c},\\infty)", "label", sides[0], True, whole)
    if len(sides) == 2:
        a, op, b = sides[0], ops[0], sides[1]
        if is_label(b) and not is_label(a):  # 5 < x  →  x > 5
            a, b, op = b, a, {"<": ">", ">": "<", "\\le": "\\ge", "\\ge": "\\le"}.get(op, op)
        if not is_label(a) or is_label(b) or op not in ("<", ">", "\\le", "\\ge"):
            return None
        if op in _LOWER:
            return Form(_interval("-\\infty", "<", b, op), "label", a, True, whole)
        return Form(_interval(b, op, "\\infty", "<"), "label", a, True, whole)
    if len(sides) == 3 and is_label(sides[1]) and not is_label(sides[0]) and not is_label(sides[2]):
        if ops[0] in _LOWER and ops[1] in _LOWER:
            return Form(_interval(sides[0], ops[0], sides[2], ops[1]), "label", sides[1], True, whole)
        if ops[0] in _UPPER and ops[1] in _UPPER:
            return Form(_interval(sides[2], ops[1], sides[0], ops[0]), "label", sides[1], True, whole)
    return None


def _abs_label(f: Form) -> Form:
    """``1 \\le |z| \\le 3/2`` is about z: ``[-3/2, -1] U [1, 3/2]`` (number bounds only)."""
    m = re.fullmatch(r"\|([a-zA-Z])\|", f.label or "")
    g = outer_group(f.value)
    if not m:
        return f
    if g is None or len(parts := split_top(g[1], ",")) != 2:
        return Form(f.whole, "rel", whole=f.whole)
    if parts[0] == "-\\infty" and (c := parse_number(parts[1])) is not None and c > 0:  # |x| < c
        return Form(g[2].replace(")", "(").replace("]", "[") + f"-{parts[1]},{parts[1]}{g[2]}", f.kind, m.group(1),
                    f.from_ineq, f.whole)
    lo, hi = parse_number(parts[0]), parse_number(parts[1]) if parts[1] != "\\infty" else None
    if lo is None or lo < 0 or (hi is None and parts[1] != "\\infty"):
        return Form(f.whole, "rel", whole=f.whole)
    neg = g[2].replace(")", "(").replace("]", "[") + ("-\\infty" if hi is None else f"-{parts[1]}") + \
        f",-{parts[0]}" + g[0].replace("(", ")").replace("[", "]")
    mirror = g[2].replace(")", "(").replace("]", "[")
    value = f"{mirror}-{parts[1]},{parts[1]}{g[2]}" if lo == 0 and g[0] == "[" else f"{neg}\\cup{f.value}"
    return Form(value, f.kind, m.group(1), f.from_ineq, f.whole)


def analyze(n: str) -> Form:
    """Split a normalized answer into its label and its value (see `Form`)."""
    if len(n) > MAX_PARSE_CHARS or not _REL_OPS.search(n):
        return Form(n)
    groups = split_top(n, ";")
    if len(groups) > 1 and all(analyze(g).kind == "list" for g in groups):  # p=5,q=2;p=7,q=2
        return Form(",".join("(" + analyze(g).value + ")" for g in groups), whole=n)
    items = set_items(n) if outer_group(n) is None and not n.startswith("\\{") else None
    if items is not None and len(items) > 1:
        forms = [analyze(i) for i in items]
        if any(f.kind == "rel" for f in forms):
            return Form(n, "rel", whole=n)
        if forms[0].label is not None and all(f.label is None for f in forms[1:]):
            return Form(",".join(f.value for f in forms), "label", forms[0].label, False, n)
        if all(f.label is not None for f in forms):
            return Form(",".join(f.value for f in forms), "list", None, False, n,
                        tuple((f.label or "", f.value) for f in forms))
        return Form(",".join(f.value for f in forms), whole=n)
    sides, ops = _split_rel(n)
    if "\\approx" in ops:  # x = 1/3 \approx 0.33 → x = 1/3;  x \approx 11 → x = 11
        k = ops.index("\\approx")
        if k == 0 and is_label(sides[0]):
            ops = ["=", *ops[1:]]
        else:
            sides, ops = sides[:k + 1], ops[:k]
        if not ops:
            return Form(sides[0])
    if any(not s for s in sides):
        return Form(n)
    if all(op == "=" for op in ops):
        if is_label(sides[0]):
            return Form(sides[-1], "label", sides[0], whole=n)
        if len(sides) == 2 and is_label(sides[1]):
            return Form(sides[0], "label", sides[1], whole=n)
        if len(sides) >= 3 or not re.search(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", n)):
            return Form(sides[-1], "label", None, whole=n)  # 1/2 = 10/9, 1 = a = 0: the last value stated
        return Form(n, "rel", whole=n)
    if ops == ["\\in"] and is_label(sides[0]):
        return Form(sides[1], "label", sides[0], whole=n)
    if (f := _ineq_form(sides, ops, n)) is not None:
        return _abs_label(f)
    return Form(n, "rel", whole=n)


# ---------------------------------------------------------------------------------------------
# comparison

def numbers_equal(x: Num, y: Num, inexact: bool, precision: int = DEFAULT_PRECISION) -> bool:
    """The number rule (module docstring): integers exactly; non-integers written with a decimal
    to ``precision`` places (absolute, and 5·10^−precision relative); exact non-integers to 12
    significant digits."""
    if isinstance(x, int) and isinstance(y, int):
        return x == y
    d, m = abs(x - y), max(abs(x), abs(y))
    if not inexact:
        return d <= EXACT_REL * max(1.0, m)
    tol = 10.0 ** -precision
    return d <= tol * (1 + 1e-9) and d <= 5 * tol * m


def _rename(text: str) -> str:
    """Symbols renamed in order of appearance (``strict=False``: ``f(x)`` and ``f(y)`` agree)."""
    names: dict[str, str] = {}
    funcs = {"sqrt", "sin", "cos", "tan", "log", "exp", "pi", "oo", "Eq", "Matrix", "Abs", "I", "E", "U"}

    def sub(m: re.Match[str]) -> str:
        w = m.group(0)
        if w in funcs or (m.end() < len(text) and text[m.end()] == "(" and len(w) > 1):
            return w
        return names.setdefault(w, f"v{len(names)}")
    return re.sub(r"[A-Za-z_][A-Za-z_0-9]*", sub, text)


def close(a: Canon, b: Canon, precision: int = DEFAULT_PRECISION, strict: bool = True) -> bool:
    """Whether two canonical forms are the same answer (texts, then numbers leaf by leaf)."""
    if a.text == b.text:
        return True
    inexact = a.inexact or b.inexact
    if a.shape and a.shape == b.shape and len(a.nums) == len(b.nums) and \
            all(numbers_equal(x, y, inexact, precision) for x, y in zip(a.nums, b.nums, strict=True)):
        return True
    if a.percent != b.percent and a.shape == b.shape == "#":  # 28\% and 0.28
        p, q = (a, b) if a.percent else (b, a)
        x = p.nums[0]
        scaled = x // 100 if isinstance(x, int) and x % 100 == 0 else x / 100
        if numbers_equal(scaled, q.nums[0], True, precision):
            return True
    if not strict and a.parsed and b.parsed:
        return _rename(a.text) == _rename(b.text)
    return False


def _with_percent(c: Canon, raw: str) -> Canon:
    return Canon(c.text, c.shape, c.nums, c.inexact, True, c.parsed) if has_percent(raw) else c


def canonicals(strings: Iterable[str]) -> list[Canon]:
    """Batch canonicalization of raw answers (labels dropped: ``x = 5`` is ``5``)."""
    strings = list(strings)
    found: dict[str, Canon] = {}
    pending: dict[str, str] = {}
    for s in dict.fromkeys(strings):
        if (hit := _STATE.cache.get(s)) is not None:
            found[s] = hit
        else:
            f = analyze(normalize(s))
            pending[s] = f.value
    if pending:
        canons = _canon_norms(list(pending.values()))
        for (s, _), c in zip(pending.items(), canons, strict=True):
            found[s] = _with_percent(c, s)
            _cache_put(s, found[s])
    return [found[s] for s in strings]


def canonical_answers(strings: Iterable[str]) -> list[str]:
    """The canonical text of each answer, in order (see the module docstring)."""
    return [c.text for c in canonicals(strings)]


def canonical_answer(s: str) -> str:
    """The canonical text of one answer: equal texts mean equal answers (see `answers_equal`)."""
    return canonicals([s])[0].text


def close_enough(a: Canon, b: Canon) -> bool:
    """`close` with the default precision (what votes merge groups by)."""
    return close(a, b)


def answers_equal(a: str, b: str, *, precision: int = DEFAULT_PRECISION, strict: bool = True,
                  allow_set_relation_comp: bool | None = None) -> bool:
    """Whether two final answers are the same answer (``0.5`` and ``\\\\frac12`` are).

    ``precision``: decimal places to which a non-integer written as a decimal must agree (see
    `numbers_equal`). ``strict=False`` lets variable names differ (``f(x)`` and ``f(y)``).
    ``allow_set_relation_comp``: None (default) compares an inequality on a label with a set both
    ways; False only when ``a`` (the prediction) is the set and ``b`` (the gold) the relation, as
    math-verify does; True both ways.
    """
    na, nb = normalize(a), normalize(b)
    # a decimal comma only where nothing else is meant: no space after it ("2, 5" is two answers)
    # and the other answer a single number
    if (alt := decimal_comma(na)) is not None and not re.search(r",\s", a) and parse_number(nb) is not None:
        na = alt
    elif (alt := decimal_comma(nb)) is not None and not re.search(r",\s", b) and parse_number(na) is not None:
        nb = alt
    fa, fb = analyze(na), analyze(nb)
    if allow_set_relation_comp is False and fa.from_ineq and not fb.from_ineq and fb.kind != "rel":
        return False
    if fa.kind == "rel" or fb.kind == "rel":
        if fa.kind == fb.kind:
            pair = [fa.value, fb.value]
        elif fa.kind == "rel":
            pair = [fa.value, fb.whole if fb.kind == "label" and not fb.from_ineq and fb.whole else fb.value]
        else:
            pair = [fa.whole if fa.kind == "label" and not fa.from_ineq and fa.whole else fa.value, fb.value]
    elif fa.kind == fb.kind == "list":
        if sorted(x for x, _ in fa.items) != sorted(x for x, _ in fb.items) and strict:
            return False
        pair = [",".join(f"{k}={v}" for k, v in fa.items), ",".join(f"{k}={v}" for k, v in fb.items)]
    else:
        if strict and fa.label and fb.label and fa.label != fb.label and fa.kind == fb.kind == "label" and \
                fa.label.replace(" ", "") != fb.label.replace(" ", ""):
            return False
        pair = [fa.value, fb.value]
    if pair[0] == pair[1]:
        return True  # the same normalized text: the same canonical form, whatever it is
    ca, cb = _canon_norms(pair)
    return close(_with_percent(ca, a), _with_percent(cb, b), precision, strict)


async def canonical_answers_async(strings: Iterable[str]) -> list[str]:
    """``canonical_answers`` for the anyio runner: the blocking pool call runs in a thread."""
    import anyio.to_thread

    items = list(strings)
    return await anyio.to_thread.run_sync(canonical_answers, items)
