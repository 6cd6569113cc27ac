"""Locked-down sandbox containers: what the job pool (docker_pool) and the agent workspaces
(workspace) share.

Such a container runs, as its PID 1, a stdlib package bind-mounted read-only at
MOUNT_ROOT/<module> (`python3 -m <module>`), and speaks length-prefixed JSON with the host over
its attach stream. Lock-down: no network, read-only root, user 65534, every capability dropped,
no-new-privileges, memory/pids/CPU limits, no core dumps, a capped log, and the labels that
`engine.reap_dead_runs` and `agentloop sandbox gc` sweep. A removal tolerates a container already
gone and goes on when cancelled; the end of a run removes every container it created, also any the
engine knows only by its label.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import socket
import stat
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import docker
import structlog
from anyio.abc import SocketStream
from docker.models.containers import Container
from docker.types import LogConfig, Ulimit

from agentloop.errors import DockerUnavailable
from agentloop.sandbox import engine
from agentloop.sandbox.config import SandboxConfig

log = structlog.get_logger()

MOUNT_ROOT = "/opt/agentloop"
"""A container's server package is bind-mounted read-only at MOUNT_ROOT/<module>; the working dir."""
READY_TIMEOUT_S = 60.0
"""How long a new container's server may take to start (import numpy) and say it is ready."""
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


def check_readable(path: Path) -> None:
    """The container runs as nobody: the mounted package must be readable by others."""
    for part in [*reversed(path.parents), path]:
        mode = part.stat().st_mode
        if not mode & stat.S_IXOTH:
            raise DockerUnavailable(f"{part}: not searchable by other users (the sandbox runs as nobody and mounts "
                                    f"{path}); run: chmod o+x {part}")
    for file in path.glob("*.py"):
        if not file.stat().st_mode & stat.S_IROTH:
            raise DockerUnavailable(
                f"{file}: not readable by other users (the sandbox mounts it); run: chmod -R o+rX {path}")


class WorkerDied(Exception):
    """A container's server did not start, stopped answering or broke the protocol."""


class Channel:
    """One container and its attach stream, speaking its server's length-prefixed JSON."""

    def __init__(self, container: Container, stream: SocketStream, peer: str) -> None:
        self.container = container
        self.peer = peer
        """What the server is called in errors ("executor", "step server")."""
        self._stream = stream
        self._raw = bytearray()  # Docker's multiplexed stream: 8-byte headers + payloads
        self._out = bytearray()  # the server's stdout, demultiplexed
        self._ids = itertools.count(1)

    @classmethod
    async def connect(cls, container: Container, sock: socket.socket, peer: str, version: int) -> Channel:
        """The channel, once the server said it is ready and speaks protocol `version`."""
        channel = cls(container, await SocketStream.from_socket(sock), peer)
        try:
            with anyio.fail_after(READY_TIMEOUT_S):
                hello = await channel._read_frame()
        except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError, ValueError) as e:
            await channel.aclose()
            raise WorkerDied(f"{peer} did not start: {type(e).__name__}: {e}") from e
        if not hello.get("ready"):
            await channel.aclose()
            raise WorkerDied(f"{peer} sent {hello!r:.200} instead of its ready message")
        if hello.get("version") != version:
            await channel.aclose()
            raise WorkerDied(f"{peer} speaks protocol version {hello.get('version')!r:.50}, expected {version}")
        return channel

    async def request(self, job: dict[str, Any], watchdog_s: float) -> dict[str, Any]:
        """Send `job` with a fresh id and wait up to `watchdog_s` for the reply with that id."""
        job_id = next(self._ids)
        data = json.dumps({**job, "id": job_id}).encode()
        try:
            with anyio.fail_after(watchdog_s):
                await self._stream.send(struct.pack(">I", len(data)) + data)
                reply = await self._read_frame()
        except TimeoutError as e:
            raise WorkerDied(f"no answer from the {self.peer} within {watchdog_s:g} s") from e
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as e:
            raise WorkerDied(f"the container's {self.peer} is gone ({type(e).__name__})") from e
        except ValueError as e:
            raise WorkerDied(f"{self.peer} broke the protocol: {e}") from e
        if reply.pop("id", None) != job_id:
            raise WorkerDied(f"{self.peer} answered a different request")
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
            if raw[start] == 1:  # stdout; the server's stderr is not attached
                self._out += raw[start + 8 : start + 8 + size]
            start += 8 + size
        del raw[:start]

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._stream.aclose()


class RunContainers:
    """The containers of one run: `open`, `create` (in a worker thread), `remove_quietly`, and
    `remove_all` at the end. `what` names them in log lines ("sandbox container")."""

    def __init__(self, cfg: SandboxConfig, run_id: str, what: str) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.what = what
        self.client: docker.DockerClient | None = None
        self.known: dict[str, Container] = {}
        """Containers created and not yet removed, by id."""

    async def connect(self) -> None:
        self.client = await anyio.to_thread.run_sync(engine.connect)

    async def prepare(self, package: Path) -> None:
        """Before the first container: the package readable by nobody, the image there, the
        containers of dead runs reaped."""
        assert self.client is not None
        check_readable(package)
        await anyio.to_thread.run_sync(engine.ensure_image, self.client, self.cfg.image)
        await anyio.to_thread.run_sync(engine.reap_dead_runs, self.client)

    def create(self, name: str, package: Path, module: str, *, environment: Mapping[str, str], tmpfs_mb: int,
               tmpfs: Sequence[str], labels: Mapping[str, str] | None = None,
               **options: Any) -> tuple[Container, socket.socket]:
        """Create a locked-down container running `python3 -m module` with the `package` directory
        mounted as `module`, attach (before start, so nothing is missed), start. `tmpfs` are the
        writable paths (`tmpfs_mb` each); `options` are further `containers.create` arguments
        (hostname, shm_size). Blocking: runs in a worker thread; the caller records the container
        in `known`."""
        assert self.client is not None
        cfg = self.cfg
        extra = {"runtime": cfg.runtime} if cfg.runtime else {}
        container = self.client.containers.create(
            cfg.image,
            command=["python3", "-m", module],
            name=name,
            labels={
                engine.RUN_LABEL: self.run_id,
                "agentloop.owner_pid": str(os.getpid()),
                "agentloop.owner_host": socket.gethostname(),
                **(labels or {}),
            },
            user="65534:65534",
            working_dir=MOUNT_ROOT,  # `-m` finds the package there
            volumes={str(package): {"bind": f"{MOUNT_ROOT}/{module}", "mode": "ro"}},
            environment=environment,
            network_mode="none",
            read_only=True,
            tmpfs=dict.fromkeys(tmpfs, f"size={tmpfs_mb}m,mode=1777"),
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
            **options,
            **extra,
        )
        try:
            raw = container.attach_socket(params={"stdin": 1, "stdout": 1, "stream": 1})
            sock = own_socket(raw)
            container.start()
        except BaseException:
            container.remove(force=True)
            raise
        return container, sock

    async def remove_quietly(self, container: Container) -> None:
        """Remove the container, also when cancelled; a failure is logged (the end-of-run sweep
        or `agentloop sandbox gc` removes it later)."""
        try:
            with anyio.CancelScope(shield=True):
                try:
                    await anyio.to_thread.run_sync(functools.partial(container.remove, force=True))
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as e:
                    if e.status_code != 409:  # 409: removal already in progress
                        raise
                self.known.pop(container.id, None)
        except Exception as e:  # noqa: BLE001 - DockerException or a dead engine's ConnectionError
            log.warning("could not remove a container", what=self.what, container=container.name, error=str(e))

    async def remove_all(self) -> None:
        """Remove every container of the run, even when cancelled (Ctrl-C), and close the client."""
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for container in list(self.known.values()):
                    tg.start_soon(self.remove_quietly, container)
            if self.client is not None:  # anything created while a start was being cancelled
                try:
                    await anyio.to_thread.run_sync(engine.remove_run, self.client, self.run_id)
                except Exception as e:  # noqa: BLE001 - never mask the error that ends the run
                    log.warning("could not sweep the run's containers; `agentloop sandbox gc` will", what=self.what,
                                run_id=self.run_id, error=str(e))
                await anyio.to_thread.run_sync(self.client.close)
                self.client = None


def own_socket(raw: Any) -> socket.socket:
    """A socket of our own for the hijacked attach connection, detached from the HTTP response."""
    inner = getattr(raw, "_sock", raw)
    if not isinstance(inner, socket.socket) or hasattr(inner, "context"):
        raise DockerUnavailable("the Docker attach stream needs a unix or plain TCP DOCKER_HOST (no TLS/ssh)")
    sock = inner.dup()
    if inner is not raw:
        raw.close()  # the SocketIO of the HTTP response holds a reference to the fd
    inner.close()
    return sock
