"""The scripted OpenAI-compatible server as a child process, for benchmarks that measure the HTTP
path without a model (runner_overhead, soak). Benchmarks run as scripts, so this folder is on
sys.path and `import _scripted` finds it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_scripted(*args: str, wait_s: float = 20.0, **popen: Any) -> tuple[subprocess.Popen, str]:
    """`python -m agentloop.model.scripted --port P ARGS` (Popen keywords pass through); returns
    once it answers /models, with its base URL. A server that does not come up is stopped."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "agentloop.model.scripted", "--port", str(port), *args], **popen)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                time.sleep(0.05)
        raise SystemExit(f"scripted server did not answer on {url} within {wait_s:g} s")
    except BaseException:
        stop(proc)
        raise


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
