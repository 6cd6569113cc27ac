"""Tool calls and context overflow through the real openai client and the scripted server; the
choice of vLLM's tool-call parser for `agentloop serve` (no server started)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from agentloop.errors import ContextLengthExceeded, InfraError
from agentloop.model.client import ModelClient, is_context_overflow
from agentloop.model.config import ModelConfig, SamplingParams
from agentloop.model.scripted import (
    Script,
    ScriptedReply,
    ScriptedRequest,
    ScriptedServer,
    context_overflow_message,
    cycle,
    fixed_reply,
    serve_scripted,
)
from agentloop.serve import ServeConfig, tool_call_parser, tool_flags, vllm_command

pytestmark = pytest.mark.anyio
FAST: dict[str, Any] = {"model": "scripted", "max_retries": 3, "retry_max_wait_s": 0.01, "timeout_s": 5.0}
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "bash", "description": "Run a shell command.",
                                      "parameters": {"type": "object", "properties": {"command": {"type": "string"}},
                                                     "required": ["command"]}}},
    {"type": "function", "function": {"name": "submit", "description": "Submit solution.py.",
                                      "parameters": {"type": "object", "properties": {}}}},
]
MESSAGES = [{"role": "system", "content": "You fix code."}, {"role": "user", "content": "Make the tests pass."}]
VLLM_ID = re.compile(r"chatcmpl-tool-[0-9a-f]{16}")


def client_for(base_url: str, max_tokens: int = 512, **cfg: Any) -> ModelClient:
    return ModelClient(ModelConfig(base_url=base_url, **{**FAST, **cfg}), SamplingParams(max_tokens=max_tokens))


@asynccontextmanager
async def session(script: Script, max_tokens: int = 512, client_cfg: dict[str, Any] | None = None,
                  **server_kw: Any) -> AsyncIterator[tuple[ScriptedServer, ModelClient]]:
    """A scripted server and a real ModelClient talking to it."""
    async with serve_scripted(script, **server_kw) as server, \
            client_for(server.base_url, max_tokens, **(client_cfg or {})) as client:
        yield server, client


async def test_one_tool_call_comes_back_intact() -> None:
    async with session(lambda request: ScriptedReply.call("bash", {"command": "pytest -q test_visible.py"})) as (
            server, client):
        [c] = await client.complete(MESSAGES, n=1, tools=TOOLS)
    assert (c.text, c.finish_reason) == ("", "tool_calls")
    [call] = c.tool_calls
    assert set(call) == {"id", "type", "function"} and VLLM_ID.fullmatch(call["id"])
    assert call["type"] == "function"
    assert call["function"] == {"name": "bash", "arguments": json.dumps({"command": "pytest -q test_visible.py"})}
    [request] = server.requests
    assert request.params["tools"] == TOOLS and request.params["tool_choice"] == "auto"
    assert c.completion_tokens > 0 and c.request_completion_tokens == c.completion_tokens


async def test_two_calls_text_and_malformed_arguments_pass_through() -> None:
    broken = '{"command": "ls -la'  # cut JSON: the client must not parse or reject it
    reply = ScriptedReply.calls({"name": "bash", "arguments": broken, "id": "call-1"},
                                {"name": "no_such_tool", "arguments": {"x": [1, 2]}}, text="Let me look.")
    async with session(lambda request: reply) as (_server, client):
        [c] = await client.complete(MESSAGES, n=1, tools=TOOLS)
    assert (c.text, c.finish_reason) == ("Let me look.", "tool_calls")
    first, second = c.tool_calls
    assert first == {"id": "call-1", "type": "function", "function": {"name": "bash", "arguments": broken}}
    assert second["function"] == {"name": "no_such_tool", "arguments": '{"x": [1, 2]}'}
    assert VLLM_ID.fullmatch(second["id"])


async def test_n_choices_get_their_own_calls_and_tokens_sum_to_usage() -> None:
    reply = ScriptedReply(texts=("",), tool_calls=(
        ({"name": "bash", "arguments": {"command": "cat solution.py"}},),
        ({"name": "submit", "arguments": {}},),
    ))
    no_ids = {"return_token_ids": False}  # counts apportioned from usage
    async with session(lambda request: reply, client_cfg=no_ids) as (_server, client):
        a, b = await client.complete(MESSAGES, n=2, tools=TOOLS)
    assert [x["function"]["name"] for x in a.tool_calls + b.tool_calls] == ["bash", "submit"]
    assert a.tool_calls[0]["id"] != b.tool_calls[0]["id"]
    assert (a.finish_reason, b.finish_reason) == ("tool_calls", "tool_calls")
    assert a.completion_tokens + b.completion_tokens == a.request_completion_tokens > 0
    assert a.completion_tokens > b.completion_tokens  # the longer call cost more


async def test_calls_are_text_without_tools_like_vllm() -> None:
    """vLLM parses tool calls only when the request sends tools: the raw generation is the content."""
    async with session(lambda request: ScriptedReply.call("bash", {"command": "ls"})) as (_server, client):
        [c] = await client.complete(MESSAGES, n=1)
    assert c.tool_calls == () and c.finish_reason == "stop"
    assert c.text == '<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n</tool_call>'


async def test_a_call_cut_by_max_tokens_is_cut_text() -> None:
    reply = ScriptedReply.call("bash", {"command": "python -c 'print(1)' && pytest -q -x test_visible.py"})
    async with session(lambda request: reply, max_tokens=4) as (_server, client):
        [c] = await client.complete(MESSAGES, n=1, tools=TOOLS)
    assert c.tool_calls == () and c.finish_reason == "length"
    assert c.text.startswith("<tool_call>") and len(c.text.split()) == 4


def _step(i: int) -> list[dict[str, Any]]:
    """The conversation after i tool steps: assistant tool calls (content None) and tool results."""
    messages: list[dict[str, Any]] = list(MESSAGES)
    for k in range(i):
        call_id = f"chatcmpl-tool-{k:016x}"
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function",
             "function": {"name": "bash", "arguments": f'{{"command": "step {k}"}}'}}]})
        messages.append({"role": "tool", "tool_call_id": call_id, "content": f"exit 1\nFAILED test_{k} assert 1 == 2"})
    return messages


async def test_tool_conversation_is_sent_and_prefix_cache_grows() -> None:
    async with session(lambda request: ScriptedReply.call("bash", {"command": "ls"})) as (server, client):
        steps = [(await client.complete(_step(i), n=1, tools=TOOLS))[0] for i in range(4)]
    sent = [r.messages for r in server.requests]
    assert sent == [_step(i) for i in range(4)]  # content None and role tool arrive as sent
    prompts = [c.prompt_tokens for c in steps]
    cached = [c.cached_prompt_tokens or 0 for c in steps]
    assert cached[0] == 0
    for i in range(1, 4):
        assert prompts[i] > prompts[i - 1]  # tool calls and tool results count as prompt tokens
        assert cached[i] == prompts[i - 1]  # everything sent before is a cache hit
    # a call's arguments and a tool's result are counted as words
    grown = prompts[1] - prompts[0]
    assert grown == (4 + len(['bash', '{"command":', '"step', '0"}'])) + (4 + len(
        ["exit", "1", "FAILED", "test_0", "assert", "1", "==", "2"]) + 1)  # + the tool_call_id


async def test_changed_tool_result_is_a_cache_miss_from_there() -> None:
    async with session(fixed_reply("ok")) as (_server, client):
        [a] = await client.complete(_step(2), n=1, tools=TOOLS)
        other = _step(2)
        other[-1] = {**other[-1], "content": "exit 0"}
        [b] = await client.complete(other, n=1, tools=TOOLS)
    assert a.cached_prompt_tokens == 0 and 0 < (b.cached_prompt_tokens or 0) < b.prompt_tokens


async def test_over_max_model_len_raises_context_length_exceeded() -> None:
    async with session(fixed_reply("ok"), max_tokens=100, max_model_len=200) as (server, client):
        [ok] = await client.complete(_step(1), n=1, tools=TOOLS)
        prompt = ok.prompt_tokens
        assert prompt + 100 <= 200
        with pytest.raises(ContextLengthExceeded) as err:
            await client.complete(_step(4), n=1, tools=TOOLS)
    message = str(err.value)
    assert isinstance(err.value, InfraError) and "\n" not in message
    assert re.search(r"HTTP 400: This model's maximum context length is 200 tokens\. However, you requested "
                     r"(\d+) tokens \((\d+) in the messages, 100 in the completion\)\. Please reduce the length "
                     r"of the messages or completion\.$", message)
    assert (server.request_count, server.refused) == (1, 1)  # refused before the script, never retried


async def test_clamp_mode_cuts_replies_then_refuses_a_full_prompt() -> None:
    """vLLM 0.3x: max_tokens is lowered to what is left; only a prompt that fills the context is a 400."""
    fifty_words = fixed_reply(" ".join(["word"] * 50))
    async with session(fifty_words, max_tokens=100, max_model_len=120, overflow="clamp") as (_server, client):
        [c] = await client.complete(_step(1), n=1, tools=TOOLS)
        assert c.finish_reason == "length" and c.completion_tokens == 120 - c.prompt_tokens
        with pytest.raises(ContextLengthExceeded, match=r"However, your prompt contains \d+ input tokens, "
                                                        r"which exceeds this limit even without any output"):
            await client.complete(_step(5), n=1, tools=TOOLS)


async def test_plain_400_is_not_context_length_exceeded() -> None:
    script = cycle([ScriptedReply.http_error(400, '"auto" tool choice requires --enable-auto-tool-choice and '
                                                  '--tool-call-parser to be set')])
    async with session(script) as (server, client):
        with pytest.raises(InfraError, match="tool choice requires") as err:
            await client.complete(MESSAGES, n=1, tools=TOOLS)
    assert not isinstance(err.value, ContextLengthExceeded) and server.request_count == 1


async def test_context_overflow_in_a_5xx_is_not_retried() -> None:
    overflow = "Input length (5000) exceeds model's maximum context length (4096)."
    script = cycle([ScriptedReply.http_error(500, overflow)])
    async with session(script) as (server, client):
        with pytest.raises(ContextLengthExceeded):
            await client.complete(MESSAGES, n=1)
    assert server.request_count == 1


async def test_context_overflow_after_a_retry() -> None:
    overflow = ScriptedReply.http_error(400, context_overflow_message(100, 90, 20))
    script = cycle([ScriptedReply.http_error(503), overflow])
    async with session(script) as (server, client):
        with pytest.raises(ContextLengthExceeded, match="maximum context length"):
            await client.complete(MESSAGES, n=1)
    assert server.request_count == 2


VLLM_OVERFLOW_MESSAGES = [
    # vLLM <= 0.9 (serving_engine._validate_input), with and without max_tokens
    ("This model's maximum context length is 4096 tokens. However, you requested 5060 tokens (4036 in the messages, "
    "1024 in the completion). Please reduce the length of the messages or completion."),
    ("This model's maximum context length is 4096 tokens. However, you requested 4100 tokens in the messages, "
    "Please reduce the length of the messages."),
    # vLLM 0.10-0.11
    ("'max_tokens' or 'max_completion_tokens' is too large: 2000. This model's maximum context length is 4096 tokens "
    "and your request has 2104 input tokens (2000 > 4096 - 2104). None"),
    # later 0.x
    ("This model's maximum context length is 32768 tokens. However, you requested 8192 output tokens and your prompt "
    "contains at least 24577 input tokens, for a total of at least 32769 tokens. Please reduce the length of the "
    "input prompt or the number of requested output tokens. (parameter=input_tokens, value=24577)"),
    # vLLM 0.32 (renderers/params.py, entrypoints/serve/utils/api_utils.py, v1/engine/input_processor.py)
    ("This model's maximum context length is 4096 tokens. However, your prompt contains at least 4097 input tokens, "
    "which exceeds this limit even without any output tokens. Please reduce the length of the input prompt."),
    ("This model's maximum context length is 4096 tokens. However, your prompt contains 90000 characters (more than "
    "81920 characters, which is the upper bound for 4096 input tokens). Please reduce the length of the input prompt."),
    "Input length (5000) exceeds model's maximum context length (4096).",
    ("The decoder prompt (length 5000) is longer than the maximum model length of 4096. Make sure that "
    "`max_model_len` is no smaller than the number of text tokens."),
    ("The decoder prompt (length 4096) plus the number of requested output tokens (at least 1) is longer than the "
    "maximum model length of 4096. Make sure that `max_model_len` is no smaller than the number of text tokens "
    "(prompt + requested output tokens)."),
]
OTHER_400_MESSAGES = [
    "max_tokens=8192 cannot be greater than max_model_len=4096. Please request fewer output tokens.",
    '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
    "The model `x` does not exist.",
    "prompt is too long",
]


@pytest.mark.parametrize("message", VLLM_OVERFLOW_MESSAGES)
def test_vllm_overflow_messages_match(message: str) -> None:
    assert is_context_overflow(message)


@pytest.mark.parametrize("message", OTHER_400_MESSAGES)
def test_other_messages_do_not_match(message: str) -> None:
    assert not is_context_overflow(message)


@pytest.mark.parametrize("message", VLLM_OVERFLOW_MESSAGES[:1] + VLLM_OVERFLOW_MESSAGES[-1:] + OTHER_400_MESSAGES[:1])
async def test_each_body_through_the_client(message: str) -> None:
    async with session(cycle([ScriptedReply.http_error(400, message)])) as (_server, client):
        with pytest.raises(InfraError) as err:
            await client.complete(MESSAGES, n=1)
    assert isinstance(err.value, ContextLengthExceeded) == is_context_overflow(message)


def test_scripted_messages_are_vllm_format() -> None:
    assert all(is_context_overflow(context_overflow_message(100, p, m)) for p, m in [(90, 20), (120, None)])


async def test_request_records_tools_for_scripts() -> None:
    seen: list[ScriptedRequest] = []

    def script(request: ScriptedRequest) -> ScriptedReply:
        seen.append(request)
        return ScriptedReply.call("submit")

    async with session(script) as (_server, client):
        [c] = await client.complete(MESSAGES, n=1, tools=TOOLS)
    assert c.tool_calls[0]["function"] == {"name": "submit", "arguments": "{}"}
    assert [t["function"]["name"] for t in seen[0].params["tools"]] == ["bash", "submit"]


@pytest.mark.parametrize(("model", "parser"), [
    (None, None),  # the bundled SmolLM2
    ("Qwen/Qwen2.5-Coder-7B-Instruct", "hermes"),
    ("Qwen/Qwen2.5-7B-Instruct", "hermes"),
    ("Qwen/QwQ-32B", "hermes"),
    ("Qwen/Qwen3-8B", "hermes"),
    ("Qwen/Qwen3-Coder-30B-A3B-Instruct", "qwen3_coder"),
    ("meta-llama/Llama-3.1-8B-Instruct", "llama3_json"),
    ("meta-llama/Meta-Llama-3.1-70B-Instruct", "llama3_json"),
    ("meta-llama/Llama-3.2-3B-Instruct", "llama3_json"),
    ("meta-llama/Llama-3.3-70B-Instruct", "llama3_json"),
    ("meta-llama/Meta-Llama-3-8B-Instruct", None),  # Llama 3.0 has no tool-call format
    ("NousResearch/Hermes-3-Llama-3.1-8B", "hermes"),
    ("mistralai/Mistral-7B-Instruct-v0.3", "mistral"),
    ("/models/qwen2.5-coder-7b-instruct", "hermes"),  # a local folder: its name counts
    ("/home/qwen2.5/SmolLM2-135M-Instruct", None),  # ... not the folders above it
    ("HuggingFaceTB/SmolLM2-1.7B-Instruct", None),
])
def test_tool_call_parser_from_model_name(model: str | None, parser: str | None) -> None:
    assert tool_call_parser(model) == parser


def test_tool_flags_and_overrides() -> None:
    qwen = "Qwen/Qwen2.5-Coder-7B-Instruct"
    assert tool_flags(ServeConfig()) == []  # SmolLM2: the text protocol only
    assert tool_flags(ServeConfig(model=qwen)) == ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    assert tool_flags(ServeConfig(model=qwen, tool_call_parser="none")) == []
    assert tool_flags(ServeConfig(model=qwen, tool_call_parser="pythonic"))[-1] == "pythonic"
    assert tool_flags(ServeConfig(tool_call_parser="hermes"))[-1] == "hermes"  # forced even for SmolLM2
    opaque = ServeConfig(model="/ckpt/step-1000", served_model_name="qwen2.5-coder-ft")
    assert tool_flags(opaque)[-1] == "hermes"  # the served name decides when the folder says nothing
    user = ServeConfig(model=qwen, extra_args=["--enable-auto-tool-choice", "--tool-call-parser=qwen3_json"])
    assert tool_flags(user) == []  # the user's own flags win, nothing doubled
    cmd = vllm_command(ServeConfig(model=qwen, enforce_eager=False, extra_args=["--seed", "1"]), qwen, 8000)
    assert " ".join(cmd).endswith("--enable-auto-tool-choice --tool-call-parser hermes --seed 1")
