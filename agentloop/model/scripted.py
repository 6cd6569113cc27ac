"""A scripted OpenAI-compatible server, the offline test seam for everything that talks to a model.

Like httpx's mock transport, it ships in the package so users can exercise their own strategies
without a GPU: a Python callable decides each reply (texts, an HTTP error, a stall, a dropped
connection or a truncated body), and the server speaks just enough HTTP/1.1 (keep-alive,
Content-Length bodies) for the openai client. It also answers vLLM's pooling endpoints
(`/pooling`, `/classify`) with the scores a script decides, for reward-model scorers. No framework:
it must stay fast enough to push thousands of concurrent requests through in a benchmark.

Like vLLM it can answer with tool calls (`ScriptedReply.call("bash", {"command": "ls"})`), and with
`max_model_len` it refuses a prompt that does not fit with vLLM's own HTTP 400 message, so an agent
loop's context-full path runs through the real client code. Tokens are whitespace-separated words.

    async with serve_scripted(fixed_reply("```python\\nprint(1)\\n```")) as server:
        cfg = ModelConfig(base_url=server.base_url, model="scripted")

CLI: `python -m agentloop.model.scripted --port 8001 [--script pkg.mod:func] [--model NAME]
[--max-model-len N [--overflow reject|clamp]]`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import itertools
import json
import math
import re
import signal
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import structlog
from anyio.abc import SocketAttribute, SocketStream
from anyio.from_thread import start_blocking_portal
from anyio.streams.buffered import BufferedByteReceiveStream

from agentloop.model.http1 import error_reply, read_head, response, serve_connection, serving

log = structlog.get_logger()

DEFAULT_MODEL = "scripted"
DEFAULT_REPLY = "```python\ndef solution(*args):\n    return None\n```"
_MAX_RECORDED = 10_000
_MAX_PREFIXES = 100_000
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class ScriptedRequest:
    """One chat-completion request as the script sees it."""

    messages: list[dict[str, Any]]
    n: int
    model: str
    params: dict[str, Any]
    """Every other field of the JSON body (temperature, seed, stop, extra_body keys such as top_k)."""
    index: int
    """0-based count of requests this server has received on its scripted endpoints (chat
    completions, and pooling/classify when used; retries count too)."""
    endpoint: Literal["chat", "pooling", "classify"] = "chat"
    """Which endpoint received it. Pooling and classify requests in chat form carry their
    `messages`; in completion form `messages` is empty and `params["input"]` holds the input."""


@dataclass(frozen=True)
class ScriptedReply:
    """What the server does with one request: answer with texts, or misbehave."""

    texts: Sequence[str] = ()
    """One text per choice; cycled when shorter than n. Stop strings and max_tokens still apply."""
    finish_reason: str = "stop"
    delay_s: float = 0.0
    """Stall this long before answering (or before the fault)."""
    status: int = 200
    """A non-200 status answers with an OpenAI-style error body whose message is `error`."""
    error: str = "scripted error"
    fault: Literal["drop", "truncate"] | None = None
    """"drop": close without answering; "truncate": send headers and half the body, then close."""
    top_logprobs: Sequence[Mapping[str, float]] | None = None
    """Per choice (cycled like texts): {token: logprob} of the first generated token. Returned in
    the OpenAI format when the request asks for `logprobs` (the most likely token is the sampled
    one; `top_logprobs` of the request caps the list, as in vLLM)."""
    pooling: Sequence[Any] | None = None
    """For /pooling and /classify: one output per input (cycled when shorter), i.e. each item's
    `data` on /pooling (a list of floats, or one list per token/step) or `probs` on /classify.
    None there answers 400 like a vLLM server whose model does not support pooling."""
    raw_body: bytes | None = None
    """Send this body verbatim with the status (200 by default): for malformed-reply tests."""
    tool_calls: Sequence[Sequence[Mapping[str, Any]]] | None = None
    """Per choice (cycled like texts): the tool calls of that choice, each {"name", "arguments"}
    (arguments a dict, sent as JSON, or a str, sent verbatim so malformed JSON can be scripted),
    optionally with an "id" (default: vLLM's "chatcmpl-tool-<16 hex>"); the OpenAI wire shape
    {"id", "type", "function": {"name", "arguments"}} is accepted too. A choice with calls answers
    `message.tool_calls`, content = its text or null, finish_reason "tool_calls". As in vLLM, calls
    are only parsed out when the request sends `tools` (and tool_choice is not "none"): otherwise,
    or when max_tokens cuts them, the choice is the raw hermes-style text
    (`<tool_call>{"name": ..., "arguments": ...}</tool_call>`) and no tool_calls."""

    @classmethod
    def scores(cls, *outputs: Any) -> ScriptedReply:
        """A pooling/classify reply: one output (list of floats, or of per-step lists) per input."""
        return cls(pooling=outputs)

    @classmethod
    def call(cls, name: str, arguments: Mapping[str, Any] | str | None = None, text: str = "") -> ScriptedReply:
        """One tool call (every choice): `arguments` a dict (sent as JSON) or a raw string."""
        return cls.calls({"name": name, "arguments": {} if arguments is None else arguments}, text=text)

    @classmethod
    def calls(cls, *calls: Mapping[str, Any], text: str = "") -> ScriptedReply:
        """Several tool calls in one choice (every choice), each {"name", "arguments"[, "id"]}."""
        return cls(texts=(text,), tool_calls=(tuple(calls),))

    @classmethod
    def http_error(cls, status: int, message: str | None = None, delay_s: float = 0.0) -> ScriptedReply:
        return cls(status=status, error=message or f"scripted {status}", delay_s=delay_s)

    @classmethod
    def drop(cls, delay_s: float = 0.0) -> ScriptedReply:
        return cls(fault="drop", delay_s=delay_s)

    @classmethod
    def truncate(cls, *texts: str) -> ScriptedReply:
        return cls(texts=texts or (DEFAULT_REPLY,), fault="truncate")

    @classmethod
    def stall(cls, delay_s: float, *texts: str) -> ScriptedReply:
        return cls(texts=texts or (DEFAULT_REPLY,), delay_s=delay_s)


ReplyLike = ScriptedReply | str | Sequence[str]
Script = Callable[[ScriptedRequest], ReplyLike | Awaitable[ReplyLike]]
"""Sync or async; a str or list of str is shorthand for ScriptedReply(texts=...)."""


def fixed_reply(text: str = DEFAULT_REPLY, finish_reason: str = "stop") -> Script:
    """Every choice of every request gets `text`."""
    reply = ScriptedReply(texts=(text,), finish_reason=finish_reason)
    return lambda request: reply


def cycle(replies: Sequence[ReplyLike]) -> Script:
    """Request i gets replies[i % len(replies)]."""
    fixed = [_as_reply(r) for r in replies]
    return lambda request: fixed[request.index % len(fixed)]


def fail_first(k: int, fault: int | ScriptedReply = 500, then: Script | None = None) -> Script:
    """The first k requests fail with `fault` (an HTTP status or any reply); later ones go to `then`."""
    failure = ScriptedReply.http_error(fault) if isinstance(fault, int) else fault
    after = then or fixed_reply()
    return lambda request: failure if request.index < k else after(request)


def _as_reply(value: ReplyLike) -> ScriptedReply:
    if isinstance(value, ScriptedReply):
        return value
    if isinstance(value, str):
        return ScriptedReply(texts=(value,))
    return ScriptedReply(texts=tuple(value))


def _count_tokens(text: str) -> int:
    """The token estimate: whitespace-separated words (cheap and deterministic)."""
    return len(text.split())


def _limit(text: str, stop: Sequence[str], max_tokens: int | None, finish: str) -> tuple[str, str]:
    """Apply stop strings and max_tokens the way vLLM does (stop text excluded, "length" on cut)."""
    cuts = [i for s in stop if s and (i := text.find(s)) >= 0]
    if cuts:
        text, finish = text[: min(cuts)], "stop"
    if max_tokens is not None and _count_tokens(text) > max_tokens:
        words = list(itertools.islice(_WORD.finditer(text), max_tokens))
        text, finish = (text[: words[-1].end()] if words else ""), "length"
    return text, finish


def _content_text(message: dict[str, Any]) -> str:
    """What a message contributes to the prompt: its content (text, or JSON of content parts; none
    when null), plus the name and arguments of each tool call an assistant message carries."""
    content = message.get("content")
    text = content if isinstance(content, str) else ("" if content is None else json.dumps(content))
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                arguments = function.get("arguments")
                arguments = arguments if isinstance(arguments, str) else json.dumps(arguments)
                text += f" {function.get('name')} {arguments}"
            else:
                text += f" {json.dumps(call)}"
    return text


def tool_call_id() -> str:
    """An id in vLLM's format: "chatcmpl-tool-" and 16 hex digits."""
    return f"chatcmpl-tool-{uuid.uuid4().int & (2**64 - 1):016x}"


def _wire_call(call: Mapping[str, Any]) -> dict[str, Any]:
    """A scripted call ({"name", "arguments"[, "id"]} or the wire shape) in OpenAI's wire shape."""
    function = call.get("function")
    spec = function if isinstance(function, Mapping) else call
    arguments = spec.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {"id": call.get("id") or tool_call_id(), "type": "function",
            "function": {"name": str(spec.get("name", "")), "arguments": arguments}}


def _calls_as_text(text: str, calls: Sequence[dict[str, Any]]) -> str:
    """What the model generated for these calls, hermes style (Qwen2.5's template): the text an
    unparsed or cut reply shows instead of tool_calls."""
    blocks = [f'<tool_call>\n{{"name": {json.dumps(c["function"]["name"])}, '
              f'"arguments": {c["function"]["arguments"]}}}\n</tool_call>' for c in calls]
    return "\n".join(([text] if text else []) + blocks)


def context_overflow_message(max_model_len: int, prompt_tokens: int, max_tokens: int | None) -> str:
    """vLLM's message for a prompt that does not fit: with max_tokens, the classic
    "However, you requested M tokens (P in the messages, C in the completion)" of vLLM <= 0.9
    (its check is prompt + max_tokens > max_model_len); without, 0.3x's prompt-only message."""
    if max_tokens is None:
        return (f"This model's maximum context length is {max_model_len} tokens. However, your prompt contains "
                f"{prompt_tokens} input tokens, which exceeds this limit even without any output tokens. "
                f"Please reduce the length of the input prompt.")
    return (f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
            f"completion). Please reduce the length of the messages or completion.")


@dataclass
class ScriptedServer:
    """A running scripted server; `base_url` ends in /v1 like vLLM's."""

    script: Script
    models: Sequence[str] = (DEFAULT_MODEL,)
    host: str = "127.0.0.1"
    port: int = 0
    request_count: int = field(default=0, init=False)
    requests: deque[ScriptedRequest] = field(default_factory=lambda: deque(maxlen=_MAX_RECORDED), init=False)
    """The most recent chat-completion requests, oldest first (for assertions in tests)."""
    max_model_len: int | None = None
    """Context size in tokens (words); None: unlimited. A request that does not fit gets vLLM's 400."""
    overflow: Literal["reject", "clamp"] = "reject"
    """How a request over `max_model_len` is answered. "reject" (vLLM <= 0.9): prompt + max_tokens
    over the limit is a 400 ("However, you requested M tokens (P in the messages, C in the
    completion)"). "clamp" (vLLM 0.3x, the one installed here): max_tokens is lowered to what is
    left, so replies get cut ("length"), and only a prompt of max_model_len or more is a 400."""
    refused: int = field(default=0, init=False)
    """Chat requests answered with the context-overflow 400 (not in request_count nor requests)."""
    _prefixes: set[int] = field(default_factory=set, init=False, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def handle(self, stream: SocketStream) -> None:
        """Serve one keep-alive connection until the client closes it or a fault ends it."""
        await serve_connection(stream, self._serve_connection, "scripted server")

    async def _serve_connection(self, stream: SocketStream) -> None:
        reader = BufferedByteReceiveStream(stream)
        while (req := await read_head(reader, stream)) is not None:
            body = await reader.receive_exactly(req.length) if req.length else b""
            if not await self._dispatch(stream, req.method, req.path, body) or not req.keep_alive:
                return

    async def _dispatch(self, stream: SocketStream, method: str, path: str, body: bytes) -> bool:
        """Answer one request; False when the connection must close (a fault was injected)."""
        if method == "GET" and path in ("/v1/models", "/models"):
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "agentloop"} for m in self.models]
            await stream.send(response(200, json.dumps({"object": "list", "data": data}).encode()))
            return True
        if method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
            return await self._chat(stream, body)
        if method == "POST" and path in ("/pooling", "/v1/pooling", "/classify", "/v1/classify"):
            return await self._pooling(stream, body, "classify" if path.endswith("classify") else "pooling")
        await stream.send(error_reply(404, f"no route {method} {path}"))
        return True

    async def _chat(self, stream: SocketStream, body: bytes) -> bool:
        try:
            params = json.loads(body)
            messages, model, n = params.pop("messages"), params.pop("model"), int(params.pop("n", None) or 1)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            await stream.send(error_reply(400, f"bad chat-completion request: {e}"))
            return True
        request = ScriptedRequest(messages=messages, n=n, model=model, params=params, index=self.request_count)
        if self.max_model_len is not None and model in self.models:
            overflow = self._overflow(request)
            if overflow is not None:
                self.refused += 1
                await stream.send(error_reply(400, overflow))
                return True
        return await self._answer(stream, request, self._completion_body)

    def _overflow(self, request: ScriptedRequest) -> str | None:
        """vLLM's 400 message when the request does not fit `max_model_len` (checked before the
        script runs, as vLLM checks before generating; such a request is neither counted nor
        recorded), else None."""
        assert self.max_model_len is not None
        limit = self.max_model_len
        prompt = self._prompt_tokens(request.messages, request.params.get("tools"), record=False)[0]
        max_tokens = _max_tokens(request.params)
        if self.overflow == "clamp":
            if prompt > limit:
                return context_overflow_message(limit, prompt, None)
            if prompt == limit:
                return (f"The decoder prompt (length {prompt}) plus the number of requested output tokens "
                        f"(at least 1) is longer than the maximum model length of {limit}. Make sure that "
                        f"`max_model_len` is no smaller than the number of text tokens (prompt + requested "
                        f"output tokens).")
            return None
        if max_tokens is None:  # vLLM <= 0.9 then asked for all that is left
            return (f"This model's maximum context length is {limit} tokens. However, you requested {prompt} tokens "
                    f"in the messages, Please reduce the length of the messages.") if prompt >= limit else None
        return context_overflow_message(limit, prompt, max_tokens) if prompt + max_tokens > limit else None

    async def _pooling(self, stream: SocketStream, body: bytes, endpoint: Literal["pooling", "classify"]) -> bool:
        try:
            params = json.loads(body)
            model = params.pop("model")
            messages = params.pop("messages", None) or []
            if not messages and "input" not in params:
                raise KeyError("input")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            await stream.send(error_reply(400, f"bad {endpoint} request: {e}"))
            return True
        request = ScriptedRequest(messages=messages, n=1, model=model, params=params,
                                  index=self.request_count, endpoint=endpoint)
        return await self._answer(stream, request, self._pooling_body)

    async def _answer(self, stream: SocketStream, request: ScriptedRequest,
                      build: Callable[[ScriptedRequest, ScriptedReply], bytes]) -> bool:
        """Run the script on a recorded request and send its reply (or its fault)."""
        if request.model not in self.models:
            await stream.send(error_reply(404, f"The model `{request.model}` does not exist."))
            return True
        self.request_count += 1
        self.requests.append(request)
        try:
            reply = await self._run_script(request)
        except Exception as e:  # noqa: BLE001 - the user's script failed: answer 500 so the client sees it
            await stream.send(error_reply(500, f"script raised {type(e).__name__}: {e}"))
            return True
        if reply.delay_s:
            await anyio.sleep(reply.delay_s)
        if reply.fault == "drop":
            return False
        if reply.raw_body is not None:
            await stream.send(response(reply.status, reply.raw_body))
            return True
        if reply.status != 200:
            await stream.send(error_reply(reply.status, reply.error))
            return True
        if request.endpoint != "chat" and reply.pooling is None:
            await stream.send(error_reply(400, f"The model does not support the {request.endpoint} API"))
            return True
        payload = build(request, reply)
        data = response(200, payload)
        if reply.fault == "truncate":  # the full content-length is announced, half the body arrives
            await stream.send(data[: len(data) - len(payload) // 2])
            return False
        await stream.send(data)
        return True

    async def _run_script(self, request: ScriptedRequest) -> ScriptedReply:
        result = self.script(request)
        if inspect.isawaitable(result):
            result = await result
        return _as_reply(result)

    def _completion_body(self, request: ScriptedRequest, reply: ScriptedReply) -> bytes:
        p = request.params
        stop = p.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        prompt_tokens, cached = self._prompt_tokens(request.messages, p.get("tools"))
        max_tokens = _max_tokens(p)
        if self.max_model_len is not None and self.overflow == "clamp":
            left = self.max_model_len - prompt_tokens
            max_tokens = left if max_tokens is None else min(max_tokens, left)
        parse_calls = bool(p.get("tools")) and p.get("tool_choice") != "none"
        texts = reply.texts or ("",)
        choices, completion_tokens = [], 0
        for i in range(request.n):
            text = texts[i % len(texts)]
            calls = [_wire_call(c) for c in reply.tool_calls[i % len(reply.tool_calls)]] if reply.tool_calls else []
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                generated = _calls_as_text(text, calls)
                tokens = _count_tokens(generated)
                if parse_calls and (max_tokens is None or tokens <= max_tokens):
                    message, finish = {"role": "assistant", "content": text or None, "tool_calls": calls}, "tool_calls"
                else:  # vLLM leaves unparsed or cut calls in the content
                    message["content"], finish = _limit(generated, (), max_tokens, "stop")
                    tokens = _count_tokens(message["content"])
            else:
                message["content"], finish = _limit(text, stop, max_tokens, reply.finish_reason)
                tokens = _count_tokens(message["content"])
            completion_tokens += tokens
            choice: dict[str, Any] = {"index": i, "message": message,
                                      "logprobs": None, "finish_reason": finish, "stop_reason": None}
            if p.get("logprobs") and reply.top_logprobs:
                choice["logprobs"] = _logprobs(reply.top_logprobs[i % len(reply.top_logprobs)],
                                               int(p.get("top_logprobs") or 0))
            if p.get("return_token_ids"):
                choice["token_ids"] = list(range(tokens))
            choices.append(choice)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens,
                 "prompt_tokens_details": {"cached_tokens": cached}}
        return json.dumps({"id": f"chatcmpl-scripted-{request.index}", "object": "chat.completion",
                           "created": int(time.time()), "model": request.model, "choices": choices,
                           "usage": usage}).encode()

    def _pooling_body(self, request: ScriptedRequest, reply: ScriptedReply) -> bytes:
        """vLLM's PoolingResponse ({"data": [{"index", "object": "pooling", "data"}]}) or
        ClassificationResponse ({"data": [{"index", "label", "probs", "num_classes"}]})."""
        raw = request.params.get("input")
        count = len(raw) if isinstance(raw, list) and raw and not isinstance(raw[0], int) else 1
        outputs = reply.pooling or [[]]
        data: list[dict[str, Any]] = []
        for i in range(count):
            out = outputs[i % len(outputs)]
            if request.endpoint == "pooling":
                data.append({"index": i, "object": "pooling", "data": out})
            else:
                data.append({"index": i, "label": str(max(range(len(out)), key=out.__getitem__)) if out else None,
                             "probs": out, "num_classes": len(out)})
        prompt_tokens = self._prompt_tokens(request.messages)[0] if request.messages else _count_tokens(json.dumps(raw))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 0, "total_tokens": prompt_tokens}
        prefix = "pool" if request.endpoint == "pooling" else "classify"
        return json.dumps({"id": f"{prefix}-scripted-{request.index}", "object": "list", "created": int(time.time()),
                           "model": request.model, "data": data, "usage": usage}).encode()

    def _prompt_tokens(self, messages: list[dict[str, Any]], tools: Any = None,
                       record: bool = True) -> tuple[int, int]:
        """(prompt tokens, cached tokens): 4 per message plus its words (content, tool calls' names
        and arguments, tool results); the tool schemas, when sent, count as a leading message (chat
        templates render them into the system prompt). A leading run of messages seen before in the
        same order counts as a prefix-cache hit, like vLLM's prefix caching; `record` False only
        counts (a refused request fills no cache)."""
        if len(self._prefixes) > _MAX_PREFIXES:
            self._prefixes.clear()
        total = cached = 0
        key = 0
        hit = True
        parts: list[tuple[Any, str]] = [("tools", json.dumps(tools))] if tools else []
        parts += [(m.get("role"), _content_text(m) + (f" {m['tool_call_id']}" if m.get("tool_call_id") else ""))
                  for m in messages]
        for role, text in parts:
            tokens = 4 + _count_tokens(text)
            key = hash((key, role, text))
            hit = hit and key in self._prefixes
            if record:
                self._prefixes.add(key)
            total += tokens
            cached += tokens if hit else 0
        return total, cached


def _max_tokens(params: Mapping[str, Any]) -> int | None:
    value = params.get("max_completion_tokens") or params.get("max_tokens")
    return int(value) if value else None


def _logprobs(first: Mapping[str, float], top_n: int) -> dict[str, Any]:
    """OpenAI chat logprobs for one generated token: the most likely token of `first` is the
    sampled one, and the request's `top_logprobs` caps the alternatives (as vLLM does)."""
    ranked = sorted(first.items(), key=lambda kv: kv[1], reverse=True)

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": max(logprob, -9999.0) if math.isfinite(logprob) else -9999.0,
                "bytes": list(token.encode())}

    token, logprob = ranked[0] if ranked else ("", 0.0)
    return {"content": [{**entry(token, logprob), "top_logprobs": [entry(t, lp) for t, lp in ranked[:top_n]]}]}


@contextlib.asynccontextmanager
async def serve_scripted(
    script: Script | None = None, port: int = 0, *, host: str = "127.0.0.1", models: Sequence[str] = (DEFAULT_MODEL,),
    max_model_len: int | None = None, overflow: Literal["reject", "clamp"] = "reject",
) -> AsyncIterator[ScriptedServer]:
    """Run a scripted server in the current event loop for the duration of the block."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    server = ScriptedServer(script=script or fixed_reply(), models=tuple(models), host=host,
                            port=listener.extra(SocketAttribute.local_port), max_model_len=max_model_len,
                            overflow=overflow)
    async with serving(listener, server.handle):
        yield server


@contextlib.contextmanager
def scripted_server_in_thread(script: Script | None = None, port: int = 0, **kwargs: Any) -> Iterator[ScriptedServer]:
    """The same server on its own event loop in a background thread, for synchronous tests."""
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(
        serve_scripted(script, port, **kwargs)
    ) as server:
        yield server


def load_script(spec: str) -> Script:
    """Resolve "package.module:function" to the script callable."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise SystemExit(f"--script must look like module:function, got {spec!r}")
    script: Script = getattr(importlib.import_module(module_name), attr)
    return script


async def _serve_until_signal(script: Script, port: int, models: Sequence[str], max_model_len: int | None = None,
                              overflow: Literal["reject", "clamp"] = "reject") -> None:
    """Serve until SIGINT or SIGTERM (a benchmark stops it with terminate()), then exit 0."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with serve_scripted(script, port, models=models, max_model_len=max_model_len,
                                  overflow=overflow) as server:
            print(f"scripted server: ready at {server.base_url} (model {', '.join(models)})", flush=True)
            async for _ in signals:
                return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m agentloop.model.scripted", description="Run the scripted OpenAI-compatible server."
    )
    parser.add_argument("--port", type=int, default=8001, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--script", help="module:function returning replies (default: a fixed fenced code block)")
    parser.add_argument("--model", action="append", help="model name to serve (repeatable; default: scripted)")
    parser.add_argument("--max-model-len", type=int, help="context size in tokens (words); over it: vLLM's HTTP 400")
    parser.add_argument("--overflow", choices=["reject", "clamp"], default="reject",
                        help="reject: prompt + max_tokens over the context is a 400 (vLLM <= 0.9); clamp: max_tokens "
                             "is lowered and only a prompt that fills the context is a 400 (vLLM 0.3x)")
    args = parser.parse_args(argv)
    script = load_script(args.script) if args.script else fixed_reply()
    anyio.run(_serve_until_signal, script, args.port, args.model or [DEFAULT_MODEL], args.max_model_len,
              args.overflow)


if __name__ == "__main__":
    # Re-import so scripts that import agentloop.model.scripted share these classes with the server.
    from agentloop.model.scripted import main as _main

    _main()
