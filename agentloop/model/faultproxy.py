"""A fault-injecting HTTP proxy between agentloop and a real OpenAI-compatible server.

Why: a run of many thousands of requests will meet a flaky model server (500s, 429s from a
gateway, dropped connections, stalls, replies cut short) and restarts. The proxy puts those faults
in front of a real server, on a deterministic schedule, so a test can check that every one of them
ends as a retry or an `infra_error` attempt, never a wrong answer, and that nothing is lost or
recorded twice. By default only `POST /v1/chat/completions` gets faults; everything else (e.g.
`GET /v1/models`) passes through untouched.

    with fault_proxy_in_thread("http://127.0.0.1:8000", Schedule.parse("pass*2,500")) as proxy:
        ...  # point the client at proxy.base_url; every 3rd chat request gets a 500
    proxy.counts  # Counter({'pass': 8, '500': 4})

A schedule token is one of: `pass`; an HTTP status `NNN` (answered with a vLLM-style JSON error
body); `drop` (read the request, close without answering); `drop-early` (close right after the
request head, before reading its body); `truncate` (forward, then send the upstream's headers with
its real Content-Length and half the body, and close); `stall:S` (wait S seconds, then drop);
`slow:S` (wait S seconds, then pass). `TOKEN*N` repeats a token.

CLI: `python -m agentloop.model.faultproxy --upstream http://127.0.0.1:8000 --port 8001
--schedule "pass*2,500,drop,slow:2"`; point `agentloop run --base-url http://127.0.0.1:8001/v1`
at it. The proxy speaks HTTP/1.1 with keep-alive and Content-Length request bodies (what the
openai client sends); responses are forwarded whole, so a streamed (SSE) reply arrives at once.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import signal
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio
import httpx
import structlog
from anyio.abc import SocketAttribute, SocketStream
from anyio.from_thread import start_blocking_portal
from anyio.streams.buffered import BufferedByteReceiveStream

from agentloop.model.http1 import error_reply, head, read_head, serve_connection, serving

log = structlog.get_logger()

FaultKind = Literal["pass", "status", "drop", "drop-early", "truncate"]
CHAT_PATH = "/v1/chat/completions"
_MAX_EVENTS = 100_000
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
               "host", "content-length"}


@dataclass(frozen=True)
class Fault:
    """What the proxy does to one request (after waiting `stall_s`)."""

    kind: FaultKind = "pass"
    status: int = 500
    """For kind "status": the HTTP status of the error reply."""
    stall_s: float = 0.0

    @property
    def label(self) -> str:
        """The counter key: pass, slow, NNN, drop, drop-early, stall, truncate."""
        if self.kind == "status":
            return str(self.status)
        if self.stall_s and self.kind in ("pass", "drop"):
            return "slow" if self.kind == "pass" else "stall"
        return self.kind


PASS = Fault()


def parse_fault(token: str) -> Fault:
    """One schedule token (see the module docstring) -> Fault; ValueError names a bad token."""
    name, _, arg = token.strip().partition(":")
    if name.isdigit() and not arg and 400 <= int(name) <= 599:
        return Fault("status", status=int(name))
    if name in ("pass", "drop", "drop-early", "truncate") and not arg:
        return Fault(name)  # type: ignore[arg-type]
    if name in ("stall", "slow") and arg:
        try:
            seconds = float(arg)
        except ValueError:
            seconds = -1.0
        if seconds >= 0:
            return Fault("drop" if name == "stall" else "pass", stall_s=seconds)
    raise ValueError(f"bad fault {token!r}: expected pass, an HTTP status 400-599, drop, drop-early, "
                     "truncate, stall:SECONDS or slow:SECONDS")


def parse_pattern(spec: str) -> tuple[Fault, ...]:
    """"pass*2,500,drop" -> (PASS, PASS, 500, drop): comma-separated tokens, `*N` repeats one."""
    faults: list[Fault] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        token, _, times = part.partition("*")
        if times and not (times.isdigit() and int(times) >= 1):
            raise ValueError(f"bad repeat in {part!r}: expected TOKEN*N with N >= 1")
        faults += [parse_fault(token)] * (int(times) if times else 1)
    return tuple(faults)


@dataclass(frozen=True)
class ProxyRequest:
    """A request on a faulted path, as a rule sees it (after its head, before its body)."""

    index: int
    """0-based count of requests on faulted paths so far (retries count too)."""
    method: str
    path: str
    headers: dict[str, str]


Rule = Callable[[ProxyRequest], Fault]
"""Decides each faulted-path request's fault; `Schedule` is the declarative one."""


@dataclass(frozen=True)
class Schedule:
    """Request i gets pattern[i] (cycled, or PASS past the end), or, with `rate`, a seeded draw.

    Deterministic by request index, so a rerun with the same arrival order gets the same faults.
    """

    pattern: tuple[Fault, ...] = ()
    cycle: bool = True
    """Repeat the pattern forever; False: requests past its end pass (a burst of faults, then calm)."""
    rate: float | None = None
    """Random mode: each request gets a fault with this probability, drawn from `pattern`."""
    seed: int = 0

    @classmethod
    def parse(cls, spec: str, *, cycle: bool = True, rate: float | None = None, seed: int = 0) -> Schedule:
        return cls(parse_pattern(spec), cycle=cycle, rate=rate, seed=seed)

    def __call__(self, request: ProxyRequest) -> Fault:
        if not self.pattern:
            return PASS
        i = request.index
        if self.rate is not None:
            rng = random.Random(f"{self.seed}:{i}")  # per index: independent of earlier draws
            return rng.choice(self.pattern) if rng.random() < self.rate else PASS
        if not self.cycle and i >= len(self.pattern):
            return PASS
        return self.pattern[i % len(self.pattern)]


@dataclass(frozen=True)
class ProxyEvent:
    """What happened to one faulted-path request (for assertions in tests)."""

    index: int
    fault: str
    """The fault's label."""
    body_sha: str | None
    """Short hash of the request body: a client's retries of one request share it (None: unread)."""
    upstream_status: int | None
    """The upstream's status when the request was forwarded (None: not forwarded or no answer)."""
    answered: int | None
    """The status of a reply the client got in full (None: dropped or truncated)."""


@dataclass
class FaultProxy:
    """A running proxy; `base_url` ends in /v1 like vLLM's. Counters are for tests and the CLI."""

    upstream: str
    """The upstream's origin (scheme://host:port); request paths are forwarded unchanged."""
    rule: Rule = field(default_factory=Schedule)
    """Replace it at any time (e.g. `proxy.rule = Schedule()` to end the chaos)."""
    fault_paths: tuple[str, ...] = (CHAT_PATH,)
    """POST requests to these paths get faults; all other requests pass through."""
    host: str = "127.0.0.1"
    port: int = 0
    connections: int = field(default=0, init=False)
    """Client connections accepted (keep-alive: many requests per connection)."""
    requests: int = field(default=0, init=False)
    """Every request received, on any path."""
    faultable: int = field(default=0, init=False)
    """Requests on faulted paths (the next ProxyRequest.index)."""
    counts: Counter[str] = field(default_factory=Counter, init=False)
    """Faulted-path requests per fault label ("pass", "500", "drop", ...)."""
    upstream_errors: int = field(default=0, init=False)
    """Forwarded requests the upstream did not answer (the client got a 502)."""
    events: deque[ProxyEvent] = field(default_factory=lambda: deque(maxlen=_MAX_EVENTS), init=False)
    _http: httpx.AsyncClient | None = field(default=None, init=False, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def injected(self) -> dict[str, int]:
        """Faults injected per label: everything but plain passes (slow passes included)."""
        return {k: v for k, v in self.counts.items() if k != "pass" and v}

    @property
    def failures(self) -> int:
        """Requests whose upstream answer the client did not get (each costs the client a try)."""
        return sum(v for k, v in self.counts.items() if k not in ("pass", "slow"))

    def summary(self) -> dict[str, Any]:
        return {"connections": self.connections, "requests": self.requests, "faultable": self.faultable,
                "counts": dict(self.counts), "failures": self.failures, "upstream_errors": self.upstream_errors}

    async def handle(self, stream: SocketStream) -> None:
        """Serve one keep-alive client connection until either side closes it."""
        self.connections += 1
        await serve_connection(stream, self._serve_connection, "fault proxy")

    async def _serve_connection(self, stream: SocketStream) -> None:
        reader = BufferedByteReceiveStream(stream)
        while (req := await read_head(reader, stream)) is not None:
            method, target, headers, length = req.method, req.target, req.headers, req.length
            self.requests += 1
            if method == "POST" and req.path in self.fault_paths:
                request = ProxyRequest(self.faultable, method, req.path, headers)
                self.faultable += 1
                fault = self.rule(request)
                self.counts[fault.label] += 1
                if fault.kind == "drop-early":
                    self.events.append(ProxyEvent(request.index, fault.label, None, None, None))
                    return
                body = await reader.receive_exactly(length) if length else b""
                if not await self._faulted(stream, request.index, fault, method, target, headers, body):
                    return
            else:
                body = await reader.receive_exactly(length) if length else b""
                head_out, payload, _ = await self._forward(method, target, headers, body)
                await stream.send(head_out + payload)
            if not req.keep_alive:
                return

    async def _faulted(self, stream: SocketStream, index: int, fault: Fault, method: str, target: str,
                       headers: dict[str, str], body: bytes) -> bool:
        """Apply `fault` to one request; False when the connection must close."""
        sha = hashlib.sha256(body).hexdigest()[:16]
        if fault.stall_s:
            await anyio.sleep(fault.stall_s)
        if fault.kind == "drop":
            self.events.append(ProxyEvent(index, fault.label, sha, None, None))
            return False
        if fault.kind == "status":
            await stream.send(error_reply(fault.status, f"fault proxy: injected HTTP {fault.status}"))
            self.events.append(ProxyEvent(index, fault.label, sha, None, fault.status))
            return True
        head, payload, status = await self._forward(method, target, headers, body)
        if fault.kind == "truncate" and status is not None:  # the real Content-Length, half the body
            await stream.send(head + payload[: len(payload) // 2])
            self.events.append(ProxyEvent(index, fault.label, sha, status, None))
            return False
        await stream.send(head + payload)
        self.events.append(ProxyEvent(index, fault.label, sha, status, status or 502))
        return True

    async def _forward(self, method: str, target: str, headers: dict[str, str],
                       body: bytes) -> tuple[bytes, bytes, int | None]:
        """(reply head, reply body, upstream status): the upstream's reply, or a 502 (status None)."""
        assert self._http is not None, "start the proxy with serve_fault_proxy()"
        sent = {k: v for k, v in headers.items() if k not in _HOP_BY_HOP}
        try:
            request = self._http.build_request(method, target, headers=sent, content=body)
            response = await self._http.send(request, stream=True)
            try:
                payload = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
        except httpx.HTTPError as e:
            self.upstream_errors += 1
            reply = error_reply(502, f"fault proxy: upstream {self.upstream} did not answer ({type(e).__name__}: {e})")
            end = reply.index(b"\r\n\r\n") + 4
            return reply[:end], reply[end:], None
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw]
        kept = [(k, v) for k, v in raw if k.lower() not in _HOP_BY_HOP]
        return head(response.status_code, kept, len(payload), response.reason_phrase), payload, response.status_code


def upstream_origin(url: str) -> str:
    """"http://host:8000/v1" -> "http://host:8000": the proxy forwards paths as they come."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"bad upstream URL {url!r}: expected http://HOST:PORT")
    return f"{parts.scheme}://{parts.netloc}"


@contextlib.asynccontextmanager
async def serve_fault_proxy(
    upstream: str, rule: Rule | None = None, port: int = 0, *, host: str = "127.0.0.1",
    fault_paths: Sequence[str] = (CHAT_PATH,),
) -> AsyncIterator[FaultProxy]:
    """Run the proxy in the current event loop for the duration of the block."""
    origin = upstream_origin(upstream)
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    proxy = FaultProxy(origin, rule or Schedule(), tuple(fault_paths), host, listener.extra(SocketAttribute.local_port))
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    timeout = httpx.Timeout(None, connect=10.0)  # the client behind the proxy has its own timeout
    async with httpx.AsyncClient(base_url=origin, limits=limits, timeout=timeout) as http:
        proxy._http = http
        async with serving(listener, proxy.handle):
            yield proxy


@contextlib.contextmanager
def fault_proxy_in_thread(
    upstream: str, rule: Rule | None = None, port: int = 0, **kwargs: Any
) -> Iterator[FaultProxy]:
    """The same proxy on its own event loop in a background thread, for synchronous tests."""
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(
        serve_fault_proxy(upstream, rule, port, **kwargs)
    ) as proxy:
        yield proxy


async def _serve_until_signal(upstream: str, rule: Rule, port: int, fault_paths: Sequence[str]) -> None:
    """Serve until SIGINT or SIGTERM, then print the counters as one JSON line."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with serve_fault_proxy(upstream, rule, port, fault_paths=fault_paths) as proxy:
            print(f"fault proxy: ready at {proxy.base_url} -> {proxy.upstream}", flush=True)
            async for _ in signals:
                break
        print(f"fault proxy: {json.dumps(proxy.summary())}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m agentloop.model.faultproxy",
        description="Put scheduled faults (errors, drops, stalls, truncated replies) in front of an "
                    "OpenAI-compatible server.",
    )
    parser.add_argument("--upstream", required=True, help="the real server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--port", type=int, default=8001, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--schedule", default="",
                        help='comma-separated faults, e.g. "pass*2,500,429,drop,drop-early,truncate,stall:5,slow:2"')
    parser.add_argument("--once", action="store_true", help="apply the schedule once, then pass everything")
    parser.add_argument("--rate", type=float, help="random mode: fault probability per request, drawn from --schedule")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random mode")
    parser.add_argument("--path", action="append", help=f"POST path that gets faults (repeatable; default {CHAT_PATH})")
    args = parser.parse_args(argv)
    try:
        schedule = Schedule.parse(args.schedule, cycle=not args.once, rate=args.rate, seed=args.seed)
        upstream = upstream_origin(args.upstream)
    except ValueError as e:
        parser.error(str(e))
    if args.rate is not None and not schedule.pattern:
        parser.error("--rate draws its faults from --schedule, which is empty")
    anyio.run(_serve_until_signal, upstream, schedule, args.port, args.path or [CHAT_PATH])


if __name__ == "__main__":
    main()
