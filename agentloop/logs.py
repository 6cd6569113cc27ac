"""structlog: JSON lines to `log.jsonl` in the run dir, readable warnings on the console."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def _configure(fh: TextIO, console_level: str) -> None:
    console = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    threshold = _LEVELS[console_level]

    def tee(_: WrappedLogger, method: str, event: EventDict) -> EventDict:
        if _LEVELS.get(method, 20) >= threshold:
            print(console(None, method, dict(event)), file=sys.stderr)
        return event

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            tee,
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.WriteLoggerFactory(file=fh),
        cache_logger_on_first_use=False,
    )


@functools.cache
def _devnull() -> TextIO:
    """One handle for the life of the process (not one per run)."""
    return open(os.devnull, "w")


@contextmanager
def to_file(log_file: Path, console_level: str = "warning") -> Iterator[None]:
    """Log to `log_file` (appending, so a resumed run keeps one log) for the block."""
    with open(log_file, "a", encoding="utf-8") as fh:
        _configure(fh, console_level)
        try:
            yield
        finally:
            _configure(_devnull(), console_level)
