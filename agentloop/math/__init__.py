"""Math tasks: canonical answer forms and voting (MATH-500, GSM8K)."""

from agentloop.math.canonical import (
    answers_equal,
    canonical_answer,
    canonical_answers,
    canonical_answers_async,
    configure,
)
from agentloop.math.normalize import normalize
from agentloop.math.vote import majority_vote

__all__ = [
    "answers_equal", "canonical_answer", "canonical_answers", "canonical_answers_async", "configure",
    "majority_vote", "normalize",
]
