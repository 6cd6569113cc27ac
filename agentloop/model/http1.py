"""The minimal HTTP/1.1 the scripted server and the fault proxy speak: request heads with
Content-Length bodies and keep-alive, and replies in vLLM's JSON error shape. Both need to inject
faults at the byte level, which a full HTTP server would not let them do."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import httpx
import structlog
from anyio.abc import Listener, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

log = structlog.get_logger()

MAX_HEAD_BYTES = 64 * 1024
CLOSED = (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
"""What a client hanging up looks like."""
_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError",
                502: "BadGatewayError", 503: "ServiceUnavailableError"}


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    headers: dict[str, str]
    """Lower-case names."""
    keep_alive: bool
    length: int
    """Content-Length of the body that follows."""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


async def read_head(reader: BufferedByteReceiveStream, stream: SocketStream) -> RequestHead | None:
    """The next request's head; None (after answering 431/501) when the connection must close."""
    try:
        head = await reader.receive_until(b"\r\n\r\n", MAX_HEAD_BYTES)
    except anyio.DelimiterNotFound:
        await stream.send(error_reply(431, "request head too large"))
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = [*lines[0].split(" "), "", ""][:3]
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    if "chunked" in headers.get("transfer-encoding", ""):
        await stream.send(error_reply(501, "chunked request bodies are not supported"))
        return None
    keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    return RequestHead(method, target, headers, keep_alive, int(headers.get("content-length") or 0))


async def serve_connection(stream: SocketStream, serve: Callable[[SocketStream], Awaitable[None]], name: str) -> None:
    """Run `serve` on one connection; a client hanging up is normal, a bug must not take the
    listener down."""
    async with stream:
        try:
            await serve(stream)
        except CLOSED:
            pass
        except Exception:
            log.exception("connection handler failed", server=name)


def head(status: int, headers: Sequence[tuple[str, str]], length: int, reason: str | None = None) -> bytes:
    reason = reason or httpx.codes.get_reason_phrase(status) or "Error"
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers), f"content-length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def response(status: int, payload: bytes) -> bytes:
    """A JSON reply."""
    return head(status, [("content-type", "application/json")], len(payload)) + payload


def error_reply(status: int, message: str) -> bytes:
    """vLLM's error shape: {"error": {"message", "type", "param", "code"}}."""
    kind = _ERROR_TYPES.get(status, "InternalServerError")
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return response(status, json.dumps(body).encode())


@asynccontextmanager
async def serving(listener: Listener[SocketStream],
                  handle: Callable[[SocketStream], Awaitable[None]]) -> AsyncIterator[None]:
    """Serve `handle` on every connection of `listener` until the block ends."""
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield
        finally:
            tg.cancel_scope.cancel()
