"""The Docker `Sandbox`: a pool of warm containers, each running the fork-server executor.

Per program the host only sends one framed JSON job over the container's attach socket and reads
one framed result back; the container forks a child from an interpreter that already imported
numpy. No `docker exec`, no container per job.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from uuid import uuid4

import anyio
import structlog
from anyio.abc import TaskGroup
from docker.models.containers import Container

from agentloop.errors import DockerUnavailable
from agentloop.sandbox import executor
from agentloop.sandbox.config import SandboxConfig
from agentloop.sandbox.containers import READY_TIMEOUT_S as READY_TIMEOUT_S  # benchmarks import it from here
from agentloop.sandbox.containers import SANDBOX_ENV as SANDBOX_ENV
from agentloop.sandbox.containers import Channel, RunContainers, WorkerDied
from agentloop.sandbox.types import ExecResult, Tests, Verdict

log = structlog.get_logger()

GRACE_S = 5.0
"""Host watchdog slack over the job's own wall-clock backstop: the executor kills, reaps and wipes first."""
EXECUTOR_DIR = Path(executor.__file__).resolve().parent
"""The executor package, bind-mounted read-only into each container as `agentloop_executor`."""


@dataclass
class PoolStats:
    started: int = 0
    """Containers started and answering (warm-up and replacements)."""
    replaced: int = 0
    """Containers thrown away after a death, a broken protocol or the watchdog."""
    jobs: int = 0
    """Programs that got a verdict from an executor."""
    retries: int = 0
    """Jobs sent a second time because their first container died."""
    startup_s: float = 0.0
    """Wall time to bring up the warm pool."""


@dataclass
class _Slot:
    """A place in the pool; its worker is None while (re)starting or after a failed start."""

    worker: Channel | None = None
    error: str = ""


class DockerPool:
    """`Sandbox` over `cfg.pool_size` warm containers: `async with DockerPool.start(cfg) as pool`."""

    def __init__(self, cfg: SandboxConfig, run_id: str | None = None) -> None:
        self.cfg = cfg
        self.run_id = run_id or f"run-{uuid4().hex[:12]}"
        self.stats = PoolStats()
        self.job_extra: dict[str, Any] = {}
        """Test hooks sent with every job (e.g. {"stall_s": 1.0}: SIGSTOP the job's processes for 1 s)."""
        self._run = RunContainers(cfg, self.run_id, "sandbox container")
        self._tg: TaskGroup | None = None
        self._idle_send, self._idle_recv = anyio.create_memory_object_stream[_Slot](cfg.pool_size)
        self._workers: set[Channel] = set()
        self._names = itertools.count()

    @classmethod
    def start(cls, cfg: SandboxConfig | None = None, run_id: str | None = None) -> DockerPool:
        """The pool starts when entered; leaving removes every container of the run."""
        return cls(cfg or SandboxConfig(), run_id)

    async def __aenter__(self) -> DockerPool:
        t0 = anyio.current_time()
        await self._run.connect()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._run.prepare(EXECUTOR_DIR)
            slots = [_Slot() for _ in range(self.cfg.pool_size)]
            async with anyio.create_task_group() as tg:
                for slot in slots:
                    tg.start_soon(self._restart, slot)
            if all(slot.worker is None for slot in slots):
                raise DockerUnavailable(f"Docker could not start a sandbox container: {slots[0].error}")
            for slot in slots:
                self._idle_send.send_nowait(slot)
        except BaseException:
            await self._shutdown()
            raise
        self.stats.startup_s = anyio.current_time() - t0
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._shutdown()

    async def run_suites(self, candidate: str, suites: Sequence[Tests], timeout_s: float) -> list[ExecResult]:
        """Grade the candidate against each suite in one job: per suite, the tests and a fresh fork
        of the candidate module in two processes, so the candidate cannot forge a pass and one suite
        cannot change what another sees (see agentloop/sandbox/executor). `timeout_s` is CPU seconds
        per suite."""
        job = {"candidate": candidate, "suites": [{"tests": t.code, "entry_point": t.entry_point} for t in suites]}
        watchdog = len(suites) * executor.wall_backstop(timeout_s) + GRACE_S
        reply = await self._submit(job, timeout_s, watchdog)
        if "results" not in reply:  # the executor failed the whole job (or it died twice)
            return [_decode(reply) for _ in suites]
        if not isinstance(reply["results"], list) or len(reply["results"]) != len(suites):
            return [_broken("executor sent the wrong number of results") for _ in suites]
        return [_decode(r) for r in reply["results"]]

    async def run_tests(self, candidate: str, tests: str, entry_point: str, timeout_s: float) -> ExecResult:
        """Grade: `tests` (defines `check(candidate)`) against the candidate module."""
        (result,) = await self.run_suites(candidate, [Tests(tests, entry_point)], timeout_s)
        return result

    async def run(self, program: str, timeout_s: float) -> ExecResult:
        """One plain program: `passed` means it ran to its end and exited 0."""
        return _decode(await self._submit({"program": program}, timeout_s, executor.wall_backstop(timeout_s) + GRACE_S))

    async def _submit(self, job: dict[str, Any], timeout_s: float, watchdog_s: float) -> dict[str, Any]:
        job = {**job, "timeout_s": timeout_s, "output_limit": self.cfg.output_limit_bytes, **self.job_extra}
        why = ""
        for attempt in range(2):
            slot = await self._idle_recv.receive()
            if slot.worker is None and not await self._restart(slot):
                self._idle_send.send_nowait(slot)
                return {"verdict": "infra_error", "duration_s": 0.0,
                        "detail": f"Docker could not start a sandbox: {slot.error}"}
            assert slot.worker is not None
            try:
                reply = await slot.worker.request(job, watchdog_s)
            except WorkerDied as e:
                why = str(e)
                self._replace_soon(slot)
                if attempt == 0:
                    self.stats.retries += 1
                continue
            except BaseException:  # cancelled mid-job: the executor's state is unknown
                self._replace_soon(slot)
                raise
            self._idle_send.send_nowait(slot)
            self.stats.jobs += 1
            return reply
        return {"verdict": "error", "duration_s": 0.0, "detail": "sandbox died twice running this program",
                "extra": {"last": why}}

    # --- containers ------------------------------------------------------------------------

    async def _restart(self, slot: _Slot) -> bool:
        """Give the slot a fresh worker; on failure remember why (the slot is retried on use)."""
        try:
            slot.worker = await self._new_worker()
        except Exception as e:  # noqa: BLE001 - Docker API, engine gone, executor never ready
            slot.worker, slot.error = None, f"{type(e).__name__}: {e}"
            return False
        slot.error = ""
        return True

    async def _new_worker(self) -> Channel:
        name = f"agentloop-{self.run_id}-{next(self._names)}"
        container, sock = await anyio.to_thread.run_sync(self._create_container, name)
        self._run.known[container.id] = container
        try:
            worker = await Channel.connect(container, sock, "executor", executor.VERSION)
        except BaseException:
            await self._run.remove_quietly(container)
            raise
        self._workers.add(worker)
        self.stats.started += 1
        return worker

    def _create_container(self, name: str) -> tuple[Container, socket.socket]:
        """Runs in a worker thread. /scratch and /tmp are the executor's only writable places."""
        return self._run.create(name, EXECUTOR_DIR, "agentloop_executor", environment=SANDBOX_ENV,
                                tmpfs_mb=self.cfg.scratch_mb, tmpfs=("/scratch", "/tmp"))

    def _replace_soon(self, slot: _Slot) -> None:
        """Throw the slot's container away and refill the slot in the background."""
        old, slot.worker = slot.worker, None
        self.stats.replaced += 1
        log.info("replacing a sandbox container", container=old.container.name if old else None, run_id=self.run_id)
        if self._tg is not None:  # else the pool is closing: _shutdown removes `old`
            self._tg.start_soon(self._replace, slot, old)

    async def _replace(self, slot: _Slot, old: Channel | None) -> None:
        async with anyio.create_task_group() as tg:
            if old is not None:
                tg.start_soon(self._discard, old)
            tg.start_soon(self._restart, slot)
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._idle_send.send_nowait(slot)

    async def _discard(self, worker: Channel) -> None:
        self._workers.discard(worker)
        await worker.aclose()
        await self._run.remove_quietly(worker.container)

    async def _shutdown(self) -> None:
        """Remove every container of the run, even when cancelled (Ctrl-C)."""
        self._idle_send.close()
        try:
            if self._tg is not None:  # stop replacements; exited here as it was entered here
                tg, self._tg = self._tg, None
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            await self._remove_all()

    async def _remove_all(self) -> None:
        with anyio.CancelScope(shield=True):
            for worker in list(self._workers):
                await worker.aclose()
            self._workers.clear()
            self._idle_recv.close()
            await self._run.remove_all()


def _decode(reply: dict[str, Any]) -> ExecResult:
    try:
        return ExecResult.from_json(reply)
    except (TypeError, ValueError, KeyError) as e:
        return _broken(f"executor sent a malformed result: {e}")


def _broken(why: str) -> ExecResult:
    return ExecResult(Verdict.INFRA_ERROR, 0.0, detail=why)
