"""Math problems: MATH-500, GSM8K (test split) and generic JSONL, plus the default math prompt.

The loaders read the published formats as they are (JSONL, optionally gzipped, through
`agentloop.tasks.loaders.read_jsonl`); every malformed row is a one-line DataError naming
file:line and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentloop.errors import DataError
from agentloop.math.extract import gsm8k_answer
from agentloop.tasks.loaders import load_unique

FORMATS = ("math500", "gsm8k", "jsonl")

# The style of Meta's Llama 3 MATH evaluation prompt (also used by Hugging Face's
# "Scaling test-time compute with open models"): step-by-step work, final answer in \boxed{}.
MATH_SYSTEM_PROMPT = (
    "Solve the following math problem efficiently and clearly:\n\n"
    "- For simple problems (2 steps or fewer):\n"
    "Provide a concise solution with minimal explanation.\n\n"
    "- For complex problems (3 steps or more):\n"
    "Use this step-by-step format:\n\n"
    "## Step 1: [Concise description]\n"
    "[Brief explanation and calculations]\n\n"
    "## Step 2: [Concise description]\n"
    "[Brief explanation and calculations]\n\n"
    "...\n\n"
    "Regardless of the approach, always conclude with:\n\n"
    "Therefore, the final answer is: $\\boxed{answer}$. I hope it is correct.\n\n"
    "Where [answer] is just the final number or expression that solves the problem."
)
MATH_USER_TEMPLATE = "{problem}"


@dataclass(frozen=True)
class MathProblem:
    id: str
    problem: str
    """The problem statement, shown to the model (through MATH_USER_TEMPLATE's `{problem}`)."""
    answer: str
    """Ground-truth final answer as published (LaTeX for MATH, a plain number for GSM8K)."""
    solution: str | None = None
    """Reference worked solution, when the dataset has one; never shown to the model."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """E.g. MATH's `subject` and `level` (int 1-5), the difficulty bins of reports."""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "problem": self.problem, "answer": self.answer,
                "solution": self.solution, "metadata": self.metadata}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MathProblem:
        return cls(**d)


def _text(row: dict[str, Any], key: str, where: str) -> str:
    """A required non-empty string field."""
    if key not in row:
        raise DataError(f"{where}: missing field '{key}' (expected a string)")
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field '{key}' must be a non-empty string, got {value!r:.60}")
    return value


def _optional_text(row: dict[str, Any], key: str, where: str) -> str | None:
    """An optional string field: None when absent or null."""
    return None if row.get(key) is None else _text(row, key, where)


def _answer(row: dict[str, Any], where: str) -> str:
    """The `answer` field; plain JSON numbers are accepted and kept as written (42, 0.5)."""
    value = row.get("answer")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return _text(row, "answer", where)


_LEVEL = re.compile(r"(?:level\s*)?(\d{1,2})", re.IGNORECASE)


def _level(value: Any, where: str) -> int | str:
    """MATH's level: `"Level 3"` or `3` -> 3; other strings (upstream has "Level ?") are kept."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = _LEVEL.fullmatch(value.strip())
        return int(m.group(1)) if m else value.strip()
    raise DataError(f"{where}: field 'level' must be an integer or a string like 'Level 3', got {value!r:.60}")


def _id(row: dict[str, Any], key: str, where: str, default: str) -> str:
    if row.get(key) is None:
        return default
    value = row[key]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field '{key}' must be a non-empty string, got {value!r:.60}")
    return value


def _math500(row: dict[str, Any], where: str, index: int) -> MathProblem:
    problem = _text(row, "problem", where)
    solution = _optional_text(row, "solution", where)
    answer = _answer(row, where)
    metadata: dict[str, Any] = {}
    subject = _optional_text(row, "subject", where)
    if subject is not None:
        metadata["subject"] = subject
    if row.get("level") is not None:
        metadata["level"] = _level(row["level"], where)
    return MathProblem(id=_id(row, "unique_id", where, f"math500/{index}"), problem=problem,
                       answer=answer, solution=solution, metadata=metadata)


def _gsm8k(row: dict[str, Any], where: str, index: int) -> MathProblem:
    question = _text(row, "question", where)
    text = _text(row, "answer", where)
    try:
        answer = gsm8k_answer(text)
    except ValueError as e:
        raise DataError(f"{where}: field 'answer' has {e}; expected GSM8K's worked answer ending in '#### N'") from None
    solution = text[:text.rfind("####")].rstrip() or None
    return MathProblem(id=f"gsm8k/{index}", problem=question, answer=answer,
                       solution=solution)


def _generic(row: dict[str, Any], where: str, index: int) -> MathProblem:
    problem = _text(row, "problem", where)
    answer = _answer(row, where)
    solution = _optional_text(row, "solution", where)
    metadata = row.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise DataError(f"{where}: field 'metadata' must be an object, got {metadata!r:.60}")
    return MathProblem(id=_id(row, "id", where, f"problem/{index}"), problem=problem,
                       answer=answer, solution=solution, metadata=metadata)


_ROW_READERS = {"math500": _math500, "gsm8k": _gsm8k, "jsonl": _generic}


def detect_format(row: dict[str, Any], where: str) -> str:
    """The format of a file from the fields of its first row."""
    if "question" in row and "problem" not in row:
        return "gsm8k"
    if "problem" in row:
        if any(k in row for k in ("unique_id", "subject", "level")):
            return "math500"
        return "jsonl"
    fields = ", ".join(sorted(map(str, row))[:8]) or "none"
    raise DataError(
        f"{where}: cannot tell the math format from the fields ({fields}); expected 'problem' and "
        "'answer' (jsonl, math500) or 'question' and 'answer' (gsm8k)"
    )


def load_math(path: str | Path, format: str | None = None) -> list[MathProblem]:
    """Load math problems from a JSONL(.gz) file in `format` (math500, gsm8k, jsonl; None: detect)."""
    path = Path(path)
    if format is not None and format not in FORMATS:
        raise DataError(f"{path}: unknown math format {format!r}; expected one of {', '.join(FORMATS)}")
    detected = format

    def parse(row: dict[str, Any], where: str, index: int) -> MathProblem:
        nonlocal detected
        detected = detected or detect_format(row, where)  # the first row decides
        return _ROW_READERS[detected](row, where, index)

    return load_unique(Path(path), parse, "id", "problems")


def load_math500(path: str | Path) -> list[MathProblem]:
    return load_math(path, "math500")


def load_gsm8k(path: str | Path) -> list[MathProblem]:
    return load_math(path, "gsm8k")
