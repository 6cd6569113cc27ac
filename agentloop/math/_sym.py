"""The sympy side of canonical forms: runs only inside pool workers, never in the parent.

Everything here may be slow or blow up (``10^{10^{10}}``), which is why the pool wraps each call
in a hard, process-killing timeout. Structures latex2sympy2 does not parse (tuples, intervals,
unions, sets, ``\\pm``) are split by `normalize.structure` (the same code the parent uses for
number-only answers, so both print the same), and each leaf is parsed alone. Relations are
canonicalized here: an equation as ``Eq(lhs - rhs, 0)`` without sign or content, a univariate
inequality as the set it describes.

latex2sympy2 1.9.1 keeps parser state in module globals (``convert_atom`` rebinds ``var`` when it
meets "d followed by a letter"), so every call first restores those globals: no verdict may depend
on what a worker parsed before.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

import latex2sympy2 as _l2s
import sympy
from latex2sympy2 import latex2sympy

from agentloop.math.normalize import (
    NeedSympy,
    Num,
    Piece,
    Poly,
    fast_scalar,
    fmt_interval,
    fmt_poly,
    fmt_poly_eq,
    split_top,
    structure,
)

Result = tuple[str, str, tuple[Num, ...]]
_I = sympy.Symbol("i")
_E = sympy.Symbol("e")
_GLOBALS = {k: v for k, v in vars(_l2s).items() if k in ("var", "variances", "is_real", "frac_type", "VARIABLE_VALUES")}
_REL = re.compile(r"\\le(?![a-zA-Z])|\\ge(?![a-zA-Z])|\\ne(?![a-zA-Z])|<|>")


def _reset_parser() -> None:
    for k, v in _GLOBALS.items():
        setattr(_l2s, k, v.copy() if isinstance(v, dict) else v)


def _parse(s: str) -> sympy.Basic:
    if not s.strip():
        raise ValueError("empty")
    _reset_parser()
    expr = latex2sympy(s)
    if not isinstance(expr, (sympy.Basic, sympy.MatrixBase)):
        raise ValueError(f"not an expression: {type(expr).__name__}")
    return expr


def _trig(expr: sympy.Basic) -> sympy.Basic:
    """sec, csc, cot → 1/cos, 1/sin, cos/sin so ``\\sec^2 y`` and ``\\tan^2 y + 1`` meet."""
    return expr.replace(sympy.sec, lambda a: 1 / sympy.cos(a)).replace(
        sympy.csc, lambda a: 1 / sympy.sin(a)).replace(sympy.cot, lambda a: sympy.cos(a) / sympy.sin(a))


def scalar(s: str) -> sympy.Basic:
    """One expression → simplified sympy; ``i`` is the imaginary unit, as in MATH answers."""
    expr = _parse(s)
    if isinstance(expr, (sympy.MatrixBase, sympy.MatrixExpr)):
        expr = expr.doit() if isinstance(expr, sympy.MatrixExpr) else expr
        return expr.applyfunc(_simplify) if isinstance(expr, sympy.MatrixBase) else expr
    return _simplify(expr)


def _simplify(expr: sympy.Basic) -> sympy.Basic:
    if _I in expr.free_symbols:
        expr = expr.subs(_I, sympy.I)
    if _E in expr.free_symbols or expr.has(sympy.Symbol("\\mathrm{e}")):
        expr = expr.subs({_E: sympy.E, sympy.Symbol("\\mathrm{e}"): sympy.E})
    expr = _trig(expr)
    if not expr.free_symbols:
        expr = expr.doit()  # 2^{100}+1 written unevaluated: exact, before any float is taken
    if expr.is_Rational:
        return expr
    if not expr.free_symbols and _value(expr) is not None:
        return expr  # a real number: compared by value (12 significant digits), no need to simplify
    if expr.free_symbols and expr.is_polynomial() and not expr.has(sympy.Float):
        return sympy.expand(expr)  # (x+1)^2 and x^2+2x+1; expanding is far cheaper than simplify
    expr = sympy.simplify(expr)
    if expr.free_symbols and expr.is_polynomial():
        expr = sympy.expand(expr)
    return expr


def _value(expr: sympy.Basic) -> Num | None:
    """An exact int for integers, a float for other real numeric scalars, else None."""
    if isinstance(expr, sympy.Integer):
        return int(expr)
    if not getattr(expr, "is_number", False):
        return None
    try:
        z = complex(sympy.N(expr, 20))
    except (TypeError, ValueError, OverflowError):
        return None
    if abs(z.imag) > 1e-12 * max(1.0, abs(z.real)) or not math.isfinite(z.real):
        return None
    return z.real


def _piece(expr: sympy.Basic) -> Piece:
    if isinstance(expr, sympy.MatrixBase):
        cells = [_piece(x) for x in expr]
        nums = tuple(x for c in cells for x in c[2])
        head = f"Matrix{expr.shape[0]}x{expr.shape[1]}"
        return (head + "[" + ", ".join(c[0] for c in cells) + "]",
                head + "[" + ", ".join(c[1] or c[0] for c in cells) + "]" if nums else "", nums)
    if expr.has(sympy.zoo, sympy.nan):
        raise ValueError("undefined")  # \frac{1}{0}: keep the string, never equate undefined answers
    if (poly := _to_poly(expr)) is not None:
        return fmt_poly(poly), "", ()  # printed as the parent prints the same polynomial
    text = sympy.sstr(expr)
    if expr in (sympy.oo, -sympy.oo):
        return text, text, ()
    v = _value(expr)
    return (text, "#", (v,)) if v is not None else (text, "", ())


def _to_poly(expr: sympy.Basic) -> Poly | None:
    """A polynomial with rational coefficients in single-letter variables, as `normalize.Poly`."""
    syms = sorted(expr.free_symbols, key=str) if isinstance(expr, sympy.Expr) else []
    if not syms or any(len(str(x)) != 1 or str(x) in "eiEI" for x in syms):
        return None
    try:
        if not expr.is_polynomial(*syms):
            return None
        terms = sympy.Poly(expr, *syms).terms()
    except (sympy.PolynomialError, sympy.GeneratorsNeeded, ValueError, TypeError):
        return None
    if len(terms) > 200 or not all(c.is_Rational for _, c in terms):
        return None
    names = [str(x) for x in syms]
    return {tuple((v, int(k)) for v, k in zip(names, mono, strict=True) if k): Fraction(int(c.p), int(c.q))
            for mono, c in terms if c != 0}


def _leaf(s: str) -> Piece:
    try:
        return fast_scalar(s)
    except NeedSympy:
        pass
    if _REL.search(s) or "=" in s:
        return _relation(s)
    return _piece(scalar(s))


def _equation(lhs: str, rhs: str) -> Piece:
    """``y = 2x + 3`` and ``2x + 3 = y`` agree: lhs − rhs, without content and sign."""
    diff = sympy.together(sympy.expand(scalar(lhs) - scalar(rhs)))
    num = sympy.expand(sympy.numer(diff))
    _, prim = num.as_content_primitive()
    if (poly := _to_poly(sympy.expand(prim))) is not None and poly:
        return fmt_poly_eq(poly), "", ()  # as the parent prints the same equation
    if prim.could_extract_minus_sign():
        prim = -prim
    text = f"Eq({sympy.sstr(sympy.expand(prim))}, 0)"
    return text, "", ()


def _set_text(st: sympy.Set) -> Piece:
    """A sympy set (from an inequality) in the text format of `normalize.structure`."""
    if isinstance(st, sympy.Union):
        parts = sorted((_set_text(a) for a in st.args), key=lambda p: p[0])
        nums = tuple(x for p in parts for x in p[2])
        return " U ".join(p[0] for p in parts), " U ".join(p[1] or p[0] for p in parts) if nums else "", nums
    if isinstance(st, sympy.Interval):
        lo, hi = _piece(st.start), _piece(st.end)
        nums = lo[2] + hi[2]
        return (fmt_interval(lo[0], hi[0], bool(st.left_open), bool(st.right_open)),
                fmt_interval(lo[1] or lo[0], hi[1] or hi[0], bool(st.left_open), bool(st.right_open)) if nums else "",
                nums)
    if isinstance(st, sympy.FiniteSet):
        return structure("\\{" + ",".join(sympy.latex(a) for a in st.args) + "\\}", _leaf)
    raise ValueError("set kind")


def _relation(s: str) -> Piece:
    sides = split_top(s, "=")
    if len(sides) == 2 and not _REL.search(s):
        return _equation(*sides)
    expr = _parse(s)
    if not isinstance(expr, sympy.Rel) and not isinstance(expr, sympy.And):
        raise ValueError("not a relation")
    syms = expr.free_symbols
    if len(syms) == 1:
        (x,) = syms
        return _set_text(sympy.solveset(expr, x, sympy.S.Reals) if isinstance(expr, sympy.Rel)
                         else expr.as_set())
    return sympy.sstr(expr), "", ()


def canonical_form(norm: str) -> Result | None:
    """Worker entry: (canonical text, shape, number leaves), or None when nothing parses."""
    try:
        if "\\begin{pmatrix}" in norm or "\\begin{vmatrix}" in norm:
            return _piece(scalar(norm))
        if "=" in norm and len(split_top(norm, "=")) == 2 and not _REL.search(norm):
            return _relation(norm)
        if _REL.search(norm) and not re.search(r"[,;]", norm):
            return _relation(norm)
        return structure(norm, _leaf)
    except Exception:  # noqa: BLE001 - latex2sympy raises bare Exception on parse errors
        return None

