"""structlog: JSON lines to `log.jsonl` in the run dir, readable warnings on the console."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def configure(log_file: Path | None = None, console_level: str = "warning") -> TextIO | None:
    """Route all agentloop logs; returns the open log file (caller closes it at the end)."""
    console = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    threshold = _LEVELS[console_level]

    def tee(_: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        if _LEVELS.get(method, 20) >= threshold:
            print(console(None, method, dict(event)), file=sys.stderr)
        return event

    fh = open(log_file, "a", encoding="utf-8") if log_file else None
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            tee,
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.WriteLoggerFactory(file=fh) if fh else structlog.WriteLoggerFactory(open("/dev/null", "w")),
        cache_logger_on_first_use=False,
    )
    return fh
