"""Grade a whole model reply against a gold answer, exactly the way a run does.

``grade_answer(reply, gold)`` extracts the reply's final answer(s) (`agentloop.math.extract`),
compares them with the gold answer by canonical form and returns an `AnswerVerdict`: ``passed``,
the extracted ``answer`` and a one-line ``detail``. The rules:

- The gold may be a bare answer (``\\frac{1}{2}``) or a text holding one (``$\\boxed{1/2}$``, a
  worked solution, ``$$\\boxed{2}, \\boxed{3}$$``): its last stated answer is used, else the
  whole gold string (see `gold_answer`).
- No credit for hedging: a reply that states more than one final answer, not all equal to each
  other, is failed ("hedged: …"), unless the gold is itself a collection of that many items
  (``\\boxed{1}``, then later ``\\boxed{2}``, for the gold ``\\{1, 2\\}`` is one answer). Equal
  repeated answers are not hedging. ``last_answer_wins=True`` grades the last one instead.
- ``finish_reason="length"`` (cut off at the token limit): only a stated final answer counts
  ("\\boxed{}", "final answer", "the answer is", ``####``), never a number from the cut text.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

from agentloop.math.canonical import answers_equal
from agentloop.math.extract import Extraction, extract, undouble


@dataclass(frozen=True, slots=True)
class AnswerVerdict:
    """The result of `grade_answer`: whether it passed, the answer as extracted, and why."""

    passed: bool
    answer: str | None
    detail: str


GOLD_KINDS = ("final", "box", "answer", "bare_math")


def gold_answer(gold: str) -> str:
    """The answer in a gold string: its last stated final answer when it states one ("final
    answer", a box, "the answer is", or only math delimiters around it: ``$x = 1/3$``), else the
    whole string. Golds are never read for a concluding sentence or a number in prose: a bare
    gold such as ``5x - 7y + 11z + 4 = 0`` or ``\\$32,\\!348`` is the answer itself."""
    ex = extract(gold)
    return ex.answer if ex.answer is not None and ex.kind in GOLD_KINDS else undouble(gold).strip()


def _equal(a: str, b: str, options: dict[str, Any]) -> bool:
    """`answers_equal` (``a`` the prediction, ``b`` the gold) with the options it takes."""
    return answers_equal(a, b, **{k: v for k, v in options.items() if v is not None and k in _EQUAL_PARAMS})


_EQUAL_PARAMS = frozenset(inspect.signature(answers_equal).parameters)


def collection_size(answer: str) -> int:
    """How many items an answer lists at top level: ``\\{1, 2, 3\\}``, ``1, 2 and 3`` → 3;
    ``(3, 2)``, ``[0, 1)``, ``5`` → 1. Brackets of any kind keep their commas."""
    s = answer.strip().strip("$").strip()
    for left, right in (("\\{", "\\}"), ("\\left\\{", "\\right\\}")):
        if s.startswith(left) and s.endswith(right):
            s = s[len(left):-len(right)]
    s = re.sub(r"\\text\s*\{\s*(and|or)\s*\}|\b(?:and|or)\b", ",", s)
    depth, items, current = 0, 0, ""
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch in ",;" and depth == 0:
            items += bool(current.strip())
            current = ""
        else:
            current += ch
    return items + bool(current.strip())


def distinct_answers(ex: Extraction, precision: int | None = None) -> list[str]:
    """The stated answers that are not equal to an earlier one (answers as written, in order)."""
    kept: list[str] = []
    for a in ex.answers:
        if not any(a == k or _equal(a, k, {"precision": precision}) for k in kept):
            kept.append(a)
    return kept


def grade_extraction(ex: Extraction, gold: str, *, last_answer_wins: bool = False, precision: int | None = None,
                     strict: bool | None = None, allow_set_relation_comp: bool | None = None) -> AnswerVerdict:
    """`grade_answer` on an extraction already made (the run path extracts once)."""
    if ex.answer is None:
        why = " (cut off at the token limit before stating one)" if ex.cut_off else ""
        return AnswerVerdict(False, None, "no final answer found" + why)
    truth = gold_answer(gold)
    answer = ex.answer
    if not last_answer_wins and len(ex.answers) > 1:
        distinct = distinct_answers(ex, precision)
        if len(distinct) > 1:
            if collection_size(truth) != len(distinct):
                shown = "; ".join(d[:60] for d in distinct[:5])
                return AnswerVerdict(False, None, f"hedged: {len(distinct)} different final answers ({shown})")
            answer = ", ".join(distinct)
    options = {"precision": precision, "strict": strict, "allow_set_relation_comp": allow_set_relation_comp}
    passed = _equal(answer, truth, options)
    return AnswerVerdict(passed, answer, "equal to the gold answer" if passed else "not equal to the gold answer")


def grade_answer(reply: str, gold: str, *, finish_reason: str | None = "stop", last_answer_wins: bool = False,
                 precision: int | None = None, strict: bool | None = None,
                 allow_set_relation_comp: bool | None = None) -> AnswerVerdict:
    """Grade ``reply`` (a whole model reply) against ``gold``; see the module docstring.

    ``finish_reason``: the model reply's ("stop", "length", ...). ``precision``, ``strict`` and
    ``allow_set_relation_comp`` go to `answers_equal` (unset: its defaults)."""
    return grade_extraction(extract(reply, finish_reason=finish_reason), gold, last_answer_wins=last_answer_wins,
                            precision=precision, strict=strict, allow_set_relation_comp=allow_set_relation_comp)
