"""String normalization of final answers: cheap, pure, and run in the parent process.

Most equivalent rewrites a model produces (``\\dfrac`` for ``\\frac``, ``\\left(``, units after a
number, degrees, ``\\$``, thousands separators, ``\\geq`` for ``>=``) differ only in spelling, so
normalizing them here lets voting group them without ever paying for a sympy parse. Also here:
the exact number reader (`parse_number`) and the text formats shared with the sympy workers
(`fmt_tuple`, `fmt_set`, `fmt_interval`), so a structure canonicalized in the parent and one
canonicalized in a worker print the same.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable
from fractions import Fraction

# ---------------------------------------------------------------------------------------------
# spelling

_DOUBLE_BS = re.compile(r"(?<!\\)\\\\(?=(?:left|right|frac|dfrac|tfrac|cfrac|sqrt|pi|cdot|times|infty|text|"
                        r"boxed|begin|end|mathrm|pm|le|ge|neq|in|cup)(?![a-zA-Z]))")
_SIZING = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|big|Big|bigg|Bigg)(?![a-zA-Z])\s*\.?")
_SPACING = re.compile(r"(?<!\\)\\[!,;:> ]|\\qquad|\\quad|\\displaystyle(?![a-zA-Z])|"
                      r"\\limits(?![a-zA-Z])|\\nolimits(?![a-zA-Z])|~")
_WRAPPERS = re.compile(r"\\(?:text|textnormal|textbf|textit|textrm|textsf|texttt|mathrm|mathbf|mathit|"
                       r"mathsf|mathtt|mbox|hbox|operatorname|boldsymbol|bm|emph)\s*\{([^{}]*)\}")
_DEGREES = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree(?![a-zA-Z])|\^\s*\{\s*\\degree\s*\}")
_PERCENT = re.compile(r"\\%|%|\\percent(?![a-zA-Z])|\s*\b(?:percent(?:age)?|pct)\b\.?")
_RELATIONS = [
    (re.compile(r"\\leqslant(?![a-zA-Z])|\\leq(?![a-zA-Z])|\\le(?![a-zA-Z])|<=|≤"), "\\le "),
    (re.compile(r"\\geqslant(?![a-zA-Z])|\\geq(?![a-zA-Z])|\\ge(?![a-zA-Z])|>=|≥"), "\\ge "),
    (re.compile(r"\\neq(?![a-zA-Z])|\\ne(?![a-zA-Z])|!=|≠"), "\\ne "),
    (re.compile(r"\\lt(?![a-zA-Z])"), "<"), (re.compile(r"\\gt(?![a-zA-Z])"), ">"),
    (re.compile(r"\\approx(?![a-zA-Z])|\\simeq(?![a-zA-Z])|≈"), "\\approx "),
]
# a word unit after a number: letters (and spaces, ^2, /, dots) only, e.g. "12 square feet", "5 m/s"
_UNIT_TAIL = re.compile(r"(?<=[\d}.)])\s*(?!(?:and|or)\b)(?:[a-zA-Z]{2,}|cm|m|g|s|h|L|ft|in)"
                        r"(?:[\s./^*-]*(?:[a-zA-Z]+|\d(?=\s*$)|\{\d\}))*\s*\.?$")
_CONNECTIVE = re.compile(r"(?:and|or)(?![a-zA-Z])\s*")


def _strip_wrappers(s: str) -> str:
    """``\\text{abc}`` and friends → their content (innermost first, a bounded number of rounds).

    A unit in a wrapper right after a number (``12\\text{ inches}``, ``3\\mbox{ apples}``) is
    dropped first: any words there are a unit, not a fixed list of them.
    """
    for _ in range(8):
        new = re.sub(r"(?<=[\d}.)])\s*\\(?:text|textnormal|textrm|textbf|textit|mbox|hbox|mathrm)\s*"
                     r"\{\s*(?![a-zA-Z]\s*\})(?!(?:and|or|if|for)\b)[a-zA-Z][a-zA-Z .\-/]*(?:\^\{?\d\}?)?\}"
                     r"(?:\s*\^\s*\{?\d\}?)?", "", s)
        new = _WRAPPERS.sub(r"\1", new)
        if new == s:
            break
        s = new
    return s


def _fix_shorthand(s: str) -> str:
    """``\\frac12`` → ``\\frac{1}{2}``, ``\\sqrt3`` → ``\\sqrt{3}``: latex2sympy wants braces."""
    s = re.sub(r"\\frac\s*([0-9a-zA-Z])\s*([0-9a-zA-Z])", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\{[^{}]*\})\s*([0-9a-zA-Z])", r"\\frac\1{\2}", s)
    s = re.sub(r"\\frac\s*([0-9a-zA-Z])\s*\{", r"\\frac{\1}{", s)
    return re.sub(r"\\sqrt\s*([0-9a-zA-Z])", r"\\sqrt{\1}", s)


def _collapse_spaces(s: str) -> str:
    """Drop spaces except between two letters or digits (``\\pi r``, ``\\log_2 8`` keep theirs)."""
    s = re.sub(r"\s+", " ", s)
    return re.sub(r"(?<![a-zA-Z0-9]) | (?![a-zA-Z0-9])", "", s)


def _fix_numbers(s: str, spaced_commas: bool = False) -> str:
    """Thousands separators, decimal commas, space-grouped digits, mixed numbers, ``.5``.

    A lone number only (never inside a tuple): ``1,000``/``1{,}000``/``1 000`` → ``1000``; a comma
    followed by other than three digits and no space is a decimal comma (``1,22``, ``0,111``,
    ``1000,99``); ``1,222`` is thousands unless it starts with ``0,``.
    """
    s = s.replace("{,}", ",")
    sign = r"[-+]?"
    if re.fullmatch(sign + r"\d{1,3}(?: \d{3})+(?:[.,]\d+)?", s):
        s = s.replace(" ", "")
    if spaced_commas:
        pass
    elif re.fullmatch(sign + r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", s) and not re.match(r"[-+]?0,", s):
        s = s.replace(",", "")
    m = re.fullmatch(r"(-?)(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}", s) or re.fullmatch(r"(-?)(\d+) (\d+)/(\d+)", s)
    if m and len(s) < 40 and int(m.group(4)) != 0 and int(m.group(3)) < int(m.group(4)):
        whole, num, den = int(m.group(2)), int(m.group(3)), int(m.group(4))
        s = f"{m.group(1)}\\frac{{{whole * den + num}}}{{{den}}}"
    return re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)


def has_percent(s: str) -> bool:
    """Whether the answer is written as a percentage (``28\\%``, ``28 percent``)."""
    return bool(re.search(r"%|\\percent|\bpercent|\bpct\b", s))


def normalize(s: str) -> str:
    """The spelling-level canonical form of an answer; the fallback when sympy cannot help."""
    s = s.strip().replace("\n", " ").replace("²", "^2").replace("³", "^3")
    s = _DOUBLE_BS.sub("\\\\", s)
    s = s.replace("\\(", "(").replace("\\)", ")")
    s = _SIZING.sub("", s)
    s = re.sub(r"(?<=\d)\s*(?:\{\s*,\s*\}|,\s*\\!)\s*(?=\d{3})", ",", s)  # 14{,}916, 32,\! 349
    s = s.replace("\\!", "")
    s = re.sub(r"\\[dtc]frac(?![a-zA-Z])", r"\\frac", s)
    s = _SPACING.sub(" ", s)
    s = s.replace("\\$", "").replace("$", "").replace("€", "").replace("£", "")
    s = _DEGREES.sub("", s)
    s = _PERCENT.sub("", s)
    s = re.sub(r"(?<=\d)\s*\\text\s*\{\s*degrees?\s*\}|(?<=\d)\s*degrees?\b", "", s)
    s = _strip_wrappers(s)
    for pat, rep in _RELATIONS:
        s = pat.sub(rep.replace("\\", "\\\\"), s)
    s = s.strip()
    s = _UNIT_TAIL.sub("", s) if re.match(r"[-+]?[\d.]", s) and not re.search(r"[=<>]|\\le |\\ge ", s) else s
    spaced = bool(re.search(r",\s", s))
    s = _collapse_spaces(s).strip()
    s = _matrices(s)
    s = re.sub(r"(?<![.\d])\.$|(?<=\d)\.$", "", s).strip()
    s = _fix_shorthand(s)
    return _fix_numbers(s, spaced)


def _matrices(s: str) -> str:
    """``[\\begin{array}{cc}…\\end{array}]``, ``bmatrix``, ``(\\begin{pmatrix}…)`` → plain ``pmatrix``."""
    if "\\begin" not in s:
        return s
    s = re.sub(r"\\\\\s*(?=\\end\{)", "", s)
    s = re.sub(r"\\begin\{array\}\{[^{}]*\}", r"\\begin{pmatrix}", s)
    s = re.sub(r"\\(begin|end)\{(?:bmatrix|Bmatrix|matrix|smallmatrix|array)\}", r"\\\1{pmatrix}", s)
    m = re.fullmatch(r"[\[(](\\begin\{pmatrix\}.*\\end\{pmatrix\})[\])]", s)
    if m and m.group(1).count("\\begin") == 1:
        s = m.group(1)
    return s


# ---------------------------------------------------------------------------------------------
# exact numbers

_NUM = re.compile(r"([-+]?)(\d+(?:\.\d*)?|\.\d+)(?:(?:e|E|\\times10\^|\\cdot10\^|\*10\^|\\times 10\^|\\cdot 10\^)"
                  r"\{?([-+]?\d{1,4})\}?)?")


def parse_number(s: str) -> Fraction | None:
    """The exact value of a plain number (integer, decimal, scientific, ``a/b``, ``\\frac{a}{b}``)."""
    if len(s) > 400:
        return None
    if m := _NUM.fullmatch(s):
        v = Fraction(m.group(2))
        if m.group(3):
            v *= Fraction(10) ** int(m.group(3))
        return -v if m.group(1) == "-" else v
    m = re.fullmatch(r"([-+]?)\\frac\{([-+]?\d+(?:\.\d+)?)\}\{([-+]?\d+(?:\.\d+)?)\}", s) or \
        re.fullmatch(r"([-+]?)(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)", s)
    if m and Fraction(m.group(3)) != 0:
        v = Fraction(m.group(2)) / Fraction(m.group(3))
        return -v if m.group(1) == "-" else v
    return None


def decimal_comma(s: str) -> str | None:
    """``1,22`` read with a decimal comma (``1.22``); None unless ``s`` is digits, one comma and at
    least two digits (``-2,1`` and ``1,0`` are MATH-style lists of two answers).

    Alone, such a string is a list (``12,13``) or, with groups of three, thousands (``1,222``);
    `answers_equal` uses this reading only against an answer that is a single number.
    """
    if not re.fullmatch(r"[-+]?\d+,\d\d+", s) or re.fullmatch(r"[-+]?[1-9]\d{0,2},\d{3}", s):
        return None
    return s.replace(",", ".")


def is_inexact(s: str) -> bool:
    """Whether a normalized answer holds a decimal number (so a rounding tolerance applies)."""
    return bool(re.search(r"\d\.\d|(?<![\d])\.\d|\d(?:e|E)[-+]?\d", s))


def fmt_number(v: Fraction) -> str:
    """``Fraction`` → sympy's print of the same Rational (``7``, ``-1/2``)."""
    return str(v)


# ---------------------------------------------------------------------------------------------
# structure (shared with the workers)

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


def outer_group(s: str) -> tuple[str, str, str] | None:
    """``(a, b)`` → ("(", "a, b", ")") when the first bracket closes at the very end, else None."""
    if len(s) < 2 or s[0] not in "([{" or s[-1] not in ")]}":
        return None
    if s.startswith("\\{"):
        return None
    depth = 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0 and i != len(s) - 1:
                return None
    return (s[0], s[1:-1], s[-1]) if depth == 0 else None


def set_items(s: str) -> list[str] | None:
    """The members of a set or list written as one: ``\\{a, b\\}``, ``{a, b}``, ``a, b``,
    ``a; b``, ``a \\text{ and } b`` (a list of one is None)."""
    if s.startswith("\\{") and s.endswith("\\}"):
        inner = s[2:-2]
        parts = split_top(inner, ",") if len(split_top(inner, ",")) > 1 else split_top(inner, ";")
        return [p.strip() for p in parts if p.strip()]
    g = outer_group(s)
    if g and g[0] == "{" and g[2] == "}" and len(split_top(g[1], ",")) > 1:
        return [p.strip() for p in split_top(g[1], ",") if p.strip()]
    for sep in (",", ";"):
        if len(parts := split_top(s, sep)) > 1:
            out: list[str] = []
            for p in parts:
                out.extend(x for x in _and_split(p) if x)
            return [p.strip() for p in out if p.strip()]
    parts = _and_split(s)
    return parts if len(parts) > 1 else None


def _and_split(s: str) -> list[str]:
    """``1 and 2``, ``1 or 2`` → its parts (top level only)."""
    out, depth, start = [], 0, 0
    i = 0
    while i < len(s):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and c in "ao" and (m := _CONNECTIVE.match(s, i)) and \
                (i == 0 or not (s[i - 1].isalpha() or s[i - 1] == "\\")):
            out.append(s[start:i])
            start = i = m.end()
            continue
        i += 1
    out.append(s[start:])
    return [p.strip() for p in out if p.strip()]


def fmt_tuple(items: list[str]) -> str:
    return "(" + ", ".join(items) + ")"


def fmt_set(items: list[str], keys: list[tuple] | None = None) -> str:
    """Set text: members deduplicated and sorted (numbers by value first, then text)."""
    order = sorted(set(zip(keys or [(1, 0, t) for t in items], items, strict=True)))
    seen, out = set(), []
    for _, t in order:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return "{" + ", ".join(out) + "}"


def fmt_interval(lo: str, hi: str, left_open: bool, right_open: bool) -> str:
    """Interval text, infinite ends always open: ``(3/5, 8/3]``, ``(-oo, 0]``."""
    left_open = left_open or lo == "-oo"
    right_open = right_open or hi == "oo"
    return ("(" if left_open else "[") + lo + ", " + hi + (")" if right_open else "]")


# ---------------------------------------------------------------------------------------------
# structured canonical forms, shared by the parent (numbers only) and the workers (sympy scalars)

Num = int | float
# (text, shape, leaves): the canonical text; the same text with every real-number leaf as "#"
# ("" when the answer has no number leaf); the leaves' values (ints exact, others float)
Piece = tuple[str, str, tuple[Num, ...]]


class NeedSympy(Exception):
    """The parent's number-only reader cannot canonicalize this; a worker must."""


def number_piece(v: Fraction) -> Piece:
    return fmt_number(v), "#", (int(v) if v.denominator == 1 else float(v),)


_WORD = re.compile(r"[A-Za-z][A-Za-z ]*[A-Za-z]")
_INF = {"\\infty": "oo", "+\\infty": "oo", "-\\infty": "-oo", "\\inf": "oo", "-\\inf": "-oo", "∞": "oo",
        "-∞": "-oo", "infinity": "oo", "-infinity": "-oo", "oo": "oo", "-oo": "-oo", "+oo": "oo"}


def fast_scalar(s: str) -> Piece:
    """Scalars needing no sympy: numbers, infinities, base-subscripted numerals, words, letters."""
    if (v := parse_number(s)) is not None:
        return number_piece(v)
    if s in _INF:
        return _INF[s], _INF[s], ()
    with contextlib.suppress(NeedSympy, ZeroDivisionError, OverflowError, RecursionError):
        return eval_number(s)
    m = re.fullmatch(r"([0-9A-Fa-f]+)_\{?\(?(\d{1,2})\)?\}?", s)  # 52_8: a numeral in base 8
    if m and (re.search(r"\d", m.group(1)) or int(m.group(2)) > 10):
        return f"{m.group(1).upper()}_{int(m.group(2))}", f"{m.group(1).upper()}_{int(m.group(2))}", ()
    if m := re.fullmatch(r"\(?([A-E])\)?", s):
        return m.group(1), m.group(1), ()
    if _WORD.fullmatch(s) and len(s.replace(" ", "")) >= 3:
        return s.lower(), s.lower(), ()  # "Evelyn", "even": words, not products of symbols
    if re.fullmatch(r"[-+*/^{}()=a-zA-Z0-9. ]*(?:\\frac|\\cdot|\\times|\\div)?[-+*/^{}()=a-zA-Z0-9. \\]*", s):
        return equation_piece(s) if "=" in s else poly_piece(s)
    raise NeedSympy(s)


def _sort_key(p: Piece) -> tuple:
    if p[1] == "#":
        return (0, float(p[2][0]), p[0])
    return (1, 0.0, p[0])


def _set_piece(pieces: list[Piece]) -> Piece:
    uniq: dict[str, Piece] = {}
    for p in pieces:
        uniq.setdefault(p[0], p)
    order = sorted(uniq.values(), key=_sort_key)
    nums: tuple[Num, ...] = tuple(x for p in order for x in p[2])
    return ("{" + ", ".join(p[0] for p in order) + "}",
            "{" + ", ".join(p[1] for p in order) + "}" if nums else "", nums)


def _join(pieces: list[Piece], fmt: str) -> Piece:
    nums = tuple(x for p in pieces for x in p[2])
    shapes = [p[1] or p[0] for p in pieces]
    return fmt % ", ".join(p[0] for p in pieces), (fmt % ", ".join(shapes)) if nums else "", nums


def structure(s: str, scalar: Callable[[str], Piece], depth: int = 0) -> Piece:
    """Canonical piece of ``s``: sets/lists (order-free), tuples, intervals, unions, ``\\pm``;
    ``scalar`` canonicalizes the leaves (raises `NeedSympy` or ValueError when it cannot)."""
    if depth > 20 or not s:
        raise ValueError("too deep or empty")
    m = re.fullmatch(r"\\begin\{pmatrix\}(.*)\\end\{pmatrix\}", s)
    if m and "\\begin" not in m.group(1) and "," not in m.group(1):  # one matrix: as a list of rows
        rows = [r for r in m.group(1).split("\\\\") if r.strip()]
        if len(rows) >= 2:
            return structure("[" + ",".join("[" + ",".join(r.split("&")) + "]" for r in rows) + "]", scalar, depth + 1)
    if (items := set_items(s)) is not None:
        flat = [x for i in items for x in ((i.replace("\\pm", "+"), i.replace("\\pm", "-"))
                                          if i.count("\\pm") == 1 and not re.search(r"[=<>]", i) else (i,))]
        return _set_piece([structure(i, scalar, depth + 1) for i in flat])
    if len(parts := split_top(s, "\\cup")) > 1:
        pieces = [structure(p, scalar, depth + 1) for p in parts]
        pieces.sort(key=lambda p: p[0])
        nums = tuple(x for p in pieces for x in p[2])
        return " U ".join(p[0] for p in pieces), " U ".join(p[1] or p[0] for p in pieces) if nums else "", nums
    if s.count("\\pm") == 1 and not re.search(r"[=<>]", s):
        return _set_piece([structure(s.replace("\\pm", "+"), scalar, depth + 1),
                           structure(s.replace("\\pm", "-"), scalar, depth + 1)])
    if (g := outer_group(s)) is not None and g[0] != "{":
        parts = split_top(g[1], ",")
        rows = [outer_group(p.strip()) for p in parts]
        if g[0] == "[" and len(parts) >= 2 and all(r is not None and r[0] == "[" for r in rows):
            cells = [split_top(r[1], ",") for r in rows if r is not None]  # [[1,2],[3,4]]: a matrix
            if len({len(c) for c in cells}) == 1:
                pieces = [structure(x, scalar, depth + 1) for c in cells for x in c]
                nums = tuple(x for p in pieces for x in p[2])
                head = f"Matrix{len(cells)}x{len(cells[0])}"
                return (head + "[" + ", ".join(p[0] for p in pieces) + "]",
                        head + "[" + ", ".join(p[1] or p[0] for p in pieces) + "]" if nums else "", nums)
        if len(parts) == 1 and len(semi := split_top(g[1], ";")) > 1:
            parts = semi
        if len(parts) == 2 and (g[0] + g[2] != "()"):
            lo, hi = structure(parts[0], scalar, depth + 1), structure(parts[1], scalar, depth + 1)
            lo_open, hi_open = g[0] == "(" or lo[0] == "-oo", g[2] == ")" or hi[0] == "oo"
            nums = lo[2] + hi[2]
            return (fmt_interval(lo[0], hi[0], lo_open, hi_open),
                    fmt_interval(lo[1] or lo[0], hi[1] or hi[0], lo_open, hi_open) if nums else "", nums)
        if len(parts) >= 2 and g[0] == "(" and g[2] == ")":
            return _join([structure(p, scalar, depth + 1) for p in parts], "(%s)")
        if len(parts) >= 2:
            return _join([structure(p, scalar, depth + 1) for p in parts], "[%s]")
    return scalar(s)


# ---------------------------------------------------------------------------------------------
# a small exact evaluator for number-only expressions (3\sqrt{13}, \frac{\pi}{6}, 2^{10}-1)

_TOKEN = re.compile(r"\s*(\d+(?:\.\d+)?|\\pi(?![a-zA-Z])|\\sqrt|\\frac|\\cdot|\\times|\\div|[-+*/^{}()\[\]])")
Val = Fraction | float


class _Tokens:
    """A token cursor for the recursive-descent readers below: ``TOKEN`` (group 1 is the token)
    must match the whole string, and a token in ``REJECT`` sends it to sympy."""

    TOKEN: re.Pattern[str]
    REJECT: frozenset[str] | set[str] = frozenset()

    def __init__(self, s: str) -> None:
        self.toks: list[str] = []
        pos = 0
        while pos < len(s):
            m = self.TOKEN.match(s, pos)
            if not m or m.group(1) in self.REJECT:
                raise NeedSympy(s)
            self.toks.append(m.group(1))
            pos = m.end()
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, want: str | None = None) -> str:
        t = self.peek()
        if t is None or (want is not None and t != want):
            raise NeedSympy(want or "")
        self.i += 1
        return t


class _Eval(_Tokens):
    """Recursive descent over + − · / ^, \\frac, \\sqrt (and \\sqrt[n]), \\pi, implicit products.
    Exact (`Fraction`) while possible, float once an irrational enters; anything else → NeedSympy."""

    TOKEN = _TOKEN

    def expr(self) -> Val:
        v = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            w = self.term()
            v = v + w if op == "+" else v - w
        return v

    def term(self) -> Val:
        v = self.unary()
        while (t := self.peek()) is not None and t not in ("+", "-", "}", ")", "]"):
            if t in ("*", "\\cdot", "\\times", "/", "\\div"):
                self.take()
                w = self.unary()
                if t in ("/", "\\div"):
                    if w == 0:
                        raise NeedSympy("division by zero")
                    v = v / w
                else:
                    v = v * w
            else:
                v = v * self.power()  # implicit product: 3\sqrt{13}, 2\pi
        return v

    def unary(self) -> Val:
        if self.peek() == "-":
            self.take()
            return -self.unary()
        if self.peek() == "+":
            self.take()
        return self.power()

    def power(self) -> Val:
        base = self.atom()
        if self.peek() == "^":
            self.take()
            exp = self.group() if self.peek() in ("{", "(") else self.atom_number()
            return _pow(base, exp)
        return base

    def atom_number(self) -> Val:
        t = self.take()
        if not t[0].isdigit() or len(t) != 1:
            raise NeedSympy(t)
        return Fraction(t)

    def group(self) -> Val:
        close = {"{": "}", "(": ")", "[": "]"}[self.take()]
        v = self.expr()
        self.take(close)
        return v

    def atom(self) -> Val:
        t = self.peek()
        if t is None:
            raise NeedSympy("end")
        if t[0].isdigit():
            self.take()
            return Fraction(t)
        if t == "\\pi":
            self.take()
            return math.pi
        if t in ("{", "("):
            return self.group()
        if t == "\\frac":
            self.take()
            num, den = self.braced(), self.braced()
            if den == 0:
                raise NeedSympy("division by zero")
            return num / den
        if t == "\\sqrt":
            self.take()
            n: Val = Fraction(2)
            if self.peek() == "[":
                n = self.group()
            return _pow(self.braced(), 1 / n if isinstance(n, Fraction) and n != 0 else _bad())
        raise NeedSympy(t)

    def braced(self) -> Val:
        if self.peek() != "{":
            raise NeedSympy("brace")
        return self.group()


def _bad() -> Val:
    raise NeedSympy("root")


def _pow(base: Val, exp: Val) -> Val:
    if isinstance(exp, Fraction) and isinstance(base, Fraction):
        if exp.denominator == 1:
            if abs(exp) > 4096 or (base == 0 and exp < 0) or \
                    abs(exp) * (len(str(base.numerator)) + len(str(base.denominator))) > 2000:
                raise NeedSympy("large power")
            return base ** int(exp)
        if base < 0:
            raise NeedSympy("root of a negative")
        q = exp.denominator
        roots = [round(x ** (1.0 / q)) for x in (base.numerator, base.denominator)]
        if all(r ** q == x for r, x in zip(roots, (base.numerator, base.denominator), strict=True)):
            return _pow(Fraction(roots[0], roots[1]), Fraction(exp.numerator))
    try:
        v = float(base) ** float(exp)
    except (OverflowError, ZeroDivisionError, ValueError) as e:
        raise NeedSympy("power") from e
    if isinstance(v, complex) or not math.isfinite(v):
        raise NeedSympy("power")
    return v


def eval_number(s: str) -> Piece:
    """A number-only expression → its piece (exact text when rational); raises NeedSympy."""
    if len(s) > 2000 or not re.search(r"\\pi|\\sqrt|\\frac|\^|[*+/-]|\\cdot|\\times|\\div|\d\(|\)\(", s):
        raise NeedSympy(s)
    ev = _Eval(s)
    v = ev.expr()
    if ev.peek() is not None:
        raise NeedSympy(s)
    if isinstance(v, Fraction):
        return number_piece(v)
    if not math.isfinite(v):
        raise NeedSympy(s)
    return s, "#", (v,)


# ---------------------------------------------------------------------------------------------
# polynomials with rational coefficients in single-letter variables (15x-80, (a+5)(b+2), 2x+z=1),
# canonicalized here and printed by `fmt_poly`, which the workers use for the same polynomials

Mono = tuple[tuple[str, int], ...]
Poly = dict[Mono, Fraction]
_PTOKEN = re.compile(r"\s*(\d+(?:\.\d+)?|\\frac|\\cdot|\\times|\\div|[a-zA-Z]|[-+*/^{}()])")
_NOT_VARS = {"e", "i", "E", "I"}
MAX_TERMS = 200


def _padd(p: Poly, q: Poly, sign: int = 1) -> Poly:
    out = dict(p)
    for m, c in q.items():
        out[m] = out.get(m, Fraction(0)) + sign * c
    return {m: c for m, c in out.items() if c != 0}


def _pmul(p: Poly, q: Poly) -> Poly:
    out: Poly = {}
    for m1, c1 in p.items():
        for m2, c2 in q.items():
            d = dict(m1)
            for v, k in m2:
                d[v] = d.get(v, 0) + k
            m = tuple(sorted(d.items()))
            out[m] = out.get(m, Fraction(0)) + c1 * c2
    out = {m: c for m, c in out.items() if c != 0}
    if len(out) > MAX_TERMS:
        raise NeedSympy("too many terms")
    return out


def _pconst(p: Poly) -> Fraction | None:
    if not p:
        return Fraction(0)
    return p.get((), None) if len(p) == 1 and () in p else None


class _PolyEval(_Tokens):
    TOKEN = _PTOKEN
    REJECT = _NOT_VARS

    def expr(self) -> Poly:
        v = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            v = _padd(v, self.term(), 1 if op == "+" else -1)
        return v

    def term(self) -> Poly:
        v = self.unary()
        while (t := self.peek()) is not None and t not in ("+", "-", "}", ")"):
            if t in ("*", "\\cdot", "\\times", "/", "\\div"):
                self.take()
                w = self.unary()
                if t in ("/", "\\div"):
                    c = _pconst(w)
                    if c is None or c == 0:
                        raise NeedSympy("division")
                    v = {m: x / c for m, x in v.items()}
                else:
                    v = _pmul(v, w)
            else:
                v = _pmul(v, self.power())
        return v

    def unary(self) -> Poly:
        if self.peek() == "-":
            self.take()
            return {m: -c for m, c in self.unary().items()}
        if self.peek() == "+":
            self.take()
        return self.power()

    def power(self) -> Poly:
        base = self.atom()
        if self.peek() == "^":
            self.take()
            if self.peek() in ("{", "("):
                e = _pconst(self.group())
            else:
                t = self.take()
                e = Fraction(t) if len(t) == 1 and t.isdigit() else None
            if e is None or e.denominator != 1 or not 0 <= e <= 1000:
                raise NeedSympy("power")
            out: Poly = {(): Fraction(1)}
            for _ in range(int(e)):
                out = _pmul(out, base)
            return out
        return base

    def group(self) -> Poly:
        close = {"{": "}", "(": ")"}[self.take()]
        v = self.expr()
        self.take(close)
        return v

    def atom(self) -> Poly:
        t = self.peek()
        if t is None:
            raise NeedSympy("end")
        if t[0].isdigit():
            self.take()
            return {(): Fraction(t)} if Fraction(t) != 0 else {}
        if t.isalpha():
            self.take()
            return {((t, 1),): Fraction(1)}
        if t in ("{", "("):
            return self.group()
        if t == "\\frac":
            self.take()
            if self.peek() != "{":
                raise NeedSympy("frac")
            num = self.group()
            if self.peek() != "{":
                raise NeedSympy("frac")
            c = _pconst(self.group())
            if c is None or c == 0:
                raise NeedSympy("frac")
            return {m: x / c for m, x in num.items()}
        raise NeedSympy(t)


def _mono_key(m: Mono) -> tuple:
    return (-sum(k for _, k in m), [(v, -k) for v, k in m])


def fmt_poly(p: Poly) -> str:
    """Print a polynomial: terms by total degree, then variables (``x**2 + 2*x*y - 3/2``)."""
    if not p:
        return "0"
    out = ""
    for m, c in sorted(p.items(), key=lambda mc: _mono_key(mc[0])):
        mono = "*".join(v if k == 1 else f"{v}**{k}" for v, k in m)
        mag = abs(c)
        body = mono if mag == 1 and mono else (f"{mag}*{mono}" if mono else str(mag))
        out += ("-" if c < 0 else "+") + body if out else ("-" + body if c < 0 else body)
    return out.replace("+", " + ").replace("-", " - ").strip().replace("- ", "-", 1) if out.startswith("-") \
        else out.replace("+", " + ").replace("-", " - ")


def fmt_poly_eq(p: Poly) -> str:
    """An equation ``p = 0`` up to a nonzero factor: integer coefficients without common factor,
    first term positive."""
    den = math.lcm(*(c.denominator for c in p.values()))
    num = math.gcd(*(int(c * den) for c in p.values()))
    first = sorted(p.items(), key=lambda mc: _mono_key(mc[0]))[0][1]
    k = Fraction(den, num) * (1 if first > 0 else -1)
    return f"Eq({fmt_poly({m: c * k for m, c in p.items()})}, 0)"


def poly_of(s: str) -> Poly:
    """A polynomial with rational coefficients in single-letter variables; raises NeedSympy."""
    if len(s) > 2000:
        raise NeedSympy(s)
    ev = _PolyEval(s)
    p = ev.expr()
    if ev.peek() is not None:
        raise NeedSympy(s)
    return p


def poly_piece(s: str) -> Piece:
    """``structure`` leaf for a polynomial that is not a plain number (numbers: `eval_number`)."""
    p = poly_of(s)
    if _pconst(p) is not None:
        raise NeedSympy(s)  # a number: eval_number's business (exact text, value leaf)
    return fmt_poly(p), "", ()


def equation_piece(s: str) -> Piece:
    """``lhs = rhs`` of polynomials → ``Eq(…, 0)`` (see `fmt_poly_eq`); raises NeedSympy."""
    sides = split_top(s, "=")
    if len(sides) != 2 or not sides[0] or not sides[1]:
        raise NeedSympy(s)
    p = _padd(poly_of(sides[0]), poly_of(sides[1]), -1)
    if _pconst(p) is not None:
        raise NeedSympy(s)
    return fmt_poly_eq(p), "", ()


def is_tower(s: str) -> bool:
    """A number-only exponent tower (``10^{10^{10}}``, ``9^{9^9}``): an exponent that holds another
    power, with no variable anywhere. Its exact value can need more memory or time than any answer
    is worth, so it is compared as written (equal only to the same spelling)."""
    if "^" not in s or re.search(r"(?<!\\)\b[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", s)):
        return False
    return bool(re.search(r"\^\s*\{[^{}]*\^|\^\s*\{[^{}]*\{[^{}]*\^|\^\s*\d\s*\^", s))
