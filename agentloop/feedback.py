"""What a revision turn shows the model: a compact message built from the feedback tests only.

Grading tests grade every turn but never reach a prompt; the feedback message is derived from a
separate run of `task.feedback_tests`. It is short on purpose (prompt processing is the slow part
on small servers): the failing test line, the exception, and a tail of the traceback or output.
"""

from __future__ import annotations

import re
from typing import Any

from agentloop.sandbox.types import ExecResult, Verdict

DEFAULT_LIMIT_CHARS = 1200
MATH_REVISION_PROMPT = (
    "Check your work step by step. If you find a mistake, correct it; either way, end with the final "
    "answer as: Therefore, the final answer is: $\\boxed{answer}$."
)
"""A math revision turn's message: without ground truth there is nothing to show but a request to check."""
_TEST_LINE = re.compile(r'File "<tests>", line \d+, in \w+\n\s*(.+)')


def feedback_message(result: ExecResult | None, limit_chars: int = DEFAULT_LIMIT_CHARS) -> str:
    """The user turn that follows a failed attempt (capped at `limit_chars`)."""
    if result is None:
        return ("Your code could not be checked (this task has no feedback tests). "
                "Review it and reply with a corrected version.")
    if result.verdict is Verdict.PASSED:
        return "Your code passes the example tests."
    parts = [_headline(result)]
    if failing := _failing_test_line(result.stderr):
        parts.append(f"Failing test: {failing}")
    tail = _tail(result.stderr or result.stdout, max(0, limit_chars // 2))
    if tail:
        parts.append(f"Output (last lines):\n{tail}")
    parts.append("Fix the code and reply with the complete corrected function in one ```python block.")
    return _cap("\n".join(parts), limit_chars)


def _headline(result: ExecResult) -> str:
    if result.verdict is Verdict.TIMEOUT:
        return f"Your code {result.detail or 'timed out'} on the example tests."
    if result.verdict is Verdict.ERROR:
        return f"Your code crashed on the example tests: {result.detail}."
    return f"Your code fails the example tests: {result.detail or 'a test failed'}."


def _failing_test_line(stderr: str) -> str | None:
    """The last `<tests>` frame's source line: the assertion that failed (or the call that raised)."""
    lines = _TEST_LINE.findall(stderr)
    return lines[-1].strip() if lines else None


def _tail(text: str, limit: int) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    return "..." + text[len(text) - limit :].split("\n", 1)[-1] if limit else ""


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


def revision_messages(previous: list[dict[str, Any]], completion: str, feedback: str) -> list[dict[str, Any]]:
    """The next turn's messages: the previous ones unchanged (so vLLM's prefix cache hits), the
    model's reply, and the feedback."""
    return [*previous, {"role": "assistant", "content": completion}, {"role": "user", "content": feedback}]
