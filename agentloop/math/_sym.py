"""The sympy side of canonical forms: runs only inside pool workers, never in the parent.

Everything here may be slow or blow up (``10^{10^{10}}``), which is why the pool wraps each call
in a hard, process-killing timeout. Structures latex2sympy2 does not parse (tuples, intervals,
unions, sets, ``\\pm``, equations, matrices) are split here, and each piece is parsed alone.
"""

from __future__ import annotations

import math
import re

import sympy
from latex2sympy2 import latex2sympy

Result = tuple[str, float | None]
_I = sympy.Symbol("i")


def split_top(s: str, sep: str) -> list[str]:
    """Split on ``sep`` outside any (), [], {} nesting; unbalanced input is simply not split."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(s[start:])
    return parts


def scalar(s: str) -> sympy.Basic:
    """One expression → simplified sympy; ``i`` is the imaginary unit, as in MATH answers."""
    if not s.strip():
        raise ValueError("empty")
    expr = latex2sympy(s)
    if not isinstance(expr, sympy.Basic):
        raise ValueError(f"not an expression: {type(expr).__name__}")
    if _I in expr.free_symbols:
        expr = expr.subs(_I, sympy.I)
    expr = sympy.simplify(expr)
    if expr.free_symbols and expr.is_polynomial():
        expr = sympy.expand(expr)  # (x+1)^2 and x^2+2x+1: simplify alone leaves both as they are
    return expr


def _value(expr: sympy.Basic) -> float | None:
    """A float for real numeric scalars, so the parent can apply a relative tolerance."""
    if not getattr(expr, "is_number", False):
        return None
    try:
        z = complex(sympy.N(expr, 20))
    except (TypeError, ValueError, OverflowError):
        return None
    if abs(z.imag) > 1e-12 * max(1.0, abs(z.real)) or not math.isfinite(z.real):
        return None
    return z.real


def _canon_scalar(s: str) -> str:
    return sympy.sstr(scalar(s))


def _equation(lhs: str, rhs: str) -> str:
    """``y = 2x + 3`` and ``2x + 3 = y`` agree: lhs − rhs, without content and sign."""
    diff = sympy.together(sympy.expand(scalar(lhs) - scalar(rhs)))
    num = sympy.expand(sympy.numer(diff))
    _, prim = num.as_content_primitive()
    if prim.could_extract_minus_sign():
        prim = -prim
    return f"Eq({sympy.sstr(sympy.expand(prim))}, 0)"


def _interval(s: str) -> sympy.Set | None:
    m = re.fullmatch(r"([\[(])(.*)([\])])", s)
    if not m:
        return None
    parts = split_top(m.group(2), ",")
    if len(parts) != 2:
        return None
    lo, hi = scalar(parts[0]), scalar(parts[1])
    return sympy.Interval(lo, hi, m.group(1) == "(", m.group(3) == ")")


def _matrix(s: str) -> str | None:
    m = re.fullmatch(r"\\begin\{[pbvBV]?matrix\}(.*)\\end\{[pbvBV]?matrix\}", s)
    if not m:
        return None
    rows = [r for r in m.group(1).split("\\\\") if r.strip()]
    cells = [[_canon_scalar(c) for c in r.split("&")] for r in rows]
    return "Matrix(" + repr(cells).replace("'", "") + ")"


def structured(s: str) -> str | None:
    """Canonical text for the structures latex2sympy2 misreads; None when ``s`` is a scalar."""
    if (mat := _matrix(s)) is not None:
        return mat
    if len(parts := split_top(s, "\\cup")) > 1:
        sets = [_interval(p) or sympy.FiniteSet(*map(scalar, _items(p))) for p in parts]
        return sympy.sstr(sympy.Union(*sets))
    if len(sides := split_top(s, "=")) == 2 and all(x.strip() for x in sides):
        return _equation(*sides)
    if s.count("\\pm") == 1:
        plus, minus = _canon_scalar(s.replace("\\pm", "+")), _canon_scalar(s.replace("\\pm", "-"))
        return "{" + ", ".join(sorted({plus, minus})) + "}"
    if re.fullmatch(r"\\\{.*\\\}", s):
        return "{" + ", ".join(sorted({_canon_scalar(x) for x in _items(s)})) + "}"
    if s[:1] in "[(" and s[-1:] in "])" and s[0] + s[-1] not in ("()", "[]"):
        return sympy.sstr(_interval(s)) if _interval(s) is not None else None
    if s[:1] == "(" and s[-1:] == ")" and len(parts := split_top(s[1:-1], ",")) > 1:
        return "(" + ", ".join(_canon_scalar(p) for p in parts) + ")"
    if s[:1] == "[" and s[-1:] == "]" and len(split_top(s[1:-1], ",")) == 2:
        return sympy.sstr(_interval(s))
    if len(parts := split_top(s, ",")) > 1:  # "3, 5, 7": all the solutions, order-free
        return "{" + ", ".join(sorted({_canon_scalar(p) for p in parts})) + "}"
    return None


def _items(s: str) -> list[str]:
    """The members of ``\\{a, b\\}`` (or a bare list)."""
    inner = s[2:-2] if s.startswith("\\{") and s.endswith("\\}") else s
    return [p for p in split_top(inner, ",") if p.strip()]


def canonical_form(norm: str) -> Result | None:
    """Worker entry: (canonical text, real value or None), or None when nothing parses."""
    try:
        if (text := structured(norm)) is not None:
            return text, None
        expr = scalar(norm)
        if expr.has(sympy.zoo, sympy.nan):
            return None  # \frac{1}{0}: keep the string, do not equate all undefined answers
        return sympy.sstr(expr), _value(expr)
    except Exception:  # noqa: BLE001 - latex2sympy raises bare Exception on parse errors
        return None
