"""String normalization of final answers: cheap, pure, and run in the parent process.

Most equivalent rewrites a model produces (``\\dfrac`` for ``\\frac``, ``\\left(``, ``x =``, units,
degrees, percent signs, thousands separators) differ only in spelling, so normalizing them here
lets voting group them without ever paying for a sympy parse.
"""

from __future__ import annotations

import re

_WRAPPERS = r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}"
_UNITS = (r"(?:square\s+|sq\.?\s*|cubic\s+)?(?:units?|cm|mm|km|m|meters?|inches|inch|in|feet|foot|ft|"
          r"yards?|miles?|mph|dollars?|cents?|degrees?|hours?|hrs?|minutes?|mins?|seconds?|secs?|"
          r"days?|weeks?|years?|pounds?|lbs?|ounces?|oz|gallons?|liters?|grams?|kg|g|people|students|"
          r"ways|points|percent)(?:\^\{?[23]\}?|\s*\^\s*[23])?")
_SPACING = re.compile(r"\\[!,;:>]|\\quad|\\qquad|\\displaystyle|\\limits")
_SINGLE_VAR_PREFIX = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(?=[^=]+$)")


def _strip_var_prefix(s: str) -> str:
    """``x = 5`` → ``5``, but ``y = 2x + 3`` stays an equation: only a constant rhs is an answer."""
    m = _SINGLE_VAR_PREFIX.match(s)
    if m and not re.search(r"(?<![\\a-zA-Z])[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", s[m.end():])):
        return s[m.end():]
    return s


def _strip_wrappers(s: str) -> str:
    """Replace ``\\text{abc}`` and friends by their content; loops for nested wrappers."""
    for _ in range(10):
        new = re.sub(_WRAPPERS, r"\1", s)
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


def _fix_numbers(s: str) -> str:
    """Thousands separators (only in a lone number, never in a tuple) and mixed numbers."""
    s = s.replace("{,}", ",")
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    m = re.fullmatch(r"(-?)(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}", s)
    if m and len(s) < 40 and int(m.group(4)) != 0:  # MATH writes 1\frac{4}{5} for 9/5
        whole, num, den = int(m.group(2)), int(m.group(3)), int(m.group(4))
        s = f"{m.group(1)}\\frac{{{whole * den + num}}}{{{den}}}"
    return s


def _collapse_spaces(s: str) -> str:
    """Drop spaces except between two letters or digits (``\\pi r``, ``\\log_2 8`` keep theirs)."""
    s = re.sub(r"\s+", " ", s)
    return re.sub(r"(?<![a-zA-Z0-9]) | (?![a-zA-Z0-9])", "", s)


def normalize(s: str) -> str:
    """The spelling-level canonical form of an answer; the fallback when sympy cannot help."""
    s = s.strip().replace("\n", " ")
    s = re.sub(r"\\left(?![a-zA-Z])\.?|\\right(?![a-zA-Z])\.?", "", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = _SPACING.sub("", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree", "", s)
    s = _strip_wrappers(s)
    s = re.sub(r"(?<=[\d}])\s*" + _UNITS + r"\s*\.?$", "", s)
    s = _collapse_spaces(s).rstrip(".").strip()
    s = _strip_var_prefix(s)
    s = _fix_shorthand(s)
    return _fix_numbers(s)
