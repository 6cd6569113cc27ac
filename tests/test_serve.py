"""`agentloop serve`: the one-time GGUF conversion and the child-process lifecycle.

The lifecycle tests stand in a fake "vLLM interpreter" (a script that runs the scripted server), so
they check start, readiness, failure and cleanup in seconds without loading a model.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import anyio
import httpx
import pytest

from agentloop.errors import AgentloopError, ServerUnreachable
from agentloop.serve import (
    DEFAULT_MODEL_DIR,
    ServeConfig,
    ensure_default_model,
    running_server,
    serve_forever,
    vllm_command,
)

pytestmark = pytest.mark.anyio

# Stands in for the vLLM interpreter: passes the "is vLLM installed" probe, starts a worker that
# ignores SIGTERM (so cleanup must SIGKILL the group), then serves /v1/models like vLLM would.
FAKE_VLLM = """#!{python}
import os, subprocess, sys
if sys.argv[1] == "-c":
    sys.exit(0)
if "--crash" in sys.argv:
    print("RuntimeError: boom, no device", flush=True)
    sys.exit(3)
worker = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 300 & wait"])
open(os.environ["FAKE_WORKER_PIDFILE"], "w").write(str(worker.pid))
from agentloop.model.scripted import main
main(["--port", sys.argv[sys.argv.index("--port") + 1], "--model", "smollm2-135m"])
"""


@pytest.fixture
def fake_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ServeConfig:
    python = tmp_path / "fake-python"
    python.write_text(FAKE_VLLM.format(python=sys.executable))
    python.chmod(0o755)
    monkeypatch.setenv("FAKE_WORKER_PIDFILE", str(tmp_path / "worker.pid"))
    return ServeConfig(
        model=str(tmp_path), served_model_name="smollm2-135m", port=0, python=str(python),
        cache_dir=tmp_path / "cache", stop_grace_s=1.0,
    )


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _alive(pid: int, settle_s: float = 3.0) -> bool:
    """Whether `pid` still runs after up to `settle_s` (a SIGKILL takes a moment to land)."""
    deadline = time.monotonic() + settle_s
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _running(pid)


@pytest.mark.vllm
async def test_default_model_converted_once_and_reused() -> None:
    """Uses the default cache (the conversion takes ~25 s and the real server needs it anyway)."""
    cfg = ServeConfig()
    if not Path(cfg.python).exists():
        pytest.fail(f"no vLLM interpreter at {cfg.python}; run: bash scripts/setup.sh", pytrace=False)
    folder = await ensure_default_model(cfg)
    assert folder == cfg.cache_dir / DEFAULT_MODEL_DIR
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert (folder / "model.safetensors").stat().st_size > 200e6 and (folder / "tokenizer.json").exists()
    assert "<|im_start|>" in (folder / "chat_template.jinja").read_text()
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert await ensure_default_model(cfg) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime  # reused, not converted again


async def test_failed_conversion_leaves_no_folder(tmp_path: Path) -> None:
    cfg = ServeConfig(python="/bin/false", cache_dir=tmp_path)
    with pytest.raises(AgentloopError, match=r"converting the SmolLM2 GGUF failed \(exit 1\)"):
        await ensure_default_model(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]


async def test_interrupted_conversion_leaves_nothing_running(tmp_path: Path) -> None:
    python = tmp_path / "slow-python"
    python.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/pid\nexec sleep 60\n")
    python.chmod(0o755)
    cfg = ServeConfig(python=str(python), cache_dir=tmp_path / "cache")
    with anyio.move_on_after(1.0):
        await ensure_default_model(cfg)
    assert sorted(p.name for p in cfg.cache_dir.iterdir()) == ["logs"]
    assert not _alive(int((tmp_path / "pid").read_text()))


def test_vllm_command() -> None:
    cfg = ServeConfig(enforce_eager=True, extra_args=["--seed", "1"])
    cmd = vllm_command(cfg, "/models/x", 8123)
    assert cmd[:3] == [cfg.python, "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(cmd)
    for flag in ("--model /models/x", "--served-model-name smollm2-135m", "--port 8123", "--dtype bfloat16",
                 "--max-model-len 4096", "--max-num-seqs 16", "--enforce-eager", "--enable-prompt-tokens-details"):
        assert flag in joined
    assert cmd[-2:] == ["--seed", "1"]
    assert "--enforce-eager" not in vllm_command(ServeConfig(enforce_eager=False), "m", 1)
    assert "--served-model-name Qwen/Q" in " ".join(vllm_command(ServeConfig(model="Qwen/Q"), "Qwen/Q", 1))


async def test_running_server_stops_the_whole_process_group(fake_vllm: ServeConfig, tmp_path: Path) -> None:
    async with running_server(fake_vllm) as base_url:
        assert httpx.get(f"{base_url}/models").json()["data"][0]["id"] == "smollm2-135m"
        worker = int((tmp_path / "worker.pid").read_text())
        assert _running(worker)
    assert not _alive(worker)


async def test_exit_before_ready_quotes_the_log(fake_vllm: ServeConfig) -> None:
    cfg = replace(fake_vllm, extra_args=["--crash"])
    with pytest.raises(ServerUnreachable, match=r"vLLM exited with code 3 before it was ready: .*boom, no device"):
        async with running_server(cfg):
            pass


async def test_missing_vllm_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(AgentloopError, match=r"vLLM is not installed for /bin/false"):
        async with running_server(ServeConfig(model=str(tmp_path), python="/bin/false")):
            pass


async def test_serve_forever_stops_on_sigterm(
    fake_vllm: ServeConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve_forever, fake_vllm)
        with anyio.fail_after(30):
            while "ready at" not in (out := capsys.readouterr().out):
                await anyio.sleep(0.1)
        assert out.startswith("agentloop serve: ready at http://127.0.0.1:") and "(model smollm2-135m)" in out
        worker = int((tmp_path / "worker.pid").read_text())
        os.kill(os.getpid(), signal.SIGTERM)
    assert not _alive(worker)
