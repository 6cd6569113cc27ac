"""A tiny process pool with a hard per-item timeout, for sympy work that may never finish.

``concurrent.futures`` cannot kill one stuck worker, and SIGALRM only works in the main thread,
so each worker is a plain process behind a pipe: on timeout the parent kills it, records a
fallback (None) for that item, and forks a replacement. Workers come from a forkserver that has
sympy and latex2sympy2 already imported, so a replacement costs milliseconds, not a re-import.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the parent never imports sympy
    from agentloop.math._sym import Result

_PRELOAD = ["agentloop.math._sym"]


def _serve(conn: Connection, mem_mb: int) -> None:
    """Worker loop: one string in, one result out; any failure (MemoryError too) is None."""
    if mem_mb > 0:
        limit = mem_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from agentloop.math._sym import canonical_form
    while (item := conn.recv()) is not None:
        try:
            result = canonical_form(item)
        except BaseException:  # noqa: BLE001 - a worker must answer whatever happened
            result = None
        conn.send(result)


class _Worker:
    def __init__(self, ctx: mp.context.ForkServerContext | mp.context.SpawnContext, mem_mb: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, mem_mb), daemon=True)
        self.proc.start()
        child.close()
        self.item: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class CanonPool:
    """``workers`` processes; ``map`` returns one result per item, None on timeout or crash."""

    def __init__(self, workers: int = 2, timeout_s: float = 2.0, mem_mb: int = 2048) -> None:
        self.timeout_s, self.mem_mb, self.size = timeout_s, mem_mb, workers
        self._ctx: mp.context.ForkServerContext | mp.context.SpawnContext
        try:
            self._ctx = mp.get_context("forkserver")
            self._ctx.set_forkserver_preload(_PRELOAD)
        except ValueError:  # no forkserver on this platform
            self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self.timeouts = 0

    def map(self, items: list[str]) -> list[Result | None]:
        """Run every item; a thread-safe, blocking call (wrap in ``anyio.to_thread`` from async)."""
        with self._lock:
            while len(self._workers) < min(self.size, max(1, len(items))):
                self._workers.append(_Worker(self._ctx, self.mem_mb))
            return self._run(items)

    def _run(self, items: list[str]) -> list[Result | None]:
        results: list[Result | None] = [None] * len(items)
        todo, done = list(range(len(items) - 1, -1, -1)), 0
        while done < len(items):
            for w in self._workers:
                if w.item is None and todo:
                    w.item = todo.pop()
                    w.deadline = time.monotonic() + self.timeout_s
                    w.conn.send(items[w.item])
            busy = [(w, w.item) for w in self._workers if w.item is not None]
            ready = wait([w.conn for w, _ in busy], max(0.0, min(w.deadline for w, _ in busy) - time.monotonic()))
            for w, item in busy:
                if w.conn in ready:
                    results[item], w.item, done = self._receive(w), None, done + 1
                elif time.monotonic() >= w.deadline:
                    self._replace(w)
                    done += 1
        return results

    def _receive(self, w: _Worker) -> Result | None:
        try:
            return w.conn.recv()
        except (EOFError, OSError):  # the worker died (e.g. the memory limit): start another
            self._replace(w)
            return None

    def _replace(self, w: _Worker) -> None:
        """Kill a stuck or dead worker and put a fresh one in its slot."""
        self.timeouts += 1
        w.kill()
        self._workers[self._workers.index(w)] = _Worker(self._ctx, self.mem_mb)

    def close(self) -> None:
        with self._lock:
            for w in self._workers:
                w.kill()
            self._workers.clear()
