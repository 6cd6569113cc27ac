"""The Docker engine boundary: connect, check the image, build it, and clean up after runs.

Docker SDK errors become `DockerUnavailable` / `ImageMissing` here, with the command that fixes
them. These functions block; async code calls them through `anyio.to_thread.run_sync`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import docker
from docker.errors import DockerException, ImageNotFound, NotFound

from agentloop.errors import AgentloopError, DockerUnavailable, ImageMissing
from agentloop.sandbox.config import DEFAULT_IMAGE, SandboxConfig
from agentloop.sandbox.types import ExecResult

RUN_LABEL = "agentloop.run"
BUILD_TIMEOUT_S = 300
"""Silence allowed on the `docker build` stream: a registry that swallows packets must not hang us."""


def connect(timeout_s: float = 60) -> docker.DockerClient:
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.from_env(timeout=int(timeout_s), max_pool_size=32)
    except Exception as e:  # DockerException, bad DOCKER_HOST, missing socket
        raise DockerUnavailable(_no_engine(where)) from e
    try:
        client.ping()
    except Exception as e:  # requests' ConnectionError is not a DockerException
        client.close()
        raise DockerUnavailable(_no_engine(where)) from e
    return client


def _no_engine(where: str) -> str:
    return f"no Docker engine answers at {where}; start one with: bash sandboxes/setup-engine.sh"


def ensure_image(client: docker.DockerClient, image: str) -> None:
    try:
        client.images.get(image)
    except ImageNotFound as e:
        raise ImageMissing(f"sandbox image {image} not found; build it with: agentloop sandbox build") from e
    except DockerException as e:
        raise DockerUnavailable(f"Docker engine error while looking up image {image}: {e}") from e


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(container: docker.models.containers.Container) -> bool:
    try:
        container.remove(force=True)
    except NotFound:
        return False
    return True


def _list(client: docker.DockerClient, label: str) -> list[Any]:
    """Sparse: a full listing inspects each container and fails if one vanishes meanwhile."""
    return client.containers.list(all=True, sparse=True, filters={"label": label})


def reap_dead_runs(client: docker.DockerClient) -> int:
    """Remove containers left by agentloop processes of this host that are gone (kill -9, crash)."""
    host, removed = socket.gethostname(), 0
    for c in _list(client, RUN_LABEL):
        labels = c.attrs.get("Labels") or {}
        if labels.get("agentloop.owner_host") != host:
            continue
        try:
            pid = int(labels.get("agentloop.owner_pid", "0"))
        except ValueError:
            pid = 0
        if not _pid_alive(pid):
            removed += _remove(c)
    return removed


def remove_run(client: docker.DockerClient, run_id: str) -> int:
    """Remove every container of one run (the pool's final sweep)."""
    return sum(_remove(c) for c in _list(client, f"{RUN_LABEL}={run_id}"))


def gc(all_runs: bool = False) -> int:
    """`agentloop sandbox gc`: remove containers of dead runs (every agentloop container with all_runs)."""
    client = connect()
    try:
        if not all_runs:
            return reap_dead_runs(client)
        return sum(_remove(c) for c in _list(client, RUN_LABEL))
    except DockerException as e:
        raise DockerUnavailable(f"Docker engine error during gc: {e}") from e
    finally:
        client.close()


def sandboxes_dir() -> Path:
    """The build files: `sandboxes/` in a checkout, `agentloop/_sandboxes` in a wheel."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "sandboxes", here.parents[1] / "_sandboxes"):
        if (candidate / "Dockerfile").is_file():
            return candidate
    raise AgentloopError(f"sandbox build files not found next to {here.parents[1]} (sandboxes/Dockerfile)")


def build_image(tag: str = DEFAULT_IMAGE) -> str:
    """`docker build` from the Dockerfile; without a registry, fall back to build-offline.sh."""
    root = sandboxes_dir()
    client = connect(timeout_s=BUILD_TIMEOUT_S)
    try:
        try:
            client.images.build(path=str(root), tag=tag, rm=True)
            return tag
        except Exception as e:  # noqa: BLE001 - BuildError, APIError, read timeout: try offline
            print(f"agentloop: docker build failed ({_first_line(e)}); trying {root / 'build-offline.sh'}",
                  file=sys.stderr)
        proc = subprocess.run(["bash", str(root / "build-offline.sh"), tag], stdout=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            raise AgentloopError(
                f"could not build {tag}: docker build and build-offline.sh (exit {proc.returncode}) both failed")
        ensure_image(client, tag)
        return tag
    finally:
        client.close()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


async def gc_async(all_runs: bool = False) -> int:
    return await anyio.to_thread.run_sync(gc, all_runs)


async def build_image_async(tag: str = DEFAULT_IMAGE) -> str:
    return await anyio.to_thread.run_sync(build_image, tag)


async def exec_file(path: str | Path, timeout_s: float, cfg: SandboxConfig | None = None) -> ExecResult:
    """`agentloop sandbox exec FILE --timeout S`: a pool of one, one program, then tear down."""
    from agentloop.sandbox.docker_pool import DockerPool  # the pool imports this module

    try:
        program = await anyio.Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise AgentloopError(f"cannot read program file {path}: {e}") from e
    async with DockerPool.start(replace(cfg or SandboxConfig(), pool_size=1)) as pool:
        return await pool.run(program, timeout_s)
