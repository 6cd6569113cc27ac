"""Stateful workspaces for agent episodes: one locked-down container per live episode.

A workspace is a container of the sandbox image whose PID 1 is the step server
(agentloop/sandbox/stepper, bind-mounted read-only like the executor). The host speaks framed
JSON to it over the container's attach stream: write files, read files, run a step. Files in
/work persist from step to step; processes do not: when a step's command exits, or at its
timeout, the server SIGKILLs every other process of the container. The container is taken from a
warm pool of idle ones when the episode starts and removed when it ends; the pool refills in the
background. Lock-down as the job sandbox: no network, read-only root, user 65534, every
capability dropped, no-new-privileges, memory/pids/CPU limits, tmpfs /work, /tmp and /dev/shm,
labels that `engine.reap_dead_runs` and `agentloop sandbox gc` sweep.

A workspace that cannot answer (container did not start, died, broke the protocol, or the host's
watchdog of timeout + grace passed) raises `WorkspaceError`; it never makes up a `StepResult`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from uuid import uuid4

import anyio
import structlog
from anyio.abc import TaskGroup
from docker.models.containers import Container

from agentloop.errors import ConfigError, DockerUnavailable, WorkspaceError
from agentloop.sandbox import stepper
from agentloop.sandbox.config import SandboxConfig
from agentloop.sandbox.containers import SANDBOX_ENV, Channel, RunContainers, WorkerDied
from agentloop.sandbox.stepper.paths import check as check_path

log = structlog.get_logger()

STEPPER_DIR = Path(stepper.__file__).resolve().parent
WORKDIR = stepper.WORKDIR
GRACE_S = 10.0
"""Host watchdog slack over a step's own timeout: the server kills and reaps the step first."""
FILE_OP_TIMEOUT_S = 30.0
"""Host watchdog for a `write` or `read` request."""
MAX_STARTS = 8
"""Containers created at once (on demand and refills together): the engine serializes much of it."""
KINDS = ("bash", "python")
STEP_ENV = {
    **SANDBOX_ENV,
    # What mini-swe-agent sets for its commands: no pagers or progress bars in captured output.
    "PAGER": "cat",
    "MANPAGER": "cat",
    "LESS": "-R",
    "PIP_PROGRESS_BAR": "off",
    "TQDM_DISABLE": "1",
}
HEADROOM_MB = 32
"""Memory a workspace keeps beyond its three full tmpfs (/work, /tmp, /dev/shm): the server and a step."""
HOSTNAME = "workspace"
"""The same in every workspace, so no observation depends on which container ran it."""


@dataclass(frozen=True)
class StepResult:
    """What one step did. `exit_code` is None when the step timed out (or died by a signal);
    `signal` is the signal that ended the command's main process (9 after a timeout or an OOM
    kill); stdout/stderr keep the head and tail of `output_limit_bytes` each, `truncated` says
    whether any was cut; `files` has the requested files as they stand after the step (None with
    a reason in `notes` when missing, not a regular file, over the size cap, or not UTF-8 text)."""

    exit_code: int | None
    signal: int | None
    timed_out: bool
    duration_s: float
    stdout: str
    stderr: str
    truncated: bool
    files: dict[str, str | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


class Workspace(Protocol):
    """What the episode loop uses: one episode's files and commands."""

    async def run(self, command: str, timeout_s: float, *, kind: str = "bash",
                  read: Sequence[str] = ("solution.py",)) -> StepResult: ...

    async def write(self, files: Mapping[str, str]) -> None: ...

    async def read(self, paths: Sequence[str]) -> dict[str, str | None]: ...


@dataclass
class WorkspaceStats:
    started: int = 0
    """Containers started and answering (warm pool, refills, on demand)."""
    failed_starts: int = 0
    episodes: int = 0
    """Workspaces handed out."""
    steps: int = 0
    """Steps answered."""
    broken: int = 0
    """Workspaces given up on (WorkspaceError other than a refused write)."""
    startup_s: float = 0.0
    """Wall time to bring up the warm pool."""


class _DockerWorkspace:
    """One container and its step server; one request at a time."""

    def __init__(self, pool: WorkspacePool, worker: Channel, name: str) -> None:
        self.name = name
        self._pool = pool
        self._worker = worker
        self._lock = anyio.Lock()
        self._broken = ""
        self._closed = False

    @property
    def container(self) -> Container:
        return self._worker.container

    async def run(self, command: str, timeout_s: float, *, kind: str = "bash",
                  read: Sequence[str] = ("solution.py",)) -> StepResult:
        """Run one step: `bash -c command`, or the Python code `command` when kind is "python"."""
        if kind not in KINDS:
            raise ValueError(f"unknown step kind {kind!r}: one of {', '.join(KINDS)}")
        if not isinstance(command, str):
            raise ValueError(f"a step's command must be str, not {type(command).__name__}")
        if not (isinstance(timeout_s, int | float) and math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"step timeout must be a positive number of seconds, not {timeout_s!r}")
        wanted = _checked(read)
        cfg = self._pool.cfg
        reply = await self._request(
            {"op": "run", "kind": kind, "command": command, "timeout_s": float(timeout_s),
             "output_limit": cfg.output_limit_bytes, "read": wanted, "file_limit": cfg.workspace_file_limit_bytes},
            timeout_s + self._pool.grace_s)
        try:
            result = _step_result(reply, wanted)
        except (KeyError, TypeError, ValueError) as e:
            raise self._give_up(f"step server sent a malformed step result: {e}") from e
        self._pool.stats.steps += 1
        return result

    async def write(self, files: Mapping[str, str]) -> None:
        """Write text files (relative to /work, parents created). A file the server refuses (a
        symlink out of /work, not a regular file, /work full) raises WorkspaceError; the workspace
        stays usable."""
        for relpath, text in files.items():
            check_path(relpath)
            if not isinstance(text, str):
                raise ValueError(f"workspace file {relpath!r}: content must be str, not {type(text).__name__}")
        reply = await self._request({"op": "write", "files": dict(files)}, FILE_OP_TIMEOUT_S)
        if "refused" in reply:
            raise WorkspaceError(f"workspace {self.name}: write refused: {reply['refused']}")
        if reply.get("written") != len(files):
            raise self._give_up(f"step server sent a malformed write reply: {reply!r:.200}")

    async def read(self, paths: Sequence[str]) -> dict[str, str | None]:
        """The files' texts (None: missing, not a regular file, over the size cap, or not text)."""
        return (await self.read_with_notes(paths))[0]

    async def read_with_notes(self, paths: Sequence[str]) -> tuple[dict[str, str | None], dict[str, str]]:
        """As `read`, with the reason for each None."""
        wanted = _checked(paths)
        reply = await self._request(
            {"op": "read", "paths": wanted, "file_limit": self._pool.cfg.workspace_file_limit_bytes},
            FILE_OP_TIMEOUT_S)
        try:
            return _files(reply, wanted), _notes(reply)
        except (KeyError, TypeError, ValueError) as e:
            raise self._give_up(f"step server sent a malformed read reply: {e}") from e

    async def _request(self, job: dict[str, Any], watchdog_s: float) -> dict[str, Any]:
        async with self._lock:
            if self._closed:
                raise WorkspaceError(f"workspace {self.name}: used after its episode ended")
            if self._broken:
                raise WorkspaceError(f"workspace {self.name} is unusable: {self._broken}")
            try:
                reply = await self._worker.request({**job, **self._pool.request_extra}, watchdog_s)
            except WorkerDied as e:
                raise self._give_up(str(e)) from e
            except BaseException:  # cancelled mid-request: where the server is in it is unknown
                self._broken = "a request was cancelled before its answer came"
                raise
        if "error" in reply:
            raise self._give_up(str(reply["error"]))
        return reply

    def _give_up(self, why: str) -> WorkspaceError:
        self._broken = why
        self._pool.stats.broken += 1
        log.warning("workspace unusable", workspace=self.name, reason=why, run_id=self._pool.run_id)
        return WorkspaceError(f"workspace {self.name}: {why}")


def _checked(wanted: Sequence[str]) -> list[str]:
    if isinstance(wanted, str):
        raise ValueError(f"paths must be a sequence of paths, not the string {wanted!r}")
    for relpath in wanted:
        check_path(relpath)
    return list(wanted)


def _opt_int(value: Any) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise TypeError(f"expected an integer or null, got {value!r:.50}")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _files(reply: dict[str, Any], wanted: list[str]) -> dict[str, str | None]:
    files = reply["files"]
    if not isinstance(files, dict) or set(files) != set(wanted):
        raise ValueError("files do not match the requested paths")
    return {p: None if files[p] is None else _str(files[p]) for p in wanted}


def _notes(reply: dict[str, Any]) -> dict[str, str]:
    notes = reply.get("notes") or {}
    if not isinstance(notes, dict):
        raise TypeError("notes is not an object")
    return {_str(k): _str(v) for k, v in notes.items()}


def _step_result(reply: dict[str, Any], wanted: list[str]) -> StepResult:
    if not isinstance(reply["timed_out"], bool) or not isinstance(reply["truncated"], bool):
        raise TypeError("timed_out/truncated are not booleans")
    duration = reply["duration_s"]
    if not isinstance(duration, int | float) or isinstance(duration, bool):
        raise TypeError("duration_s is not a number")
    return StepResult(
        exit_code=_opt_int(reply["exit_code"]), signal=_opt_int(reply["signal"]), timed_out=reply["timed_out"],
        duration_s=float(duration), stdout=_str(reply["stdout"]), stderr=_str(reply["stderr"]),
        truncated=reply["truncated"], files=_files(reply, wanted), notes=_notes(reply))


class WorkspacePool:
    """Workspaces for a run's episodes, from a warm pool of idle containers:

        async with WorkspacePool(cfg, run_id) as pool:
            async with pool.workspace({"solution.py": stub}) as ws:
                r = await ws.run("python3 test_visible.py", 30)

    Leaving a `workspace` block removes its container (also when cancelled); leaving the pool
    removes every container of the run, even on Ctrl-C."""

    def __init__(self, cfg: SandboxConfig | None = None, run_id: str | None = None, *, warm: int | None = None) -> None:
        self.cfg = cfg or SandboxConfig()
        self.run_id = run_id or f"run-{uuid4().hex[:12]}"
        self.warm = self.cfg.workspace_warm if warm is None else warm
        if self.warm < 0:
            raise ConfigError(f"sandbox.workspace_warm must be >= 0, not {self.warm}")
        if 3 * self.cfg.workspace_mb + HEADROOM_MB > self.cfg.memory_mb:
            raise ConfigError(
                f"sandbox.workspace_mb = {self.cfg.workspace_mb} does not fit "
                f"sandbox.memory_mb = {self.cfg.memory_mb}: /work, /tmp and /dev/shm (each workspace_mb) "
                f"count against it, and the step server needs {HEADROOM_MB} MB beyond them")
        self.stats = WorkspaceStats()
        self.grace_s = GRACE_S
        """Host watchdog slack over a step's timeout (tests shorten it)."""
        self.request_extra: dict[str, Any] = {}
        """Test hook sent with every request (e.g. {"hang_s": 5}: the server sleeps before answering)."""
        self._run = RunContainers(self.cfg, self.run_id, "workspace container")
        self._tg: TaskGroup | None = None
        self._ready_send, self._ready_recv = anyio.create_memory_object_stream[_DockerWorkspace](math.inf)
        self._refilling = 0
        self._starts = anyio.CapacityLimiter(MAX_STARTS)
        self._live: set[_DockerWorkspace] = set()
        self._names = itertools.count()
        self._last_error = ""

    async def __aenter__(self) -> WorkspacePool:
        t0 = anyio.current_time()
        await self._run.connect()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._run.prepare(STEPPER_DIR)
            async with anyio.create_task_group() as tg:
                for _ in range(self.warm):
                    tg.start_soon(self._refill)
            if self.warm and not self.stats.started:
                raise DockerUnavailable(f"Docker could not start a workspace container: {self._last_error}")
        except BaseException:
            await self._shutdown()
            raise
        self.stats.startup_s = anyio.current_time() - t0
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._shutdown()

    @contextlib.asynccontextmanager
    async def workspace(self, files: Mapping[str, str] | None = None) -> AsyncIterator[Workspace]:
        """A fresh workspace with `files` written into /work; its container is removed on exit."""
        ws = await self._take()
        try:
            if files:
                await ws.write(files)
            yield ws
        finally:
            ws._closed = True
            self._live.discard(ws)
            if self._tg is not None:
                self._tg.start_soon(self._discard, ws)
            else:
                await self._discard(ws)

    # --- containers ------------------------------------------------------------------------

    async def _take(self) -> _DockerWorkspace:
        if self._tg is None:
            raise RuntimeError("WorkspacePool.workspace() outside `async with WorkspacePool(...)`")
        self._tg.start_soon(self._refill)  # keep `warm` idle ones ahead of the next episode
        try:
            ws = self._ready_recv.receive_nowait()
        except anyio.WouldBlock:
            try:
                ws = await self._start()
            except WorkspaceError:
                raise
            except Exception as e:
                raise WorkspaceError(f"could not start a workspace container: {type(e).__name__}: {e}") from e
        self._live.add(ws)
        self.stats.episodes += 1
        return ws

    async def _refill(self) -> None:
        if self._refilling + self._ready_recv.statistics().current_buffer_used >= self.warm:
            return
        self._refilling += 1
        try:
            ws = await self._start()
        except Exception as e:  # noqa: BLE001 - a failed refill only costs warmth; the next take retries
            self._last_error = f"{type(e).__name__}: {e}"
            log.warning("could not start a warm workspace", error=self._last_error, run_id=self.run_id)
            return
        finally:
            self._refilling -= 1
        try:
            self._ready_send.send_nowait(ws)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):  # the pool is closing
            await self._discard(ws)

    async def _start(self) -> _DockerWorkspace:
        name = f"agentloop-{self.run_id}-ws{next(self._names)}"
        try:
            async with self._starts:
                container, sock = await anyio.to_thread.run_sync(self._create_container, name)
        except Exception:
            self.stats.failed_starts += 1
            raise
        self._run.known[container.id] = container
        try:
            worker = await Channel.connect(container, sock, "step server", stepper.VERSION)
        except BaseException as e:
            self.stats.failed_starts += 1
            await self._run.remove_quietly(container)
            if isinstance(e, WorkerDied):  # did not start, or not as a step server of our version
                raise WorkspaceError(str(e)) from e
            raise
        self.stats.started += 1
        return _DockerWorkspace(self, worker, name)

    def _create_container(self, name: str) -> tuple[Container, socket.socket]:
        """Runs in a worker thread. /work, /tmp and /dev/shm are the only writable places; the
        server moves to /work."""
        cfg = self.cfg
        return self._run.create(
            name, STEPPER_DIR, "agentloop_stepper", environment=STEP_ENV, tmpfs_mb=cfg.workspace_mb,
            tmpfs=(WORKDIR, "/tmp"), labels={"agentloop.kind": "workspace"}, hostname=HOSTNAME,
            shm_size=f"{cfg.workspace_mb}m")

    async def _discard(self, ws: _DockerWorkspace) -> None:
        await ws._worker.aclose()
        await self._run.remove_quietly(ws.container)

    async def _shutdown(self) -> None:
        """Remove every container of the run, even when cancelled (Ctrl-C)."""
        self._ready_send.close()
        try:
            if self._tg is not None:  # stop refills and pending removals; exited here as it was entered here
                tg, self._tg = self._tg, None
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            await self._remove_all()

    async def _remove_all(self) -> None:
        with anyio.CancelScope(shield=True):
            idle = []
            while True:
                try:
                    idle.append(self._ready_recv.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
            self._ready_recv.close()
            for ws in [*idle, *self._live]:
                ws._closed = True
                await ws._worker.aclose()
            self._live.clear()
            await self._run.remove_all()
