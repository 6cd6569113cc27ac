"""Typed run configuration: TOML files and CLI flags fill the same dataclasses.

Unknown keys and wrong types are one-line errors naming the file and the dotted field.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, get_args, get_origin

from agentloop.agent.config import AgentConfig
from agentloop.errors import ConfigError
from agentloop.math.scorers import ScorerConfig
from agentloop.model.config import ModelConfig, SamplingParams
from agentloop.sandbox.config import SandboxConfig
from agentloop.strategy import parse_split

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")
BUDGET_UNITS = ("generations", "tokens")


@dataclass(frozen=True)
class RevisionConfig:
    """How revision chains (M > 1 turns) see feedback and when they stop."""

    stop_on_feedback_pass: bool = True
    """End a chain once its code passes the feedback tests (else it always takes M turns)."""
    feedback_chars: int = 1200
    """Cap on one feedback message (prompt processing is the slow part on small servers)."""


@dataclass(frozen=True)
class AdaptiveConfig:
    """`--adaptive`: a probe per task predicts its difficulty bin; the rest of the budget goes to
    the split that a compare table says is best for that bin."""

    enabled: bool = False
    probe: int = 2
    """First samples per task spent on the probe (they count against the budget)."""
    table: str | None = None
    """A previous run's compare.json (or its run dir); unset: the first fold of this run's fixed
    splits builds the table and adaptive runs on the other tasks."""
    folds: int = 5
    """Without `table`: 1/folds of the tasks build the table."""


@dataclass(frozen=True)
class MathConfig:
    """How math replies are graded (`agentloop.math.grade.grade_answer`)."""

    last_answer_wins: bool = False
    """Grade a reply that states several different final answers by its last one. Default: such
    a hedged reply fails ("hedged: ..."), unless the task's answer is a collection of that size."""


@dataclass(frozen=True)
class RunConfig:
    suite: str = "smoke"
    """Suite name (a file in tasks/) or path to a suite TOML."""
    data: str | None = None
    """Override the suite's data file (e.g. your own copy of HumanEval+)."""
    samples: int = 10
    """Samples (independent chains) per task."""
    limit: int | None = None
    """Only the first `limit` tasks of the suite."""
    task_ids: list[str] | None = None
    """Only these task ids."""
    splits: list[str] | None = None
    """Strategies to run, each "N:M" (N chains × up to M turns), all over the same tasks;
    unset: parallel sampling of `samples` per task (strategy "parallel")."""
    budget: int | None = None
    """Per task and strategy, in `budget_unit`. Generations: every split must have N×M = budget
    (unset: no check). Tokens: required; each of a split's N chains may spend budget/N tokens."""
    budget_unit: str = "generations"
    """"generations" or "tokens" (prompt, re-sent context included, + completion)."""
    revision: RevisionConfig = field(default_factory=RevisionConfig)
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    """Math: scores each attempt for weighted voting and best-of-n (`[scorer] kind = "self"` asks
    the policy model itself; "reward" a reward model behind vLLM's /pooling)."""
    math: MathConfig = field(default_factory=MathConfig)
    """Math: how replies are graded (`[math] last_answer_wins = true` restores "last answer wins")."""
    agent: AgentConfig = field(default_factory=AgentConfig)
    """Agent episodes (`agent:NxM` splits): action protocol, step and episode limits."""
    runs_dir: str = "runs"
    """Where new run directories are created."""
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)


def _type_ok(value: Any, tp: Any) -> bool:
    origin = get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        inner = get_args(tp)[0] if get_args(tp) else Any
        return isinstance(value, (list, tuple)) and all(_type_ok(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "") if get_origin(tp) else getattr(tp, "__name__", str(tp))


def from_mapping(cls: type[T], data: dict[str, Any], where: str, prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, checking every key and type (nested tables too)."""
    if not isinstance(data, dict):
        name = prefix.rstrip(".") or "config"
        raise ConfigError(f"{where}: '{name}' = {data!r:.60} has the wrong type (expected a table)")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{name}' (expected one of: {', '.join(fields)})")
        tp = hints[key]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[key] = from_mapping(tp, value, where, f"{name}.")
            continue
        if not _type_ok(value, tp):
            raise ConfigError(f"{where}: '{name}' = {value!r:.60} has the wrong type (expected {_type_name(tp)})")
        if get_origin(tp) is tuple or tp is tuple:
            value = tuple(value)
        kwargs[key] = float(value) if tp is float else value
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a config object's own checks (e.g. ScorerConfig) name the field, not the file
        raise ConfigError(f"{where}: {e}") from None


_TOML_WHERE = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; expected a TOML file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        line = _line_of(e.object, e.start)
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{e.object[e.start]:02x}); expected a TOML file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib ends its message with "(at line L, column C)" or "(at end of document)".
        msg = str(e)
        m = _TOML_WHERE.search(msg)
        if m is None:
            raise ConfigError(f"{path}: invalid TOML ({msg})") from None
        loc = f"{m[1]}:{m[2]}" if m[1] else str(max(1, len(text.splitlines())))
        at_end = "" if m[1] else " at end of file"
        raise ConfigError(f"{path}:{loc}: invalid TOML ({msg[: m.start()]}{at_end})") from None


def _line_of(data: bytes, offset: int) -> int:
    """1-based line number of byte `offset` in `data`."""
    return data.count(b"\n", 0, offset) + 1


def load_config(path: Path | None) -> RunConfig:
    return RunConfig() if path is None else from_mapping(RunConfig, read_toml(path), str(path))


def override(cfg: T, **changes: Any) -> T:
    """`dataclasses.replace` that ignores flags the user did not give (None)."""
    given = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(cfg, **given) if given else cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def get_field(cfg: Any, dotted: str) -> Any:
    """`get_field(cfg, "model.base_url")` is cfg.model.base_url."""
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def set_field(cfg: T, dotted: str, value: Any) -> T:
    """A copy of frozen dataclass `cfg` with the dotted field set."""
    head, _, rest = dotted.partition(".")
    return dataclasses.replace(cfg, **{head: set_field(getattr(cfg, head), rest, value) if rest else value})


def validate(cfg: RunConfig, where: str = "config", flags: Mapping[str, str] | None = None) -> RunConfig:
    """Range checks that types alone can't express.

    `where` names the config file; `flags` maps dotted names given on the command line to their
    flag (e.g. {"samples": "--samples"}), so the error names what the user actually typed.
    """
    checks = [
        (cfg.samples >= 1, "samples", "an integer >= 1"),
        (cfg.limit is None or cfg.limit >= 1, "limit", "an integer >= 1"),
        (cfg.model.concurrency >= 1, "model.concurrency", "an integer >= 1"),
        (cfg.model.samples_per_request >= 1, "model.samples_per_request", "an integer >= 1"),
        (cfg.model.timeout_s > 0, "model.timeout_s", "a number of seconds > 0"),
        (cfg.model.max_retries >= 0, "model.max_retries", "an integer >= 0"),
        (cfg.model.retry_max_wait_s >= 0, "model.retry_max_wait_s", "a number of seconds >= 0"),
        (cfg.model.outage_wait_s >= 0, "model.outage_wait_s", "a number of seconds >= 0"),
        (cfg.sampling.max_tokens >= 1, "sampling.max_tokens", "an integer >= 1"),
        (0 <= cfg.sampling.temperature <= 5, "sampling.temperature", "a number in [0, 5]"),
        (0 < cfg.sampling.top_p <= 1, "sampling.top_p", "a number in (0, 1]"),
        (cfg.sandbox.pool_size >= 1, "sandbox.pool_size", "an integer >= 1"),
        (cfg.sandbox.workspace_mb >= 1, "sandbox.workspace_mb", "an integer >= 1"),
        (cfg.sandbox.workspace_warm >= 0, "sandbox.workspace_warm", "an integer >= 0"),
        (cfg.sandbox.workspace_file_limit_bytes >= 1, "sandbox.workspace_file_limit_bytes", "an integer >= 1"),
        (3 * cfg.sandbox.workspace_mb + 32 <= cfg.sandbox.memory_mb, "sandbox.workspace_mb",
         "small enough that 3 × workspace_mb + 32 <= sandbox.memory_mb (/work, /tmp and /dev/shm count against it)"),
        (cfg.budget is None or cfg.budget >= 1, "budget", "an integer >= 1"),
        (cfg.budget_unit in BUDGET_UNITS, "budget_unit", "one of: " + ", ".join(repr(u) for u in BUDGET_UNITS)),
        (cfg.budget is not None or cfg.budget_unit != "tokens", "budget",
         "set (an integer >= 1) when budget_unit is 'tokens'"),
        (cfg.revision.feedback_chars >= 80, "revision.feedback_chars", "an integer >= 80"),
        (cfg.adaptive.probe >= 1, "adaptive.probe", "an integer >= 1"),
        (cfg.adaptive.folds >= 2, "adaptive.folds", "an integer >= 2"),
        (not cfg.adaptive.enabled or cfg.budget is not None, "budget", "set when adaptive is enabled"),
        (not cfg.adaptive.enabled or cfg.budget_unit == "generations", "budget_unit",
         "'generations' when adaptive is enabled"),
        (not cfg.adaptive.enabled or cfg.budget is None or cfg.budget > cfg.adaptive.probe, "budget",
         "larger than adaptive.probe (the probe is part of the budget)"),
        (cfg.splits is None or len(cfg.splits) >= 1, "splits", "a non-empty list of 'N:M' strings"),
        (not cfg.adaptive.enabled or cfg.adaptive.table is not None or bool(cfg.splits), "splits",
         "given when adaptive is enabled without a table (the first fold's splits build it)"),
        *cfg.agent.problems(),
    ]
    for ok, name, expected in checks:
        if not ok:
            value = get_field(cfg, name)
            if flags and name in flags:
                raise ConfigError(f"{flags[name]} must be {expected}, got {value!r:.60}")
            raise ConfigError(f"{where}: '{name}' must be {expected}, got {value!r:.60}")
    flag = (flags or {}).get("splits")
    for text in cfg.splits or []:
        split = parse_split(text, flag or f"{where}: 'splits'")
        if cfg.budget_unit == "generations" and cfg.budget is not None and split.generations != cfg.budget:
            name = flag or f"{where}: 'splits'"
            raise ConfigError(f"{name}: {text!r} is {split.generations} generations per task, "
                              f"but budget is {cfg.budget}; "
                              "expected N×M = budget for every split (equal compute)")
    if cfg.splits is not None and len({parse_split(t).name for t in cfg.splits}) != len(cfg.splits):
        raise ConfigError(f"{flag or where + ': ' + repr('splits')}: {cfg.splits!r:.80} names a split twice; "
                          "expected distinct splits")
    return cfg
