"""Grade a whole model reply against a gold answer, exactly the way a run does.

``grade_answer(reply, gold)`` extracts the reply's final answer(s), compares them with the gold
answer by canonical form and returns an `AnswerVerdict`: ``passed``, the extracted ``answer`` and
a one-line ``detail``. The gold may be a bare answer (``\\frac{1}{2}``) or a text holding one
(``$\\boxed{1/2}$``), as in math-verify's labelled pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentloop.math.canonical import answers_equal
from agentloop.math.extract import extract_answer


@dataclass(frozen=True, slots=True)
class AnswerVerdict:
    """The result of `grade_answer`: whether it passed, the answer as extracted, and why."""

    passed: bool
    answer: str | None
    detail: str


def gold_answer(gold: str) -> str:
    """The answer in a gold string: its extracted final answer when it holds one, else itself."""
    return extract_answer(gold) or gold.strip()


def grade_answer(reply: str, gold: str, *, finish_reason: str = "stop", last_answer_wins: bool = False,
                 precision: int | None = None) -> AnswerVerdict:
    """Grade ``reply`` (a whole model reply) against ``gold``; see the module docstring."""
    answer = extract_answer(reply)
    if answer is None:
        return AnswerVerdict(False, None, "no final answer found")
    passed = answers_equal(answer, gold_answer(gold))
    return AnswerVerdict(passed, answer, "equal to the gold answer" if passed else "not equal to the gold answer")
