"""The Docker `Sandbox`: a pool of warm containers, each running the fork-server executor.

Per program the host only sends one framed JSON job over the container's attach socket and reads
one framed result back; the container forks a child from an interpreter that already imported
numpy. No `docker exec`, no container per job.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import socket
import stat
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from uuid import uuid4

import anyio
import docker
import structlog
from anyio.abc import SocketStream, TaskGroup
from docker.models.containers import Container
from docker.types import LogConfig, Ulimit

from agentloop.errors import DockerUnavailable
from agentloop.sandbox import engine, executor
from agentloop.sandbox.config import SandboxConfig
from agentloop.sandbox.types import ExecResult, Tests, Verdict

log = structlog.get_logger()

GRACE_S = 5.0
"""Host watchdog slack over the job's own wall-clock backstop: the executor kills, reaps and wipes first."""
EXECUTOR_DIR = Path(executor.__file__).resolve().parent
EXECUTOR_MOUNT = "/opt/agentloop"
"""The executor package is bind-mounted read-only at EXECUTOR_MOUNT/agentloop_executor."""
READY_TIMEOUT_S = 60.0
"""How long a new container may take to import numpy and say it is ready."""
SANDBOX_ENV = {
    "PYTHONDONTWRITEBYTECODE": "1",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    # One core per container: BLAS thread pools would only fight over it (and forking them is unsafe).
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def check_executor_readable(path: Path = EXECUTOR_DIR) -> None:
    """The container runs as nobody: the mounted package must be readable by others."""
    for part in [*reversed(path.parents), path]:
        mode = part.stat().st_mode
        if not mode & stat.S_IXOTH:
            raise DockerUnavailable(f"{part}: not searchable by other users (the sandbox runs as nobody and mounts "
                                    f"the executor from {path}); run: chmod o+x {part}")
    for file in path.glob("*.py"):
        if not file.stat().st_mode & stat.S_IROTH:
            raise DockerUnavailable(
                f"{file}: not readable by other users (the sandbox mounts it); run: chmod -R o+rX {path}")


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


class WorkerDied(Exception):
    """The executor stopped answering: its container is replaced and the job retried once."""


class _Worker:
    """One container and its attach stream, speaking the executor's length-prefixed JSON."""

    def __init__(self, container: Container, stream: SocketStream) -> None:
        self.container = container
        self._stream = stream
        self._raw = bytearray()  # Docker's multiplexed stream: 8-byte headers + payloads
        self._out = bytearray()  # the executor's stdout, demultiplexed
        self._ids = itertools.count(1)

    @classmethod
    async def connect(cls, container: Container, sock: socket.socket) -> _Worker:
        worker = cls(container, await SocketStream.from_socket(sock))
        try:
            with anyio.fail_after(READY_TIMEOUT_S):
                hello = await worker._read_frame()
        except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError, ValueError) as e:
            await worker.aclose()
            raise WorkerDied(f"executor did not start: {type(e).__name__}: {e}") from e
        if not hello.get("ready"):
            await worker.aclose()
            raise WorkerDied(f"executor sent {hello!r} instead of its ready message")
        if hello.get("version") != executor.VERSION:
            await worker.aclose()
            raise WorkerDied(f"executor speaks protocol version {hello.get('version')!r}, expected {executor.VERSION}")
        return worker

    async def request(self, job: dict[str, Any], watchdog_s: float) -> dict[str, Any]:
        job_id = next(self._ids)
        data = json.dumps({**job, "id": job_id}).encode()
        try:
            with anyio.fail_after(watchdog_s):
                await self._stream.send(struct.pack(">I", len(data)) + data)
                reply = await self._read_frame()
        except TimeoutError as e:
            raise WorkerDied(f"no answer from the executor within {watchdog_s:g} s") from e
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as e:
            raise WorkerDied(f"executor connection lost: {type(e).__name__}") from e
        except ValueError as e:
            raise WorkerDied(f"executor broke the protocol: {e}") from e
        if reply.pop("id", None) != job_id:
            raise WorkerDied("executor answered a different job")
        return reply

    async def _read_frame(self) -> dict[str, Any]:
        while True:
            if len(self._out) >= 4:
                n = int.from_bytes(self._out[:4], "big")
                if len(self._out) >= 4 + n:
                    frame = json.loads(self._out[4 : 4 + n])
                    del self._out[: 4 + n]
                    if not isinstance(frame, dict):
                        raise ValueError(f"frame is a {type(frame).__name__}, not an object")
                    return frame
            self._raw += await self._stream.receive(1 << 16)
            self._demux()

    def _demux(self) -> None:
        raw = self._raw
        start = 0
        while len(raw) - start >= 8:
            size = int.from_bytes(raw[start + 4 : start + 8], "big")
            if len(raw) - start < 8 + size:
                break
            if raw[start] == 1:  # stdout; the executor's stderr is not attached
                self._out += raw[start + 8 : start + 8 + size]
            start += 8 + size
        del raw[:start]

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._stream.aclose()


@dataclass
class _Slot:
    """A place in the pool; its worker is None while (re)starting or after a failed start."""

    worker: _Worker | None = None
    error: str = ""


class DockerPool:
    """`Sandbox` over `cfg.pool_size` warm containers: `async with DockerPool.start(cfg) as pool`."""

    def __init__(self, cfg: SandboxConfig, run_id: str | None = None) -> None:
        self.cfg = cfg
        self.run_id = run_id or f"run-{uuid4().hex[:12]}"
        self.stats = PoolStats()
        self.job_extra: dict[str, Any] = {}
        """Test hooks sent with every job (e.g. {"stall_s": 1.0}: SIGSTOP the job's processes for 1 s)."""
        self._client: docker.DockerClient | None = None
        self._tg: TaskGroup | None = None
        self._idle_send, self._idle_recv = anyio.create_memory_object_stream[_Slot](cfg.pool_size)
        self._containers: dict[str, Container] = {}
        self._workers: set[_Worker] = set()
        self._names = itertools.count()

    @classmethod
    def start(cls, cfg: SandboxConfig | None = None, run_id: str | None = None) -> DockerPool:
        """The pool starts when entered; leaving removes every container of the run."""
        return cls(cfg or SandboxConfig(), run_id)

    async def __aenter__(self) -> DockerPool:
        t0 = anyio.current_time()
        self._client = await anyio.to_thread.run_sync(engine.connect)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            check_executor_readable()
            await anyio.to_thread.run_sync(engine.ensure_image, self._client, self.cfg.image)
            await anyio.to_thread.run_sync(engine.reap_dead_runs, self._client)
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

    async def _new_worker(self) -> _Worker:
        name = f"agentloop-{self.run_id}-{next(self._names)}"
        container, sock = await anyio.to_thread.run_sync(self._create_container, name)
        self._containers[container.id] = container
        try:
            worker = await _Worker.connect(container, sock)
        except BaseException:
            await self._remove_quietly(container)
            raise
        self._workers.add(worker)
        self.stats.started += 1
        return worker

    def _create_container(self, name: str) -> tuple[Container, socket.socket]:
        """Create, attach (before start, so nothing is missed), start. Runs in a worker thread."""
        assert self._client is not None
        cfg = self.cfg
        tmpfs = f"size={cfg.scratch_mb}m,mode=1777"
        extra = {"runtime": cfg.runtime} if cfg.runtime else {}
        container = self._client.containers.create(
            cfg.image,
            command=["python3", "-m", "agentloop_executor"],
            name=name,
            labels={
                "agentloop.run": self.run_id,
                "agentloop.owner_pid": str(os.getpid()),
                "agentloop.owner_host": socket.gethostname(),
            },
            user="65534:65534",
            working_dir=EXECUTOR_MOUNT,  # `-m` finds the package there
            volumes={str(EXECUTOR_DIR): {"bind": f"{EXECUTOR_MOUNT}/agentloop_executor", "mode": "ro"}},
            environment=SANDBOX_ENV,
            network_mode="none",
            read_only=True,
            tmpfs={"/scratch": tmpfs, "/tmp": tmpfs},
            mem_limit=f"{cfg.memory_mb}m",
            memswap_limit=f"{cfg.memory_mb}m",
            pids_limit=cfg.pids_limit,
            nano_cpus=int(cfg.cpus * 1e9),
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            ulimits=[Ulimit(name="core", soft=0, hard=0)],
            log_config=LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
            stdin_open=True,  # with detach=False this also sets StdinOnce: our hang-up ends it
            auto_remove=False,
            **extra,
        )
        try:
            raw = container.attach_socket(params={"stdin": 1, "stdout": 1, "stream": 1})
            sock = _own_socket(raw)
            container.start()
        except BaseException:
            container.remove(force=True)
            raise
        return container, sock

    def _replace_soon(self, slot: _Slot) -> None:
        """Throw the slot's container away and refill the slot in the background."""
        old, slot.worker = slot.worker, None
        self.stats.replaced += 1
        log.info("replacing a sandbox container", container=old.container.name if old else None, run_id=self.run_id)
        if self._tg is not None:  # else the pool is closing: _shutdown removes `old`
            self._tg.start_soon(self._replace, slot, old)

    async def _replace(self, slot: _Slot, old: _Worker | None) -> None:
        async with anyio.create_task_group() as tg:
            if old is not None:
                tg.start_soon(self._discard, old)
            tg.start_soon(self._restart, slot)
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._idle_send.send_nowait(slot)

    async def _discard(self, worker: _Worker) -> None:
        self._workers.discard(worker)
        await worker.aclose()
        await self._remove_quietly(worker.container)

    async def _remove(self, container: Container) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(functools.partial(container.remove, force=True))
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as e:
                if e.status_code != 409:  # 409: removal already in progress
                    raise
            self._containers.pop(container.id, None)

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
            async with anyio.create_task_group() as tg:
                for container in list(self._containers.values()):
                    tg.start_soon(self._remove_quietly, container)
            if self._client is not None:  # anything created while a start was being cancelled
                try:
                    await anyio.to_thread.run_sync(engine.remove_run, self._client, self.run_id)
                except Exception as e:  # noqa: BLE001 - never mask the error that ends the run
                    log.warning("could not sweep the run's containers; `agentloop sandbox gc` will",
                                run_id=self.run_id, error=str(e))
                await anyio.to_thread.run_sync(self._client.close)
                self._client = None

    async def _remove_quietly(self, container: Container) -> None:
        try:
            await self._remove(container)
        except Exception as e:  # noqa: BLE001 - DockerException or a dead engine's ConnectionError
            log.warning("could not remove sandbox container", container=container.name, error=str(e))


def _own_socket(raw: Any) -> socket.socket:
    """A socket of our own for the hijacked attach connection, detached from the HTTP response."""
    inner = getattr(raw, "_sock", raw)
    if not isinstance(inner, socket.socket) or hasattr(inner, "context"):
        raise DockerUnavailable("the Docker attach stream needs a unix or plain TCP DOCKER_HOST (no TLS/ssh)")
    sock = inner.dup()
    if inner is not raw:
        raw.close()  # the SocketIO of the HTTP response holds a reference to the fd
    inner.close()
    return sock


def _decode(reply: dict[str, Any]) -> ExecResult:
    try:
        return ExecResult.from_json(reply)
    except (TypeError, ValueError, KeyError) as e:
        return _broken(f"executor sent a malformed result: {e}")


def _broken(why: str) -> ExecResult:
    return ExecResult(Verdict.INFRA_ERROR, 0.0, detail=why)
