"""Math tasks: final-answer extraction, grading, canonical answer forms and voting (MATH-500, GSM8K)."""

from agentloop.math.canonical import (
    answers_equal,
    canonical_answer,
    canonical_answers,
    canonical_answers_async,
    configure,
)
from agentloop.math.extract import extract, extract_answer
from agentloop.math.grade import AnswerVerdict, grade_answer
from agentloop.math.normalize import normalize
from agentloop.math.vote import majority_vote

__all__ = [
    "AnswerVerdict", "answers_equal", "canonical_answer", "canonical_answers", "canonical_answers_async", "configure",
    "extract", "extract_answer", "grade_answer", "majority_vote", "normalize",
]
