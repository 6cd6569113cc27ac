"""The math worker pool: sympy work that may never finish, in processes of our own.

``CanonPool(workers, cpu_s).map(items)`` returns one result per item: the worker's answer, or None
when the item used up its limit (``cpu_s`` seconds of CPU time, RLIMIT_AS ``mem_mb``, or the
wall-clock backstop of ``3 * cpu_s + 5`` seconds), which callers treat as "keep the string".

The workers are a server process started as ``sys.executable -m agentloop.math.worker`` (never
multiprocessing, which re-imports the user's ``__main__`` in every worker) that forks its runners
from one pre-imported image and puts the parser's state back before every item, so no result
depends on what was parsed before (see `agentloop.math.worker`). A pool that cannot answer, because
the server cannot start, dies, stops answering, or its runners die for reasons that are not the
item, raises `MathWorkerError` (one line: what failed and how to fix it); it never turns a failure
it did not measure into None. The next ``map`` starts a fresh server.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentloop.errors import MathWorkerError

if TYPE_CHECKING:  # the parent never imports sympy
    from agentloop.math._sym import Result

# importing agentloop.math must not import the worker module: `python -m agentloop.math.worker`
# would then find it in sys.modules already (runpy warns and runs a second copy)
ENTRY = "agentloop.math._sym:canonical_form"

START_TIMEOUT_S = 180.0  # importing sympy on a busy machine; only a hang ever waits this long
_LIMIT_KINDS = ("cpu", "wall", "memory", "crash")


class _Server:
    """One ``python -m agentloop.math.worker`` process and its protocol channel."""

    def __init__(self, python: str, workers: int, cpu_s: float, mem_mb: int, fresh: bool, entry: str) -> None:
        root = Path(__file__).resolve().parents[2]  # the folder holding the agentloop package
        env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=os.pathsep.join(
            [str(root)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        env.pop("PYTHONINSPECT", None)
        self.cmd = [python, "-m", "agentloop.math.worker", "--workers", str(workers), "--cpu-s", str(cpu_s),
                    "--mem-mb", str(mem_mb), "--entry", entry] + (["--fresh"] if fresh else [])
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        try:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                         cwd=root, env=env, close_fds=True, start_new_session=True)
        except OSError as e:
            self.stderr.close()
            raise MathWorkerError(
                f"math workers could not start: `{python} -m agentloop.math.worker` failed: {e}; fix: run agentloop"
                " with a python that has agentloop, sympy and latex2sympy2 installed (CanonPool(python=...))") from None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        from agentloop.math.worker import Channel

        self.ch = Channel(self.proc.stdout.fileno(), self.proc.stdin.fileno())
        self.pid = os.getpid()  # the process that owns this server (a forked child must not use it)
        msg = self._recv(START_TIMEOUT_S, "start")
        if msg[0] != "ready":
            raise self._broken(f"sent {msg[0]!r} instead of 'ready'")

    def _recv(self, timeout: float, doing: str) -> Any:
        try:
            msg = self.ch.recv(timeout)
        except TimeoutError:
            raise self._broken(f"did not answer within {timeout:.0f} s while it was to {doing}", tail=True) from None
        except (EOFError, OSError):
            raise self._broken(f"died while it was to {doing}", wait_s=5, tail=True) from None
        if msg[0] == "fatal":
            raise self._broken(msg[1], wait_s=5)
        return msg

    def _broken(self, what: str, wait_s: float = 0.0, tail: bool = False) -> MathWorkerError:
        """Stop the server and describe it in one line: how it exited (if it did) and its last stderr line."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(wait_s)  # a server that reported a fatal error or closed its end is exiting
        code = self.proc.returncode
        self.kill()
        status = "" if code is None else f" (exit code {code})" if code >= 0 else f" (signal {-code})"
        last = self._stderr_tail() if tail else ""
        self.stderr.close()
        return MathWorkerError(
            f"math workers ({' '.join(self.cmd[:3])}){status}: {what}" + (f"; its last words: {last}" if last else "")
            + "; fix: check that this python imports agentloop.math._sym (sympy, latex2sympy2 1.9.1 with"
            " antlr4-python3-runtime 4.7.2), that mem_mb is not too low, and that nothing kills its processes")

    def _stderr_tail(self) -> str:
        try:
            self.stderr.seek(0, os.SEEK_END)
            size = self.stderr.tell()
            self.stderr.seek(max(0, size - 4000))
            lines = [ln.strip() for ln in self.stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        except (OSError, ValueError):
            return ""
        return lines[-1][:300] if lines else ""

    def run(self, items: list[str], progress_s: float, counts: Counter[str]) -> list[Result | None]:
        try:
            self.ch.send(("map", items))
        except OSError:
            raise self._broken("died before it took the batch") from None
        results: list[Result | None] = [None] * len(items)
        while True:
            msg = self._recv(progress_s, "answer")
            if msg[0] == "done":
                return results
            _, idx, kind, result = msg
            counts[kind] += 1
            results[idx] = result if kind in ("ok", "recovered") else None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()

    def close(self) -> None:
        """Polite stop: closing its stdin ends the server, which kills its runners."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.kill()
        self.stderr.close()


class CanonPool:
    """``workers`` runners; ``map`` returns one result per item, None when an item used up its limit.

    ``timeout_s`` is the per-item limit in CPU seconds (so a busy machine does not turn a parse into
    a fallback); ``python`` is the interpreter that runs the workers (default: ``sys.executable``);
    ``fresh=True`` retires each runner after one item (a slow reference mode for tests); ``entry``
    (``module:function``) is what a runner calls on each item.
    """

    def __init__(self, workers: int = 2, timeout_s: float = 2.0, mem_mb: int = 2048, *,
                 python: str | None = None, fresh: bool = False, entry: str = ENTRY) -> None:
        self.size, self.timeout_s, self.mem_mb, self.fresh = max(1, workers), timeout_s, mem_mb, fresh
        self.entry = entry
        self.python = python or sys.executable
        self._server: _Server | None = None
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()  # outcomes: ok, recovered, error, cpu, wall, memory, crash

    @property
    def timeouts(self) -> int:
        """Items that used up a limit (CPU, wall backstop, memory) or killed two fresh runners."""
        return sum(self.counts[k] for k in _LIMIT_KINDS)

    def map(self, items: list[str]) -> list[Result | None]:
        """Run every item; a thread-safe, blocking call (wrap in ``anyio.to_thread`` from async)."""
        items = list(items)
        if not items:
            return []
        if not self.python:
            raise MathWorkerError("math workers cannot start: sys.executable is empty (an embedded python?); "
                                  "fix: pass CanonPool(python=...) the path of a python interpreter")
        with self._lock:
            if self._server is not None and self._server.pid != os.getpid():
                self._server = None  # inherited through fork: the parent process still owns that server
            if self._server is None:
                self._server = _Server(self.python, self.size, self.timeout_s, self.mem_mb, self.fresh, self.entry)
            # every item resolves within the wall backstop; a replacement runner's canary too
            progress_s = 2 * (3 * self.timeout_s + 5) + 60
            try:
                return self._server.run(items, progress_s, self.counts)
            except BaseException:
                self._server.close()  # a MathWorkerError, or an interrupt in the middle of a batch
                self._server = None
                raise

    def close(self) -> None:
        with self._lock:
            if self._server is not None and self._server.pid == os.getpid():
                self._server.close()
            self._server = None
