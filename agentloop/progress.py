"""The run's progress bar: attempts against the most the plan can make (chains that stop early
make fewer), attempts/s, tokens/s, running pass rate, infra errors."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentloop.attempt import Attempt, AttemptKind


class RunProgress:
    def __init__(self, console: Console, most: int):
        self._start = time.monotonic()
        self.attempts = self.passed = self.infra = self.tokens = 0
        self._bar = Progress(
            TextColumn("[bold]attempts"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[stats]}"), console=console, transient=False,
            disable=not console.is_terminal,
        )
        self._id = self._bar.add_task("run", total=most, stats="")

    def __enter__(self) -> RunProgress:
        self._bar.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._bar.stop()

    def update(self, a: Attempt) -> None:
        self.attempts += 1
        self.tokens += a.completion_tokens or 0
        if a.kind is AttemptKind.INFRA_ERROR:
            self.infra += 1
        else:
            self.passed += a.passed
        self._bar.update(self._id, advance=1, stats=self.stats())

    def stats(self) -> str:
        dt = max(1e-9, time.monotonic() - self._start)
        graded = self.attempts - self.infra
        rate = f"{self.passed / graded:.1%}" if graded else "-"
        return (f"{self.attempts / dt:.1f} att/s · "
                f"{self.tokens / dt:.0f} tok/s · pass {rate} · infra errors {self.infra}")
