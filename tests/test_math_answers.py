"""Model-style answer suite: real MATH-500 and GSM8K gold answers, written the ways models write them.

Every case is a whole model reply graded by ``grade_answer(reply, gold, ...)`` against the real gold:

* **forms** (must pass). Each gold *as written* in the reply formats models use ("The final answer
  is \\( X \\).", "The final answer is" with ``\\[ X \\]`` on the lines after, ``$$ X $$``,
  ``$ X $``, ``\\boxed{X}``, Llama 3's "Final Answer: The final answer is $X$. I hope it is
  correct.", Llama 3.1's "Therefore, the final answer is: $\\boxed{X}$. I hope it is correct.",
  "**Final Answer**" over ``\\[\\boxed{X}\\]``, prose "So the answer is X.", MetaMath's "The answer
  is: X", GSM8K's ``#### X``), after a real reasoning preamble (the dataset's own solution, cut
  before its final answer, boxes unwrapped; GSM8K's without the ``<<…>>`` calculator notes).
* **spellings** (must pass): equivalent rewrites generated from each gold's structure (``\\dfrac``,
  shorthand ``\\frac43``, ``a/b``, exact decimals of fractions and fractions of decimals, mixed
  numbers, ``\\left( \\right)``, ``x =`` / ``x \\in`` / ``(x, y) =`` labels, ``\\text``/``\\mbox``/
  ``\\textnormal`` units taken from the question, ``\\$``, ``\\%``, degrees, thousands separators
  ``,`` ``,\\!`` ``{,}`` ``\\,`` and spaces, scientific notation, reordered sets and "and"-lists,
  one box per element, ``\\pm`` as two elements, reordered sums, rearranged equations, ``bmatrix``,
  …), each in one reply format (rotating).
* **perturbations** (must fail: no false positives). Integers ±1 (big ones too, in the gold's own
  thousands style), ×10, sign flips, a changed or dropped digit, reciprocal fractions, swapped
  ordered-tuple elements, an added coordinate, open/closed interval ends, a dropped or added set
  element or ``\\pm`` branch, another base subscript, another variable power or name, a flipped last
  term, a dropped ``i``, ``\\pi`` or square root, another word or choice, a rounded scientific form.
  A rule only applies where its construction guarantees a different answer (e.g. no sign flip of
  0, no swap of equal elements, no base change of a one-digit numeral); never by looking at a
  verdict. Each perturbation is graded in 2 reply formats.
* **cutoffs** (``finish_reason="length"``): the reasoning cut before any final statement (only
  where the reasoning states no result, though it usually computes the gold) must fail; a reply cut
  in a check *after* its final statement must pass.
* **trailers** (must pass): the final statement followed by chatter that states no other answer.
* **corrections**: a boxed answer, then "Wait, I made an error …", then "The final answer is $Y$.":
  passes when Y is the gold, fails when the box held the gold and Y is a perturbation.
* **hedges**: MATH-500 "It is either $\\boxed{A}$ or $\\boxed{G}$." (single-answer golds) and GSM8K
  ``#### n±1`` then ``#### n`` fail by default and pass with ``last_answer_wins=True``; "The final
  answer is $n$ or $n±1$." fails; the same answer stated twice (box, then ``####``) passes.
* **last_answer_wins**: a sample of forms and perturbations graded again with ``last_answer_wins=True``
  keeps its verdict (the setting only changes hedged replies).
* named special cases below (the SmolLM2 reply cut at ``max_tokens``, hedged ``####`` answers,
  several boxes for a set, a box corrected by a later final-answer sentence, no answer, relations).

Size (deterministic, no randomness): each gold in ``FORMS_PER_GOLD`` reply formats, rotating (2500
MATH-500 replies over 14 formats, 6595 GSM8K replies over 15: every format ~180 / ~440 times);
spellings at most ``CAP_SPELLING`` cases per rule, perturbations at most ``CAP_PERTURBATION`` per rule,
golds spread evenly over the dataset; trailers for every MATH-500 / 2nd GSM8K gold, cutoffs for every
2nd / 4th, corrections for every 4th / 8th, hedges for every 4th / 8th gold, and a last_answer_wins
sample: about 19,700 graded replies in all (13,700 must pass, 6,000 must fail). CPU: ~12 s in this
process (mostly extraction) plus ~5 s of sympy in the pool workers. ``python
tests/test_math_answers.py`` prints the exact counts per rule and lists every wrong verdict grouped by
cause (extraction, gold-side grading, comparison).

Rewrites that a grader may reasonably reject are left out on purpose: an interval written as an
inequality (``(2,\\infty)`` as ``x > 2``), a base-``b`` answer written in decimal, a factored answer
expanded, radians for an answer in degrees, ``0.25`` for a gold ``25`` percent, a vector as a tuple,
decimal commas, rounded decimals of non-terminating fractions, a changed unit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import cache
from pathlib import Path

import pytest

from agentloop.math import answers_equal, canonical_answers
from agentloop.math import grade as grade_module
from agentloop.math.grade import grade_answer

DATA = Path(os.environ.get("AGENTLOOP_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
MATH500, GSM8K = DATA / "math500.jsonl", DATA / "gsm8k-test.jsonl"

FORMS_PER_GOLD = 5      # reply formats per gold (of 14 MATH-500 / 15 GSM8K), rotating
CAP_SPELLING = 40       # cases per spelling rule per dataset
CAP_PERTURBATION = 260  # cases per perturbation rule per dataset


# --- reply formats --------------------------------------------------------------------------------

def _plain(x: str) -> str | None:
    """``x`` as prose text when it needs no math mode (``34``, ``3, 5, 7``, ``\\text{Evelyn}``)."""
    s = re.sub(r"\s*\\(?:text|mbox|textnormal)\{\s*([^{}]*)\}", r" \1", x).strip()
    return s if re.fullmatch(r"[-\w.,() ]+", s) else None


def _textify(x: str) -> str:
    """``x`` as a model writes it in plain text after ``####``: ``\\$`` → ``$``, ``,\\!`` → ``,``, units as words."""
    s = x.replace("\\$", "$").replace("\\%", "%").replace(",\\!", ",").replace("{,}", ",").replace("\\,", " ")
    return re.sub(r"\s*\\(?:text|mbox|textnormal)\{\s*([^{}]*)\}", r" \1", s).strip()


def written(form: str, x: str) -> str:
    """The answer ``x`` as it appears in a reply of ``form`` (prose and ``####`` lines are plain text)."""
    if form == "gsm8k":
        return _textify(x)
    if form in ("prose", "answer_colon", "answer_line", "final_bold"):
        return _plain(x) or x
    return x


FORMS: dict[str, Callable[[str], str]] = {
    "final_paren": lambda x: f"The final answer is \\( {x} \\).",
    "final_bracket": lambda x: f"The final answer is\n\\[\n{x}\n\\]",
    "final_dollars2": lambda x: f"Therefore, the final answer is $$ {x} $$",
    "final_dollar": lambda x: f"The final answer is ${x}$.",
    "period_inside": lambda x: f"Therefore the final answer is ${x}.$",
    "boxed": lambda x: f"So the answer is $\\boxed{{{x}}}$.",
    "llama3": lambda x: f"Final Answer: The final answer is ${x}$. I hope it is correct.",
    "prose": lambda x: f"So the answer is {x}." if _plain(x) == x else f"So the answer is ${x}$.",
    "bold_final": lambda x: f"**Final Answer**\n\\[\n\\boxed{{{x}}}\n\\]",
    "llama31": lambda x: f"Therefore, the final answer is: $\\boxed{{{x}}}$. I hope it is correct.",
    "answer_colon": lambda x: f"The answer is: {x}" if _plain(x) == x else f"The answer is: ${x}$",
    "answer_line": lambda x: f"Answer: {x}" if _plain(x) == x else f"Answer: ${x}$",
    "final_bold": lambda x: f"The final answer is **{x}**." if _plain(x) == x else f"The final answer is **${x}$**.",
    "box_in_equation": lambda x: f"Therefore, the requested value is $A = \\boxed{{{x}}}$.",
    "gsm8k": lambda x: f"#### {x}",
    "boxes": lambda x: "The solutions are " + ", ".join(f"$\\boxed{{{p}}}$" for p in split_top(x)) + ".",
}
MATH_FORMS = [f for f in FORMS if f not in ("gsm8k", "boxes")]
FORCED_FORM = {"prose_unit_word": "prose", "one_box_per_element": "boxes"}  # "18 eggs" is prose, not math
GSM_FORMS = [f for f in FORMS if f != "boxes"]


# --- data -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    source: str      # "math500/17", "gsm8k/4"
    gold: str
    question: str
    preamble: str    # reasoning before the final answer
    calc: str = ""   # GSM8K: the last calculator note's expression when its result is the gold ("9*2")


def _unbox(text: str) -> str:
    """Replace every ``\\boxed{…}``/``\\fbox{…}`` by its content (nested braces matched)."""
    out, i = [], 0
    while (m := re.compile(r"\\(?:boxed|fbox)\s*\{").search(text, i)) is not None:
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        out.append(text[m.end():j - 1])
        i = j
    out.append(text[i:])
    return "".join(out)


def _balanced(text: str) -> bool:
    """No math mode or environment left open (a cut inside ``\\begin{align*}`` is not a model's reply)."""
    return (len(re.findall(r"(?<!\\)\$", text)) % 2 == 0 and text.count("\\[") == text.count("\\]")
            and text.count("\\(") == text.count("\\)") and text.count("\\begin{") == text.count("\\end{")
            and text.count("[asy]") == text.count("[/asy]"))


def _math_preamble(solution: str) -> str:
    """The solution up to the sentence or line that states its final (boxed) answer, boxes unwrapped.

    The cut is the last line break or sentence end (". ") before the final box that leaves no math
    mode or environment open.
    """
    at = max(solution.rfind("\\boxed"), solution.rfind("\\fbox"))
    body = solution[:at] if at >= 0 else solution
    cuts = sorted({m.end() - 1 for m in re.finditer(r"\n|\. ", body)}, reverse=True)
    body = next((body[:c + 1] for c in cuts if _balanced(body[:c + 1])), "")
    body = _unbox(body).strip()
    return body or "Let's work through this step by step."


def _gsm_preamble(answer: str) -> str:
    return re.sub(r"<<[^<>]*>>", "", answer.split("####")[0]).strip()


def _need_data() -> None:
    if not (MATH500.is_file() and GSM8K.is_file()):
        pytest.skip(f"MATH-500/GSM8K data not found in {DATA} (set AGENTLOOP_DATA_DIR)")


@cache
def math_items() -> list[Item]:
    rows = [json.loads(line) for line in MATH500.read_text().splitlines() if line.strip()]
    return [Item(f"math500/{i}", r["answer"], r["problem"], _math_preamble(r["solution"]))
            for i, r in enumerate(rows)]


@cache
def gsm_items() -> list[Item]:
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines() if line.strip()]
    items = []
    for i, r in enumerate(rows):
        gold = r["answer"].split("####")[-1].strip().replace(",", "")
        notes = re.findall(r"<<([^<>=]+)=([^<>=]+)>>", r["answer"])
        last = notes[-1] if notes else ("", "")
        calc = last[0] if last[1].strip() == gold and re.search(r"\d\s*[-+*/]", last[0]) else ""
        items.append(Item(f"gsm8k/{i}", gold, r["question"], _gsm_preamble(r["answer"]), calc))
    return items


# --- structure helpers ----------------------------------------------------------------------------

_OPEN, _CLOSE = "([{", ")]}"


def split_top(s: str, sep: str = ",") -> list[str]:
    """``s`` split at ``sep`` outside brackets (``\\{``/``\\}`` count as brackets)."""
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def terms_top(s: str) -> list[str]:
    """A sum's top-level terms with their signs (``"6 - 5i"`` → ``["6", "-5i"]``)."""
    terms, depth, cur = [], 0, ""
    for i, ch in enumerate(s):
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
        prev = s[:i].rstrip()[-1:]
        if ch in "+-" and depth == 0 and cur.strip() and prev not in ("^", "_", "(", "=", ",", "{"):
            terms.append(cur.strip())
            cur = ch if ch == "-" else ""
        else:
            cur += ch
    terms.append(cur.strip())
    return [t.replace("- ", "-", 1) if t.startswith("- ") else t for t in terms if t]


def join_terms(terms: list[str]) -> str:
    out = terms[0]
    for t in terms[1:]:
        out += f" - {t[1:].strip()}" if t.startswith("-") else f" + {t}"
    return out


_SEP = r"(?:,\\!\s*|,|\{,\}|\\,)"
_INT_RE = re.compile(rf"-?(?:\d{{1,3}}(?:{_SEP}\d{{3}})+|\d+)")
_DEC_RE = re.compile(r"-?\d*\.\d+")
_FRAC_RE = re.compile(r"(-?)\\[dt]?frac\s*(?:\{(\d+)\}|(\d))\s*(?:\{(\d+)\}|(\d))")
_MIXED_RE = re.compile(r"(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}")
_DEG_RE = re.compile(r"\^\\circ|\^\{\\circ\}|\\text\{\s*degrees\}")
_UNIT_RE = re.compile(r"\s*\\(?:text|mbox)\{\s*([a-z ]+)\}(\^2)?$")


@dataclass(frozen=True)
class Num:
    """A gold that is one number with decoration: ``prefix + core + suffix`` (``\\$32,\\!348``)."""

    prefix: str
    core: str
    suffix: str
    value: Fraction
    kind: str      # int, dec, frac, mixed

    def decorate(self, core: str) -> str:
        """``core`` with this gold's prefix and suffix (a minus goes before ``\\$``)."""
        sign, core = ("-", core[1:]) if self.prefix and core.startswith("-") else ("", core)
        return f"{sign}{self.prefix}{core}{self.suffix}"


def as_number(gold: str) -> Num | None:
    s = gold.strip()
    prefix = "\\$" if s.startswith("\\$") else ""
    s = s[len(prefix):]
    suffix = ""
    if m := _DEG_RE.search(s):
        if s[m.end():].strip():
            return None
        suffix, s = s[m.start():], s[:m.start()].strip()
    elif m := _UNIT_RE.search(s):
        suffix, s = s[m.start():], s[:m.start()].strip()
    if _INT_RE.fullmatch(s):
        return Num(prefix, s, suffix, Fraction(int(re.sub(r"\D", "", s)) * (-1 if s.startswith("-") else 1)), "int")
    if _DEC_RE.fullmatch(s):
        return Num(prefix, s, suffix, Fraction(Decimal(s)), "dec")
    if m := _FRAC_RE.fullmatch(s):
        num, den = int(m.group(2) or m.group(3)), int(m.group(4) or m.group(5))
        return Num(prefix, s, suffix, Fraction(num, den) * (-1 if m.group(1) else 1), "frac")
    if m := _MIXED_RE.fullmatch(s):
        return Num(prefix, s, suffix, int(m.group(1)) + Fraction(int(m.group(2)), int(m.group(3))), "mixed")
    return None


def int_sep(core: str) -> str | None:
    m = re.search(_SEP, core)
    return m.group(0) if m else None


def group(n: int, sep: str) -> str:
    return ("-" if n < 0 else "") + f"{abs(n):,}".replace(",", sep)


def exact_decimal(v: Fraction) -> str | None:
    """The exact decimal of ``v`` when it terminates within 8 places, else None."""
    d = v.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:
        return None
    s = f"{Decimal(v.numerator) / Decimal(v.denominator):f}"
    return s if len(s.split(".")[-1]) <= 8 else None


def tex_frac(v: Fraction) -> str:
    return ("-" if v < 0 else "") + f"\\frac{{{abs(v.numerator)}}}{{{v.denominator}}}"


def is_text(gold: str) -> bool:
    return bool(re.fullmatch(r"\\text\{[^{}]*\}", gold.strip()))


def interval_parts(gold: str) -> list[str] | None:
    """The intervals of an interval / union gold (with ``\\left``/``\\right`` kept), else None."""
    s = re.sub(r"^[a-z]\s*\\in\s*", "", gold.strip())
    parts = [p.strip() for p in s.split("\\cup")]
    ok = all(re.fullmatch(r"(\\left)?\s*[\[(].*,.*(\\right)?\s*[\])]", p) for p in parts)
    definite = "\\infty" in s or "\\cup" in s or "\\in" in gold or re.search(r"\[.*\)|\(.*\]|\[.*\]", s)
    return parts if ok and definite else None


def tuple_parts(gold: str) -> list[str] | None:
    """The elements of a parenthesized ordered tuple gold (not a definite interval)."""
    s = gold.strip()
    m = re.fullmatch(r"(?:\\left)?\s*\((.*?)(?:\\right)?\s*\)", s)
    if not m or interval_parts(s) or "\\cup" in s:
        return None
    parts = split_top(m.group(1))
    return parts if len(parts) >= 2 else None


def list_parts(gold: str) -> list[str] | None:
    """Elements of an unordered answer list (``3, 5, 7``) or set (``\\{…\\}``), else None."""
    s = gold.strip()
    if s.startswith("\\{") and s.endswith("\\}"):
        s = s[2:-2]
    elif s[:1] in "([" or "\\begin" in s:
        return None
    parts = split_top(s)
    return parts if len(parts) >= 2 else None


def expand_pm(x: str) -> list[str] | None:
    """``a \\pm b`` as its two values (None without a top-level ``\\pm``)."""
    if "\\pm" not in x:
        return None
    a, b = x.split("\\pm", 1)
    a, b = a.strip(), b.strip()
    return [f"{a} + {b}", f"{a} - {b}"] if a else [b, f"-{b}"]


def has_var(s: str) -> bool:
    return bool(re.search(r"(?<![\\a-zA-Z])[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", s)))


def int_polynomial(gold: str) -> tuple[int, list[str]] | None:
    """A polynomial with integer coefficients in one letter (``6r^2-4r-24``): the gcd of its
    coefficients and its terms divided by it; None for anything else."""
    if not re.fullmatch(r"[-+\s\d^a-zA-Z]+", gold) or len(set(re.findall(r"[a-zA-Z]", gold))) != 1 or "i" in gold:
        return None
    parsed = []
    for t in terms_top(gold):
        m = re.fullmatch(r"(-?)(\d*)([a-zA-Z](?:\^\d+)?)?", t.replace(" ", ""))
        if m is None or not (m.group(2) or m.group(3)):
            return None
        parsed.append((m.group(1), int(m.group(2) or 1), m.group(3) or ""))
    if len(parsed) < 2:
        return None
    content = math.gcd(*(c for _, c, _ in parsed))
    terms = []
    for sign, c, var in parsed:
        c //= content
        terms.append(f"{sign}{'' if c == 1 and var else c}{var}")
    return content, terms


def first_number(x: str) -> re.Match[str] | None:
    """The first integer literal in ``x`` that is not a subscript, an exponent, or part of a decimal."""
    for m in re.finditer(r"\d+", x):
        before, after = x[:m.start()], x[m.end():]
        if re.search(r"(_|_\{|\^|\^\{|\.)\s*$", before) or after.startswith("."):
            continue
        if re.search(r"\\begin\{[a-z]*$", before):
            continue
        return m
    return None


# --- equivalent spellings (rewrites that must pass) -----------------------------------------------

def number_spellings(n: Num, item: Item) -> Iterator[tuple[str, str]]:
    v = n.value
    deco = lambda core: f"{n.prefix}{core}{n.suffix}"  # noqa: E731
    if n.kind == "int":
        i = int(v)
        sep = int_sep(n.core)
        if sep is not None:
            yield "thousands_none", deco(str(i))
        if abs(i) >= 1000:
            for name, s in [("comma", ","), ("comma_bang", ",\\!"), ("brace_comma", "{,}"), ("thin_space", "\\,"),
                            ("space", " ")]:
                if s != sep:
                    yield f"thousands_{name}", deco(group(i, s))
    if n.kind in ("frac", "mixed"):
        if n.kind == "frac":
            if "\\dfrac" not in n.core:
                yield "dfrac", deco(n.core.replace("\\frac", "\\dfrac"))
            else:
                yield "frac_of_dfrac", deco(n.core.replace("\\dfrac", "\\frac"))
            if not re.fullmatch(r"-?\\d?frac\{\d+\}\{\d+\}", n.core):
                yield "frac_braced", deco(tex_frac(v))
            yield "slash", deco(("-" if v < 0 else "") + f"{abs(v.numerator)}/{v.denominator}")
            if v < 0:
                yield "minus_in_numerator", deco(f"\\frac{{{v.numerator}}}{{{v.denominator}}}")
        else:
            yield "improper_of_mixed", deco(tex_frac(v))
            whole, frac = int(v), v - int(v)
            yield "mixed_plain", deco(f"{whole} {frac.numerator}/{frac.denominator}")
        if (d := exact_decimal(v)) is not None:
            yield "decimal_of_fraction", deco(d)
    if n.kind == "dec":
        if n.core.lstrip("-").startswith("."):
            yield "leading_zero", deco(n.core.replace(".", "0.", 1))
        if n.core.endswith("0"):
            yield "trailing_zero_dropped", deco(n.core.rstrip("0").rstrip("."))
        yield "fraction_of_decimal", deco(tex_frac(v))
        if 0 < abs(v) < Fraction(1, 1000):
            mant, exp = f"{float(v):e}".split("e")
            yield "scientific", deco(f"{mant.rstrip('0').rstrip('.')} \\times 10^{{{int(exp)}}}")
    if n.prefix:
        yield "dollar_dropped", f"{n.core}{n.suffix}"
    if n.suffix:
        if _DEG_RE.fullmatch(n.suffix.strip()):
            yield "degrees_dropped", f"{n.prefix}{n.core}"
            yield "degrees_braced", f"{n.prefix}{n.core}^{{\\circ}}"
            yield "degrees_word", f"{n.prefix}{n.core} \\text{{ degrees}}"
            yield "degrees_symbol", f"{n.prefix}{n.core}°"
        else:
            yield "unit_dropped", f"{n.prefix}{n.core}"
            if "\\mbox" in n.suffix:
                yield "unit_text_of_mbox", f"{n.prefix}{n.core}{n.suffix.replace(chr(92) + 'mbox', chr(92) + 'text')}"
    if not n.prefix and not n.suffix and n.kind in ("int", "dec", "frac") and uses_x(item.question):
        yield "label_x", f"x = {n.core}"


def uses_x(question: str) -> bool:
    """Whether the problem has a variable x in its math (so a model may write ``x = 5``)."""
    return bool(re.search(r"\$[^$]*(?<![\\a-zA-Z])x(?![a-zA-Z])[^$]*\$", question))


def tex_calc(expr: str) -> str:
    """A GSM8K calculator expression as a model writes it in LaTeX (``9*2`` → ``9 \\times 2``)."""
    return expr.replace("*", " \\times ").replace("/", " \\div ")


def asks_for_money(question: str) -> bool:
    """Whether the question's last sentence asks for an amount of money (so ``\\$18`` is the same answer)."""
    last = re.split(r"(?<=[.!])\s+", question.strip())[-1].lower()
    money = r"how much|dollars|cost|spen[dt]|earn|pay|paid|money|profit|price|sav|salary|pension|income|wage|budget"
    return "$" in question and bool(re.search(money, last))


def question_unit(question: str) -> str | None:
    m = re.search(r"\b[Hh]ow many ([a-z]+)", question)
    if m and m.group(1) not in ("more", "times", "of", "in", "total", "less", "fewer", "are", "is", "does", "do"):
        return m.group(1)
    return None


def gsm_spellings(item: Item, index: int) -> Iterator[tuple[str, str]]:
    g = item.gold
    n = int(g) if re.fullmatch(r"-?\d+", g) else None
    if n is not None and abs(n) >= 1000:
        for name, s in [("comma", ","), ("comma_bang", ",\\!"), ("brace_comma", "{,}"), ("thin_space", "\\,"),
                        ("space", " ")]:
            yield f"thousands_{name}", group(n, s)
    if (w := question_unit(item.question)) is not None:
        cmd = ["\\text", "\\mbox", "\\textnormal"][index % 3]
        yield f"unit_{cmd[1:]}", f"{g} {cmd}{{ {w}}}" if index % 2 else f"{g}{cmd}{{ {w}}}"
        yield "prose_unit_word", f"{g} {w}"
    if asks_for_money(item.question):
        yield "dollar", f"\\${g}"
        if n is not None and abs(n) >= 1000:
            yield "dollar_thousands", "\\$" + group(n, ",")
        yield "dollar_cents", f"\\${g}.00"
    if re.search(r"\b(what|which) percent(age)?\b", item.question, re.I):
        yield "percent", f"{g}\\%"
    if n is not None:
        yield "label_x", f"x = {g}"
        yield "decimal_point_zero", f"{g}.0"
    if item.calc and re.fullmatch(r"[\d.+\-*/() ]+", item.calc):  # "9 \times 2 = 18": the value after the last =
        yield "computation_chain", f"{tex_calc(item.calc)} = {g}"
    if n is not None and abs(n) >= 10_000 and 2 <= len(str(abs(n)).rstrip("0")) <= 3:
        digits = str(abs(n)).rstrip("0")
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        yield "scientific", f"{'-' if n < 0 else ''}{mant} \\times 10^{{{len(str(abs(n))) - 1}}}"


def expr_spellings(item: Item) -> Iterator[tuple[str, str]]:
    """Spellings of a non-number MATH gold, each a rule of its own."""
    g = item.gold.strip()
    if "\\dfrac" in g:
        yield "frac_of_dfrac", g.replace("\\dfrac", "\\frac")
    elif "\\frac" in g:
        yield "dfrac", g.replace("\\frac", "\\dfrac")
    shorthand = re.sub(r"\\sqrt\s*(\d)", r"\\sqrt{\1}", re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", g))
    if shorthand != g:
        yield "braces_of_shorthand", shorthand
    if "\\left" in g:
        yield "left_right_dropped", re.sub(r"\\left\s*|\\right\s*", "", g)
    elif g[:1] in "([" and g[-1:] in ")]" and "\\cup" not in g and (tuple_parts(g) or interval_parts(g)):
        yield "left_right_added", f"\\left{g[0]} {g[1:-1]} \\right{g[-1]}"
    if is_text(g):
        word = g[6:-1]
        if m := re.fullmatch(r"\(([A-E])\)", word):
            yield "choice_bare_parens", f"({m.group(1)})"
            yield "choice_letter", m.group(1)
        else:
            yield "text_dropped", word
            yield "textbf", f"\\textbf{{{word}}}"
    if m := re.fullmatch(r"([a-z])\s*=\s*(-?\d+)", g):
        yield "label_dropped", m.group(2)
    if m := re.fullmatch(r"[a-z]\s*\\in\s*(.*)", g):
        yield "label_dropped", m.group(1)
    if m := re.fullmatch(r"(\d+)_\{(\d+)\}", g):
        yield "base_unbraced", f"{m.group(1)}_{m.group(2)}"
    elif m := re.fullmatch(r"(\d+)_(\d)", g):
        yield "base_braced", f"{m.group(1)}_{{{m.group(2)}}}"
    if (parts := list_parts(g)) is not None:
        values = [v for p in parts for v in (expand_pm(p) or [p])]
        yield "list_reversed", ", ".join(reversed(values))
        yield "list_and", ", ".join(values[:-1]) + (", and " if len(values) > 2 else " and ") + values[-1]
        yield "list_as_set", "\\{" + ", ".join(values) + "\\}"
        yield "list_or_labels", " \\text{ or } ".join(f"x = {v}" for v in values)
        yield "one_box_per_element", ", ".join(values[1:] + values[:1])
    elif (pm := expand_pm(g)) is not None:
        yield "pm_as_two", ", ".join(pm)
        yield "pm_as_two_reversed", ", ".join(reversed(pm))
        yield "one_box_per_element", ", ".join(pm)
    parts = tuple_parts(g) or []
    if all(p.startswith("\\frac") or re.fullmatch(r"-?\d+", p) for p in parts) and any("\\frac" in p for p in parts):
        slashed = [re.sub(r"\\frac\{([\\\w]+)\}\{(\w+)\}", r"\1/\2", p) for p in parts]
        yield "tuple_slashes", "(" + ", ".join(slashed) + ")"
    if "pmatrix" in g:
        yield "bmatrix", g.replace("pmatrix", "bmatrix")
        if "/" in g:
            yield "matrix_fracs", re.sub(r"(-?)(\d+)/(\d+)", r"\1\\frac{\2}{\3}", g)
    if "=" in g and g.count("=") == 1 and "\\in" not in g:
        lhs, rhs = (p.strip() for p in g.split("="))
        yield "equation_sides_swapped", f"{rhs} = {lhs}"
        if rhs == "0" and len(terms := terms_top(lhs)) >= 2 and not has_var(terms[-1]):
            c = terms[-1]
            yield "equation_constant_moved", f"{join_terms(terms[:-1])} = {c[1:] if c.startswith('-') else '-' + c}"
        if len(terms := terms_top(rhs)) >= 2:
            yield "equation_terms_reordered", f"{lhs} = {join_terms(terms[::-1])}"
    elif (not any(c in g for c in ",=") and "\\pm" not in g and "\\begin" not in g and not is_text(g)
          and len(terms := terms_top(g)) >= 2):
        yield "terms_reordered", join_terms(terms[::-1])
    if int_polynomial(g) is not None:
        yield "exponent_braced", re.sub(r"\^(\d+)", r"^{\1}", g)
        yield "explicit_times", re.sub(r"(\d)\s*([a-zA-Z])", r"\1 \\cdot \2", g)
        # (a factored form, 2(3r^2 - 2r - 12), is left out: these questions ask for the expanded form)
    if m := re.fullmatch(r"(-?)\\d?frac\{([^{}]+)\}\{([^{}]+)\}", g):
        num, den = m.group(2).strip(), m.group(3).strip()
        num = num if re.fullmatch(r"[\w\\]+|\\sqrt\{\d+\}|\d+\\sqrt\{\d+\}", num) else f"({num})"
        den = den if re.fullmatch(r"\w+|\\pi", den) else f"({den})"
        yield "slash", f"{m.group(1)}{num}/{den}"
    if (m := re.fullmatch(r"\\frac\{\\sqrt\{(\d+)\}\}\{(\d+)\}", g)) and m.group(1) == m.group(2):
        yield "unrationalized", f"\\frac{{1}}{{\\sqrt{{{m.group(1)}}}}}"
    if m := re.fullmatch(r"(\d+)\s*\\sqrt\{?(\d+)\}?", g):
        yield "sqrt_absorbed", f"\\sqrt{{{int(m.group(1)) ** 2 * int(m.group(2))}}}"
    if m := re.fullmatch(r"(\d+)\s*\\pi", g):
        yield "pi_first", f"\\pi \\cdot {m.group(1)}"
    if g == "\\cot x":
        yield "cot_as_cos_over_sin", "\\frac{\\cos x}{\\sin x}"
        yield "cot_as_one_over_tan", "\\frac{1}{\\tan x}"
    if (g.startswith("(") and g.endswith(")") and (m := re.fullmatch(r"\(([a-z]\+\d+)\)\(([a-z]\+\d+)\)", g))):
        yield "factors_swapped", f"({m.group(2)})({m.group(1)})"
    if "\\frac" in g and "\\dfrac" not in g:
        yield "cfrac", g.replace("\\frac", "\\cfrac")
    if (parts := tuple_parts(g)) and len(parts) == 2 and re.search(r"ordered pair", item.question):
        yield "tuple_labelled", f"(x, y) = {g}"
    if "=" in g and g.count("=") == 1 and "\\in" not in g:
        lhs, rhs = (p.strip() for p in g.split("="))
        if rhs != "0" and has_var(rhs):  # y = 2x + 3  ->  y - 2x - 3 = 0
            moved = [t[1:] if t.startswith("-") else f"-{t}" for t in terms_top(rhs)]
            yield "equation_all_on_left", f"{join_terms([lhs, *moved])} = 0"
    if interval_parts(g) is not None and "\\in" not in g:
        yield "interval_labelled", f"x \\in {g}"
    if (pm := expand_pm(g)) is not None and list_parts(g) is None:
        yield "pm_as_set", "\\{" + ", ".join(pm) + "\\}"
        yield "pm_labelled", f"x = {g}"


def math_spellings(item: Item) -> Iterator[tuple[str, str]]:
    n = as_number(item.gold)
    if n is not None:
        yield from number_spellings(n, item)
        if n.kind == "frac" and "\\frac" in n.core and not re.search(r"\{", n.core):
            yield "braces_of_shorthand", f"{n.prefix}{tex_frac(n.value)}{n.suffix}"
        return
    yield from expr_spellings(item)


# --- perturbations (must fail) --------------------------------------------------------------------

def number_perturbations(n: Num) -> Iterator[tuple[str, str]]:
    v = n.value
    deco = lambda core: n.decorate(core)  # noqa: E731
    if n.kind == "int":
        i, sep = int(v), int_sep(n.core)
        render = (lambda k: group(k, sep)) if sep else str
        big = "big_" if abs(i) >= 100_000 else ""  # a rule of their own: never lost to the cap
        yield f"{big}plus_one", deco(render(i + 1))
        yield f"{big}minus_one", deco(render(i - 1))
        if i != 0:
            yield "sign_flipped", deco(render(-i))
        if i != 0:
            yield "times_ten", deco(render(i * 10))
    elif n.kind == "dec":
        last = n.core[-1]
        yield "last_digit_changed", deco(n.core[:-1] + str((int(last) + 1) % 10))
        whole, frac_digits = n.core.lstrip("-").split(".")
        if not n.prefix and not n.suffix:  # 1.25 → "1, 25": two answers, not a decimal comma
            yield "decimal_as_list", f"{'-' if v < 0 else ''}{whole or 0}, {frac_digits}"
        if last != "0" and len(n.core.split(".")[1]) >= 2:  # 0.35625 → 0.3562 (a dropped 0 would be equal)
            yield "last_digit_dropped", deco(n.core[:-1])
        if v != 0:
            yield "sign_flipped", deco(n.core[1:] if n.core.startswith("-") else "-" + n.core)
    else:
        if n.kind == "frac" and abs(v.numerator) != v.denominator and v != 0:
            yield "reciprocal", deco(tex_frac(1 / v))
        yield "numerator_plus_one", deco(tex_frac(v + Fraction(1, v.denominator)))
        if v != 0:
            yield "sign_flipped", deco(tex_frac(-v))


WORD_SWAPS = {"east": "west", "even": "odd", "ellipse": "hyperbola"}


def expr_perturbations(item: Item) -> Iterator[tuple[str, str]]:
    g = item.gold.strip()
    if is_text(g):
        word = g[6:-1]
        if m := re.fullmatch(r"\(([A-E])\)", word):
            yield "other_choice", f"\\text{{({'ABCDEA'['ABCDE'.index(m.group(1)) + 1]})}}"
        elif word in WORD_SWAPS:
            yield "other_word", f"\\text{{{WORD_SWAPS[word]}}}"
        else:
            names = [w for w in dict.fromkeys(re.findall(r"\b[A-Z][a-z]{2,}\b", item.question)) if w != word]
            names = [w for w in names if w not in ("The", "What", "Which", "Who", "How", "If", "Each", "For")]
            if names:
                yield "other_word", f"\\text{{{names[0]}}}"
        return
    if (m := re.fullmatch(r"(\d+)_(\{?)(\d+)(\}?)", g)) and len(m.group(1)) >= 2:
        yield "other_base", f"{m.group(1)}_{m.group(2)}{int(m.group(3)) + 1}{m.group(4)}"
    if (m := first_number(g)) is not None:
        yield "first_number_plus_one", g[:m.start()] + str(int(m.group()) + 1) + g[m.end():]
    if m := re.search(r"(?<![\\a-zA-Z])([a-zA-Z]|\\pi)\^\{?(\d+)\}?", g):
        yield "power_changed", g[:m.start(2)] + str(int(m.group(2)) + 1) + g[m.end(2):]
    if (parts := tuple_parts(g)) is not None and len(set(parts)) == len(parts):
        inner = re.fullmatch(r"(\\left)?\s*\((.*?)(\\right)?\s*\)", g)
        assert inner is not None
        swapped = [parts[1], parts[0], *parts[2:]]
        yield "tuple_swapped", f"{inner.group(1) or ''}({', '.join(swapped)}{inner.group(3) or ''})"
    if (ivs := interval_parts(g)) is not None:
        p = ivs[-1]
        m = re.fullmatch(r"(\\left)?\s*([\[(])(.*),(.*?)(\\right)?\s*([\])])", p)
        if m and "\\infty" not in m.group(4):
            flipped = {")": "]", "]": ")"}[m.group(6)]
            new = f"{m.group(1) or ''}{m.group(2)}{m.group(3)},{m.group(4)}{m.group(5) or ''}{flipped}"
            yield "interval_end_flipped", g[:g.rfind(p)] + new
        elif m and "\\infty" not in m.group(3):
            flipped = {"(": "[", "[": "("}[m.group(2)]
            new = f"{m.group(1) or ''}{flipped}{m.group(3)},{m.group(4)}{m.group(5) or ''}{m.group(6)}"
            yield "interval_end_flipped", g[:g.rfind(p)] + new
        if len(ivs) >= 2:
            yield "union_part_dropped", " \\cup ".join(ivs[:-1])
    if (parts := list_parts(g)) is not None:
        values = [v for p in parts for v in (expand_pm(p) or [p])]
        yield "element_dropped", ", ".join(values[:-1])
        if len(values) == 2 and all(re.fullmatch(r"-?\d+", v) for v in values) and not values[1].startswith("-"):
            yield "list_as_decimal", f"{values[0]}.{values[1]}"  # -2,1 → -2.1
        if "100" not in values:
            yield "element_added", ", ".join([*values, "100"])
    elif (pm := expand_pm(g)) is not None:
        yield "pm_branch_only", pm[0]
    if (parts := tuple_parts(g)) is not None:
        inner = re.fullmatch(r"(\\left)?\s*\((.*?)(\\right)?\s*\)", g)
        assert inner is not None
        yield "coordinate_added", f"{inner.group(1) or ''}({', '.join([*parts, '0'])}{inner.group(3) or ''})"
    if (not any(c in g for c in ",=") and "\\pm" not in g and "\\begin" not in g and len(terms := terms_top(g)) >= 2
            and terms[-1].lstrip("-").strip() != "0"):  # x^3+3x-6 → x^3+3x+6
        last = terms[-1]
        yield "last_term_sign_flipped", join_terms([*terms[:-1], last[1:] if last.startswith("-") else f"-{last}"])
        yield "negated", join_terms([t[1:] if t.startswith("-") else f"-{t}" for t in terms])  # p - q → -p + q
    if (poly := int_polynomial(g)) is not None and poly[0] > 1:  # 6r^2-4r-24 → 2(3r^2 - 2r - 11)
        content, terms = poly
        last = terms[-1]
        if re.fullmatch(r"-?\d+", last):
            yield "content_factored_off", f"{content}({join_terms([*terms[:-1], str(int(last) + 1)])})"
    if "=" in g and g.count("=") == 1 and re.search(r"(?<![\\a-zA-Z])x(?![a-zA-Z])", g) and \
            re.search(r"(?<![\\a-zA-Z])y(?![a-zA-Z])", g):  # y = 2x + 3 → x = 2y + 3
        yield "variables_swapped", re.sub(r"(?<![\\a-zA-Z])[xy](?![a-zA-Z])", lambda m: "yx"["xy".index(m[0])], g)
    if m := re.search(r"\\begin\{pmatrix\}\s*(-?[\d/]+)", g):  # a matrix is not its first entry
        yield "matrix_first_entry", m.group(1)
    if re.fullmatch(r"-?\d+\s*[-+]\s*\d*i", g):  # 6 - 5i → 6 - 5
        yield "imaginary_unit_dropped", g[:-1].rstrip() if g[-2:-1].isdigit() else g[:-1] + "1"
    if m := re.fullmatch(r"(\d+)\s*\\pi", g):
        yield "pi_dropped", m.group(1)
    if m := re.fullmatch(r"(\d*)\s*\\sqrt\{?(\d+)\}?", g):
        yield "sqrt_dropped", f"{m.group(1)} \\cdot {m.group(2)}" if m.group(1) else m.group(2)
    if ("=" not in g and "," not in g and "\\begin" not in g and not g.startswith("(") and g.lstrip("-").strip()
            and not re.fullmatch(r"[\d_{}]+", g)):
        yield "sign_flipped", g[1:].strip() if g.startswith("-") else f"-{g}"
    if "\\begin{pmatrix}" in g:
        rows = [r.strip() for r in g.split("\\begin{pmatrix}")[1].split("\\end{pmatrix}")[0].split("\\\\")]
        if len(rows) >= 2 and rows[0] != rows[1]:
            yield "matrix_rows_swapped", g.replace(rows[0], "@@", 1).replace(rows[1], rows[0], 1).replace("@@", rows[1])


def variable_renamed(gold: str) -> str | None:
    """``gold`` with its first variable letter renamed (``2k+2`` → ``2t+2``); None without one."""
    if "\\text" in gold or "\\mbox" in gold:
        return None
    # a label (`y = 2x + 3`, `x \\in [-2,7]`) stays: graders may drop labels, so only the value's letters count
    start = m.end() if (m := re.match(r"[a-zA-Z]\s*(=|\\in\b)", gold)) else 0
    body = gold[start:]
    letters = [m for m in re.finditer(r"(?<![\\a-zA-Z])[a-zA-Z](?![a-zA-Z])", body) if m.group() not in "ie"]
    if not letters:
        return None
    old = letters[0].group()
    new = next(c for c in "tuvwz" if c not in gold)
    return gold[:start] + re.sub(rf"(?<![\\a-zA-Z]){old}(?![a-zA-Z])", new, body)


def math_perturbations(item: Item) -> Iterator[tuple[str, str]]:
    n = as_number(item.gold)
    if n is not None:
        yield from number_perturbations(n)
        if n.kind == "int" and not n.prefix and not n.suffix and uses_x(item.question):
            yield "label_x_plus_one", f"x = {int(n.value) + 1}"
        return
    yield from expr_perturbations(item)
    if (renamed := variable_renamed(item.gold)) is not None:
        yield "variable_renamed", renamed


def gsm_perturbations(item: Item, index: int) -> Iterator[tuple[str, str]]:
    n = int(item.gold)
    styles = [str, lambda k: group(k, ","), lambda k: ("-" if k < 0 else "") + "\\$" + str(abs(k)),
              lambda k: f"{k} \\text{{ units}}", lambda k: group(k, " "), lambda k: group(k, "{,}"),
              lambda k: f"{k}\\%", lambda k: f"x = {k}"]
    render = styles[index % len(styles)]
    big = "big_" if abs(n) >= 100_000 else ""  # a rule of their own: never lost to the cap
    yield f"{big}plus_one", render(n + 1)
    yield f"{big}minus_one", render(n - 1)
    if item.calc and re.fullmatch(r"[\d.+\-*/() ]+", item.calc):  # the computation right, the result wrong
        yield "computation_chain_off", f"{tex_calc(item.calc)} = {n + 1}"
    if n != 0:
        yield "sign_flipped", render(-n)
        yield "times_ten", render(n * 10)
    if abs(n) < 1000:  # relative gap >= 5e-4: no tolerance may bridge it
        yield "plus_half", f"{n}.5"
        yield "plus_cents", f"\\${n}.05"
    if abs(n) >= 10_000 and len(digits := str(abs(n)).rstrip("0")) >= 3:  # 1450000 → 1.4 × 10^6 (rounded)
        sign, exp = "-" if n < 0 else "", len(str(abs(n))) - 1
        yield "scientific_rounded", f"{sign}{digits[0]}.{digits[1]} \\times 10^{{{exp}}}"


# --- cases ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    source: str
    kind: str        # form, spelling, perturbation, cutoff, hedge
    rule: str
    form: str
    answer: str      # the answer as written into the reply's final statement ("" when it states none)
    gold: str
    reply: str
    expect: bool = True              # whether grade_answer must pass it
    finish_reason: str = "stop"
    last_answer_wins: bool = False

    def describe(self) -> str:
        return f"{self.source} {self.rule}/{self.form}: {self.answer!r} vs gold {self.gold!r}"


def make_case(item: Item, kind: str, rule: str, form: str, answer: str, expect: bool = True) -> Case:
    """A reply of ``form`` stating ``answer`` after the item's reasoning."""
    if form == "gsm8k" and "\\" in _textify(answer):  # `#### 7 \times 10^{4}` is not how anyone writes it
        form = "boxed"
    shown = written(form, answer)
    return Case(item.source, kind, rule, form, shown, item.gold, f"{item.preamble}\n\n{FORMS[form](shown)}", expect)


CUT = ["\n\nTo double-check, let's", "\n\nWait, let me re-examine the", " Let me verify this by computing the"]


def cutoff_cases(items: list[Item], forms: list[str], step: int) -> list[Case]:
    """Replies stopped by max_tokens (finish_reason="length"), every ``step``-th item.

    ``unstated``: the reasoning (which usually computes the gold: GSM8K's last line ends "= 18") is cut
    before any final statement, so there is no answer (must fail, the SmolLM2 case). ``stated``: the
    final statement is made, then the cut comes in a check after it (must pass).
    """
    out = []
    for i, it in enumerate(items[::step]):
        cut = CUT[i % len(CUT)]
        if not re.search(r"answer|conclu|\\boxed|####", it.preamble, re.I):  # reasoning that states no result
            out.append(Case(it.source, "cutoff", "unstated", "-", "", it.gold, it.preamble + cut, False, "length"))
        f = forms[i % len(forms)]
        c = make_case(it, "cutoff", "stated", f, it.gold)
        if cut.startswith(" ") and re.fullmatch(r"[A-Za-z ]+", c.reply[-len(c.answer) - 1:].strip() or "0"):
            cut = CUT[0]  # "Answer: ellipse Let me verify...": where a plain-word answer ends is a guess
        out.append(Case(c.source, c.kind, c.rule, c.form, c.answer, c.gold, c.reply + cut, True, "length"))
    return out


TRAILERS = ["\n\nThis value satisfies all the conditions of the problem.",
            "\n\nI hope this helps! Let me know if you have any questions.",
            " We can check this by substituting it back into the original equation, which works."]


def trailer_cases(items: list[Item], forms: list[str]) -> list[Case]:
    """Each gold in one format (rotating) followed by chatter that states no other answer (must pass)."""
    out = []
    for i, it in enumerate(items):
        c = make_case(it, "form", "trailer", forms[(i + 3) % len(forms)], it.gold)
        trailer, rule = TRAILERS[i % len(TRAILERS)], "trailer"
        steps = [line for line in it.preamble.splitlines() if "=" in line and len(line) < 200]
        if i % 2 and steps:  # re-checking an intermediate step is not another final answer
            trailer, rule = f"\n\nCheck: {steps[0].strip()}", "trailer_check"
        out.append(Case(c.source, c.kind, rule, c.form, c.answer, c.gold, c.reply + trailer))
    return out


def correction_cases(items: list[Item], step: int) -> list[Case]:
    """An earlier box corrected by a later "The final answer is" sentence (every ``step``-th gold).

    ``corrected_to_gold``: box a wrong answer (the gold's first perturbation), then state the gold (must
    pass). ``corrected_away``: box the gold, then state the wrong answer (must fail).
    """
    out = []
    for it in items[::step]:
        wrong = next(iter(math_perturbations(it) if it.source.startswith("math") else gsm_perturbations(it, 0)))[1]
        for rule, boxed, final, expect in (("corrected_to_gold", wrong, it.gold, True),
                                           ("corrected_away", it.gold, wrong, False)):
            text = (f"{it.preamble}\n\nSo the answer is $\\boxed{{{boxed}}}$.\n\nWait, I made an error above; "
                    f"redoing the last step carefully changes the result.\n\nThe final answer is ${final}$.")
            out.append(Case(it.source, "correction", rule, "box+final", final, it.gold, text, expect))
    return out


def box_hedge_cases(items: list[Item], step: int) -> list[Case]:
    """Two boxes with unequal answers for a single-answer gold (every ``step``-th MATH-500 gold): a
    hedge fails by default; with last_answer_wins the last box counts (gold last: passes)."""
    out = []
    for it in items[::step]:
        if list_parts(it.gold) is not None or expand_pm(it.gold) is not None:
            continue  # a collection gold: several boxes may be its elements
        wrong = next(iter(math_perturbations(it)))[1]
        text = f"{it.preamble}\n\nIt is either $\\boxed{{{wrong}}}$ or $\\boxed{{{it.gold}}}$."
        out.append(Case(it.source, "hedge", "two_boxes", "boxes", it.gold, it.gold, text, False))
        out.append(Case(it.source, "hedge", "two_boxes_last_answer_wins", "boxes", it.gold, it.gold, text, True,
                        last_answer_wins=True))
    return out


def hedge_cases(items: list[Item], step: int) -> list[Case]:
    """GSM8K replies with two final answers (``#### n±1`` then ``#### n``), every ``step``-th item:
    a hedge fails by default, passes with last_answer_wins; the same answer stated twice passes."""
    out = []
    for i, it in enumerate(items[::step]):
        n = int(it.gold)
        wrong = str(n + 1 if i % 2 else n - 1)
        hedge = f"{it.preamble}\n#### {wrong}\nHmm, let me recount.\n#### {n}"
        out.append(Case(it.source, "hedge", "hedged", "gsm8k", str(n), it.gold, hedge, False))
        out.append(Case(it.source, "hedge", "hedged_last_answer_wins", "gsm8k", str(n), it.gold, hedge, True,
                        last_answer_wins=True))
        twice = f"{it.preamble}\nSo the answer is $\\boxed{{{n}}}$.\n\n#### {n}"
        out.append(Case(it.source, "hedge", "stated_twice", "gsm8k", str(n), it.gold, twice, True))
        either = f"{it.preamble}\n\nThe final answer is ${n}$ or ${wrong}$."
        out.append(Case(it.source, "hedge", "either_or", "final_dollar", str(n), it.gold, either, False))
    return out


def rotation(forms: list[str], i: int, n: int) -> list[str]:
    """``n`` of ``forms`` for the ``i``-th gold, rotating so that every form gets its share."""
    return [forms[(i + j) % len(forms)] for j in range(n)]


def spread(cases: list[Case], cap: int) -> list[Case]:
    """At most ``cap`` cases, evenly spread over the list (deterministic)."""
    if len(cases) <= cap:
        return cases
    step = len(cases) / cap
    return [cases[int(k * step)] for k in range(cap)]


def _capped(generated: list[Case], cap: int) -> list[Case]:
    by_rule: dict[str, list[Case]] = defaultdict(list)
    for c in generated:
        by_rule[c.rule].append(c)
    return [c for rule in sorted(by_rule) for c in spread(by_rule[rule], cap)]


@cache
def all_cases() -> dict[str, list[Case]]:
    groups: dict[str, list[Case]] = {}
    m_items, g_items = math_items(), gsm_items()
    groups["math500_forms"] = [make_case(it, "form", "as_written", f, it.gold)
                               for i, it in enumerate(m_items) for f in rotation(MATH_FORMS, i, FORMS_PER_GOLD)]
    groups["gsm8k_forms"] = [make_case(it, "form", "as_written", f, it.gold)
                             for i, it in enumerate(g_items) for f in rotation(GSM_FORMS, i, FORMS_PER_GOLD)]
    k = 0
    gen: list[Case] = []
    for it in m_items:
        for rule, ans in math_spellings(it):
            if ans == it.gold:
                continue  # the rule had nothing to change
            f = FORCED_FORM.get(rule) or MATH_FORMS[k % len(MATH_FORMS)]
            k += 1
            gen.append(make_case(it, "spelling", rule, f, ans))
    groups["math500_spellings"] = _capped(gen, CAP_SPELLING)
    gen = []
    for i, it in enumerate(g_items):
        for rule, ans in gsm_spellings(it, i):
            f = FORCED_FORM.get(rule) or GSM_FORMS[k % len(GSM_FORMS)]
            k += 1
            gen.append(make_case(it, "spelling", rule, f, ans))
    groups["gsm8k_spellings"] = _capped(gen, CAP_SPELLING)
    gen = []
    for it in m_items:
        for rule, ans in math_perturbations(it):
            for f in (MATH_FORMS[k % len(MATH_FORMS)], MATH_FORMS[(k + 3) % len(MATH_FORMS)]):
                gen.append(make_case(it, "perturbation", rule, f, ans, expect=False))
            k += 1
    groups["math500_perturbations"] = _capped(gen, CAP_PERTURBATION)
    gen = []
    for i, it in enumerate(g_items):
        for rule, ans in gsm_perturbations(it, i):
            for f in (GSM_FORMS[k % len(GSM_FORMS)], GSM_FORMS[(k + 3) % len(GSM_FORMS)]):
                gen.append(make_case(it, "perturbation", rule, f, ans, expect=False))
            k += 1
    groups["gsm8k_perturbations"] = _capped(gen, CAP_PERTURBATION)
    groups["math500_trailers"] = trailer_cases(m_items, MATH_FORMS)
    groups["gsm8k_trailers"] = trailer_cases(g_items[::2], GSM_FORMS)
    groups["math500_cutoffs"] = cutoff_cases(m_items, MATH_FORMS, 2)
    groups["math500_corrections"] = correction_cases(m_items, 4)
    groups["math500_hedges"] = box_hedge_cases(m_items, 4)
    groups["gsm8k_corrections"] = correction_cases(g_items, 8)
    groups["gsm8k_cutoffs"] = cutoff_cases(g_items, GSM_FORMS, 4)
    groups["gsm8k_hedges"] = hedge_cases(g_items, 8)
    # last_answer_wins only changes hedged replies: a sample of the others keeps its verdict under it
    sample = [c for name in ("math500_forms", "gsm8k_forms") for c in groups[name][::10]] + \
             [c for name in ("math500_perturbations", "gsm8k_perturbations") for c in groups[name][::5]]
    groups["last_answer_wins"] = [dataclasses.replace(c, last_answer_wins=True) for c in sample]
    return groups


@cache
def _warm() -> None:
    """One batch through the canonicalizer for every answer and gold (grade_answer's cache)."""
    strings = {s for cases in all_cases().values() for c in cases for s in (c.answer, c.gold)}
    canonical_answers(sorted(strings))


def _squash(s: str) -> str:
    s = re.sub(r"\s+", "", s)
    for _ in range(3):
        s = s.strip("$.").removeprefix("\\(").removesuffix("\\)").removeprefix("\\[").removesuffix("\\]")
    return s


def cause(case: Case, answer: str | None, detail: str) -> tuple[str, str]:
    """Which part of the checker a wrong verdict comes from, and a note on it."""
    if case.kind == "cutoff" and not case.expect:
        return "extraction: took an answer where there is none (cutoff)", detail
    if case.kind == "hedge" and not case.expect:
        return "grading: a hedge (two unequal answers) passed", detail
    if answer is None:
        return "extraction: no answer found in the reply", detail
    if _squash(answer) != _squash(case.answer):
        return "extraction: took a different answer from the reply", detail
    try:
        equal = answers_equal(answer, case.gold)
    except Exception as e:  # noqa: BLE001 - only a diagnosis
        return "comparison: answers_equal raises", f"{type(e).__name__}: {e}"
    if equal == case.expect:
        read = getattr(grade_module, "gold_answer", lambda g: "?")(case.gold)
        return ("grading: answers_equal(answer, gold) is right, grade_answer is not (gold-side extraction?)",
                f"{detail}; gold read as {read!r}")
    return "comparison: answers_equal(answer, gold) is wrong", detail


def run_group(name: str) -> tuple[list[Case], list[tuple[Case, str, str | None, str]]]:
    """Grade a group; the wrong verdicts as (case, cause, extracted answer, detail)."""
    _warm()
    cases = all_cases()[name]
    wrong = []
    for c in cases:
        try:
            v = grade_answer(c.reply, c.gold, finish_reason=c.finish_reason, last_answer_wins=c.last_answer_wins)
        except Exception as e:  # noqa: BLE001 - a crash is a wrong verdict, reported with the rest
            wrong.append((c, f"crash: {type(e).__name__}", None, str(e)[:200]))
            continue
        if v.passed != c.expect:
            why, note = cause(c, v.answer, v.detail)
            wrong.append((c, why, v.answer, note))
    return cases, wrong


def _report(name: str, wrong: list, total: int, limit: int = 40) -> str:
    lines = [f"{len(wrong)} of {total} {name} cases graded wrong:"]
    for c, why, got, detail in wrong[:limit]:
        lines.append(f"  [{why}] {c.describe()} -> extracted {got!r} ({detail})")
    if len(wrong) > limit:
        lines.append(f"  … and {len(wrong) - limit} more")
    return "\n".join(lines)


GROUPS = ["math500_forms", "math500_trailers", "math500_spellings", "math500_perturbations", "math500_cutoffs",
          "math500_corrections", "math500_hedges", "gsm8k_forms", "gsm8k_trailers", "gsm8k_spellings",
          "gsm8k_perturbations", "gsm8k_cutoffs", "gsm8k_corrections", "gsm8k_hedges", "last_answer_wins"]


@pytest.mark.parametrize("group", GROUPS)
def test_model_style_answers(group: str) -> None:
    """Rewrites pass and perturbations fail; the message lists the wrong verdicts with their cause."""
    _need_data()
    cases, wrong = run_group(group)
    assert cases, f"no {group} cases generated"
    assert not wrong, _report(group, wrong, len(cases))


def test_generators_cover_every_rule_kind() -> None:
    """The suite itself: each group is non-trivial and every perturbation differs from its gold text."""
    _need_data()
    groups = all_cases()
    assert len(groups["math500_forms"]) == 500 * FORMS_PER_GOLD
    assert len(groups["gsm8k_forms"]) == 1319 * FORMS_PER_GOLD
    for name, forms, golds in (("math500_forms", MATH_FORMS, 500), ("gsm8k_forms", GSM_FORMS, 1319)):
        share = golds * FORMS_PER_GOLD / len(forms)  # every format gets its share
        assert all(abs(sum(c.form == f for c in groups[name]) - share) < 0.05 * share for f in forms), name
    assert {c.rule for c in groups["math500_cutoffs"] + groups["gsm8k_cutoffs"]} == {"stated", "unstated"}
    assert all(not c.expect for name in GROUPS if name.endswith("perturbations") for c in groups[name])
    for name in ("math500_spellings", "gsm8k_spellings", "math500_perturbations", "gsm8k_perturbations"):
        assert len({c.rule for c in groups[name]}) >= 4, name
    for name in ("math500_perturbations", "gsm8k_perturbations"):
        assert all(_squash(c.answer) != _squash(c.gold) for c in groups[name])
    assert all(c.answer in c.reply for cases in groups.values() for c in cases if c.form != "boxes")


# --- named special cases --------------------------------------------------------------------------

SMOL_TRUNCATED = (
    "To find out how many cups of feed Wendi needs to give her chickens in the final meal of the day, we need to "
    "calculate the total amount of feed she gives them in the morning and afternoon, and then subtract that from "
    "the total amount of feed they need.\n\n"
    "In the morning, she gives them 15 cups of feed. In the afternoon, she gives them 25 cups of feed. So, the "
    "total amount of feed she gives them is 15 + 25 = 40 cups.\n\n"
    "Each chicken needs 3 cups of feed per day. To find the total amount of feed needed for 20 chickens, we can "
    "multiply the")


@pytest.mark.parametrize("finish_reason", ["length", "stop"])
def test_reply_cut_off_mid_sentence_has_no_answer(finish_reason: str) -> None:
    """SmolLM2's GSM8K reply stopped by max_tokens: "20 chickens" is not an answer (gold 20)."""
    v = grade_answer(SMOL_TRUNCATED, "20", finish_reason=finish_reason)
    assert not v.passed, v


def test_reply_cut_off_after_a_box_passes() -> None:
    text = "15 + 25 = 40 cups are given, and 60 - 40 = $\\boxed{20}$ cups remain.\n\nTo check, each of the"
    v = grade_answer(text, "20", finish_reason="length")
    assert v.passed, v


def test_reply_cut_off_after_stating_its_answer_passes() -> None:
    text = (SMOL_TRUNCATED.rsplit("Each chicken", 1)[0] + "Each chicken needs 3 cups of feed per day, so 20 chickens "
            "need 3 * 20 = 60 cups, and 60 - 40 = 20.\n\nThe final answer is $20$.\n\nLet me double-check: the")
    v = grade_answer(text, "20", finish_reason="length")
    assert v.passed, v


HEDGED = ("Let x be the number of pages. She reads 12 + 2 * 12 = 36 pages, so 120 - 36 = 84 remain and half of "
          "them is 42. Then 42 - 7 = 35.\n#### 35\nWait, 45 - 30 = 15.\n#### 15\nActually 50 / 2 = 25.\n#### 25")


def test_hedged_final_answers_fail_by_default() -> None:
    v = grade_answer(HEDGED, "25")
    assert not v.passed, v
    assert "answers" in v.detail.lower(), v.detail


@pytest.mark.parametrize("text", [
    "It is either $\\boxed{35}$ or $\\boxed{25}$.",
    "So the answer is $\\boxed{35}$.\n\nThe final answer is $25$. Or maybe $\\boxed{15}$.",
    "#### 25\n#### 35",
])
def test_other_hedges_fail_by_default(text: str) -> None:
    """Unequal final answers in any format are a hedge, whichever comes last (gold 25)."""
    assert not grade_answer(text, "25").passed


@pytest.mark.parametrize("text", [
    "So $x = \\boxed{25}$.\n\nThe final answer is $25$.",
    "#### 25\nChecking: 5 * 5 = 25.\n#### 25",
    "The answer is $\\boxed{\\frac{50}{2}}$, that is, $\\boxed{25}$.",
])
def test_one_answer_stated_twice_is_not_a_hedge(text: str) -> None:
    v = grade_answer(text, "25")
    assert v.passed, v


def test_hedged_final_answers_last_answer_wins() -> None:
    assert grade_answer(HEDGED, "25", last_answer_wins=True).passed
    assert not grade_answer(HEDGED, "35", last_answer_wins=True).passed
    assert not grade_answer(HEDGED, "15", last_answer_wins=True).passed


@pytest.mark.parametrize("boxes, gold, passed", [
    ("$\\boxed{1}, \\boxed{2}, \\boxed{3}$", "\\{1,2,3\\}", True),
    ("$\\boxed{3}$, $\\boxed{1}$ and $\\boxed{2}$", "\\{1,2,3\\}", True),
    ("$\\boxed{1}, \\boxed{2}$", "\\{1,2,3\\}", False),
    ("$\\boxed{1}, \\boxed{2}, \\boxed{3}$", "2", False),
    ("$\\boxed{1}, \\boxed{2}, \\boxed{4}$", "\\{1,2,3\\}", False),
])
def test_several_boxes_are_one_collection(boxes: str, gold: str, passed: bool) -> None:
    text = f"The roots of $(x-1)(x-2)(x-3)=0$ are {boxes}."
    assert grade_answer(text, gold).passed is passed


@pytest.mark.parametrize("reply, gold, passed", [
    ("The final answer is $x \\geq 5$.", "x \\ge 5", True),
    ("The final answer is $5 \\leq x$.", "x \\geq 5", True),
    ("The final answer is $x > 5$.", "x \\geq 5", False),
    ("The final answer is $x \\leq 5$.", "x \\geq 5", False),
    ("The final answer is $\\frac{1}{\\cos x}$.", "\\sec x", True),
    ("The final answer is $\\frac{1}{\\sin x}$.", "\\sec x", False),
])
def test_relations_and_trig_identities(reply: str, gold: str, passed: bool) -> None:
    """Relations compare as relations (``x \\geq 5`` is ``5 \\leq x``, not ``x > 5``); identities hold."""
    assert grade_answer(reply, gold).passed is passed


@pytest.mark.parametrize("reply, gold", [
    ("The final answer is $2, 5$.", "2.5"),
    ("The final answer is $2.5$.", "2, 5"),
    ("The final answer is $1, 0$.", "1"),
    ("The final answer is $1$ or $0$.", "1"),
    ("The solutions are $\\boxed{3}$, $\\boxed{14}$.", "3.14"),
    ("The final answer is $1.5$.", "1,5"),       # MATH writes answer lists without spaces: "-2,1"
    ("The final answer is $-2.1$.", "-2,1"),
    ("The final answer is $1$.", "1,0"),
])
def test_a_list_is_not_a_decimal_with_a_comma(reply: str, gold: str) -> None:
    """``2, 5`` (two answers) is not 2.5, whatever decimal commas are accepted elsewhere."""
    v = grade_answer(reply, gold)
    assert not v.passed, v


@pytest.mark.parametrize("answer, passed", [
    ("25\\%", True), ("25", True), ("0.25", True), ("25 \\text{ percent}", True),
    ("26\\%", False), ("0.26", False), ("2.5", False), ("0.025", False),
])
def test_percent_gold(answer: str, passed: bool) -> None:
    """A percent gold takes the percent, the bare number and the decimal fraction; nothing else."""
    assert grade_answer(f"The final answer is ${answer}$.", "25\\%").passed is passed


CORRECTED = ("We get $x + 5 = 17$, so $\\boxed{12}$.\n\nWait, I misread: the equation is $x + 5 = 19$, so "
             "$x = 14$.\n\nThe final answer is $14$.")


def test_box_corrected_by_later_final_answer_sentence() -> None:
    v = grade_answer(CORRECTED, "14")
    assert v.passed, v
    assert not grade_answer(CORRECTED, "12").passed


@pytest.mark.parametrize("text", ["", "I'm not sure how to solve this problem."])
def test_reply_without_an_answer_fails(text: str) -> None:
    v = grade_answer(text, "9")
    assert not v.passed and v.answer is None, v


@pytest.mark.parametrize("gold", ["14", "7", "5", "9"])
def test_unfinished_working_is_not_an_answer(gold: str) -> None:
    """Numbers in working that never states a result are not answers, even when one equals the gold."""
    v = grade_answer("Let's compute 3 + 4 = 7 and 7 * 2 = 14, then subtract 5 from", gold)
    assert not v.passed, v


def test_big_integers_off_by_one_differ() -> None:
    """Integers compare exactly, however big (the 1e-6 tolerance must not reach them)."""
    for a, b in [("1450000", "1450001"), ("11,\\!111,\\!111,\\!100", "11111111101"), ("2880000", "2879999"),
                 ("1,450,000", "1450001"), ("1,450,000", "1,450,001")]:
        assert not answers_equal(a, b), (a, b)
        assert not grade_answer(f"#### {b}", a).passed, (a, b)
    assert grade_answer("#### 1450000", "1,450,000").passed  # a gold with separators (GSM8K's raw line)


# --- report ---------------------------------------------------------------------------------------

def main() -> None:
    """Print the counts and every wrong verdict grouped by cause (for the notes)."""
    import time

    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    t0 = time.monotonic()
    all_cases()
    _warm()
    print(f"built and warmed in {time.monotonic() - t0:.1f} s")
    for name in GROUPS:
        t1 = time.monotonic()
        cases, wrong = run_group(name)
        print(f"\n## {name}: {len(cases)} cases, {len(cases) - len(wrong)} right, {len(wrong)} wrong "
              f"({time.monotonic() - t1:.1f} s)")
        rules: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for c in cases:
            rules[c.rule][0] += 1
        for c, *_ in wrong:
            rules[c.rule][1] += 1
        print("rules (cases/wrong): " + ", ".join(f"{r} {n}/{w}" for r, (n, w) in sorted(rules.items())))
        by_cause: dict[str, list] = defaultdict(list)
        for w in wrong:
            by_cause[w[1]].append(w)
        for why, ws in sorted(by_cause.items()):
            print(f"### {why}: {len(ws)}")
            lines: dict[tuple, list[str]] = defaultdict(list)  # one line per answer, its forms listed
            for c, _, got, detail in ws:
                lines[(c.source, c.rule, c.answer, c.gold, got,
                       detail)].append(c.form)
            for (source, rule, answer, gold, got, detail), forms in list(lines.items())[:limit]:
                print(f"- {source} {rule} [{', '.join(forms)}]: `{answer}` vs gold `{gold}` -> extracted "
                      f"`{got}` ({detail})")
            if len(lines) > limit:
                print(f"- … and {len(lines) - limit} more")
    groups = all_cases()
    must_pass = sum(c.expect for cases in groups.values() for c in cases)
    must_fail = sum(not c.expect for cases in groups.values() for c in cases)
    print(f"\n{must_pass} replies must pass, {must_fail} must fail; total {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
