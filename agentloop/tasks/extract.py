"""From a model reply to a runnable program, the way HumanEval expects."""

from __future__ import annotations

import re

from agentloop.tasks.model import Task

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(reply: str, entry_point: str | None = None) -> str:
    """The code in a reply: the fenced block that defines `entry_point` (else the first Python
    block, else the first block); raw text when there is no fence. An unterminated fence (reply
    cut by max_tokens) counts up to the end."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(reply)]
    if not blocks:
        return reply.strip("\n")
    if entry_point:
        for _, body in blocks:
            if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", body, re.MULTILINE):
                return body.strip("\n")
    for lang, body in blocks:
        if lang in ("python", "py", "python3"):
            return body.strip("\n")
    return blocks[0][1].strip("\n")


def assemble(task: Task, code: str) -> str:
    """The candidate module. A full definition of the entry point replaces the prompt's stub
    (the prompt stays above it, so helpers and imports it defines still exist); anything else is
    taken as the body that continues the prompt."""
    if re.search(rf"^def\s+{re.escape(task.entry_point)}\s*\(", code, re.MULTILINE):
        return f"{task.prompt.rstrip()}\n    pass\n\n\n{code}\n"
    return f"{task.prompt}{code}\n"


def build_program(task: Task, candidate: str, tests: str) -> str:
    """Candidate module + a test suite that defines `check(candidate)`, then the call."""
    return f"{candidate}\n\n{tests}\n\ncheck({task.entry_point})\n"
