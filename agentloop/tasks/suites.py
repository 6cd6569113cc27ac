"""Suite definitions live in the repo's `tasks/` folder (shipped in the wheel as `agentloop/_suites`)."""

from __future__ import annotations

from pathlib import Path

from agentloop.config import from_mapping, read_toml
from agentloop.errors import ConfigError, DataError
from agentloop.math.data import MATH_SYSTEM_PROMPT
from agentloop.tasks.feedback_tests import FEEDBACK_MODES, with_feedback_tests
from agentloop.tasks.loaders import humaneval_path, load_jsonl
from agentloop.tasks.model import Suite, Task


CODE_FORMATS = ("humaneval", "jsonl")
MATH_FORMATS = {"math500": "math500", "gsm8k": "gsm8k", "math_jsonl": "jsonl"}
"""Suite format → the math loader's format."""


def suites_dir() -> Path:
    here = Path(__file__).resolve().parents[1]
    for candidate in (here.parent / "tasks", here / "_suites"):
        if candidate.is_dir():
            return candidate
    raise ConfigError("no suites folder found (expected tasks/ next to the agentloop package)")


def suite_file(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ConfigError(f"suite: no such file {path}")
        return path
    path = suites_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in suites_dir().glob("*.toml"))
        raise ConfigError(f"suite: unknown suite '{name_or_path}' (known: {', '.join(known)}; or give a .toml path)")
    return path


def load_suite_definition(name_or_path: str) -> tuple[Suite, Path]:
    """The suite definition (no task data read) and the file it came from."""
    path = suite_file(name_or_path)
    raw = read_toml(path)
    raw.setdefault("name", path.stem)
    if raw.get("format") in MATH_FORMATS:  # math suites default to the \boxed{} prompt and no feedback tests
        raw.setdefault("system_prompt", MATH_SYSTEM_PROMPT)
        raw.setdefault("user_template", "{prompt}")
        raw.setdefault("feedback", "none")
    suite = from_mapping(Suite, raw, str(path))
    if suite.format not in CODE_FORMATS + tuple(MATH_FORMATS):
        expected = ", ".join(repr(f) for f in CODE_FORMATS + tuple(MATH_FORMATS))
        raise ConfigError(f"{path}: 'format' must be one of {expected}, got {suite.format!r}")
    if suite.feedback not in FEEDBACK_MODES:
        raise ConfigError(f"{path}: 'feedback' must be one of {', '.join(map(repr, FEEDBACK_MODES))}, got {suite.feedback!r}")
    return suite, path


def load_suite(name_or_path: str, data: str | None = None) -> tuple[Suite, list[Task]]:
    """The suite definition and its tasks (in file order, skips removed, feedback tests as the
    suite's `feedback` says)."""
    suite, path = load_suite_definition(name_or_path)
    if data:
        source = Path(data)
    elif suite.format == "humaneval" and suite.path is None:
        source = humaneval_path()
    elif suite.path:
        source = (path.parent / suite.path).resolve()
    else:
        raise ConfigError(f"{path}: 'path' is required for format {suite.format!r}")
    loaded = load_math_tasks(source, MATH_FORMATS[suite.format]) if suite.format in MATH_FORMATS else load_jsonl(source)
    tasks = [t for t in loaded if t.id not in suite.skip]
    if not tasks:
        raise DataError(f"{source}: no tasks left after skipping {list(suite.skip)}")
    return suite, with_feedback_tests(tasks, suite.feedback)


def load_math_tasks(source: Path, fmt: str) -> list[Task]:
    """Math problems as Tasks: the problem is the prompt, the answer is graded by canonical form."""
    from agentloop.math.data import load_math

    return [Task(id=p.id, prompt=p.problem, entry_point="", grading_tests="", reference=None,
                 metadata=p.metadata, answer=p.answer) for p in load_math(source, fmt)]


def select(tasks: list[Task], limit: int | None, task_ids: list[str] | None) -> list[Task]:
    if task_ids:
        by_id = {t.id: t for t in tasks}
        missing = [i for i in task_ids if i not in by_id]
        if missing:
            shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            raise ConfigError(f"task_ids: unknown task id(s) {shown}; expected ids of the suite, e.g. {tasks[0].id}")
        tasks = [by_id[i] for i in task_ids]
    return tasks[:limit] if limit else tasks
