"""runner_overhead: attempts/s through agentloop's request path ÷ a minimal raw AsyncOpenAI loop.

Both hit the same fast scripted server (a separate process) at the same concurrency. The
agentloop side runs the real loop (`run_request`: ModelClient with retries and the concurrency
limiter, code extraction, attempt records, the batched SQLite writer); the sandbox is replaced by
an instant stub, because sandbox throughput has its own benchmark. Rounds alternate the order and
the ratio is the median of per-round ratios, so machine noise hits both sides. Then: peak RSS with 10k attempts in flight (all requests spawned at once).

What is timed, on both sides: from spawning the first request to the end of the work for the
last one, with the HTTP client already open and not yet closed (client construction and
`close()` are outside the clock on both sides). For the raw loop the end is the last response
received; for agentloop it is the store writer's exit, i.e. after its final flush, when every
attempt is committed to SQLite (checked: the store's row count equals the requests). The raw loop
has no store, so the store's whole cost, the last batch included, is charged to agentloop: that
is part of what an attempt costs. Store creation and `close()` are outside the clock. The
"own cost per attempt" line is timed the same way (up to the writer's final flush).

    python benchmarks/runner_overhead.py [--requests 4000] [--concurrency 1000] [--rounds 6]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import anyio
import openai
from _scripted import start_scripted, stop

from agentloop.loop import Context, first_messages, run_request
from agentloop.model.client import Completion, ModelClient
from agentloop.model.config import ModelConfig, SamplingParams
from agentloop.sandbox.types import ExecResult, Verdict
from agentloop.store import AttemptStore
from agentloop.strategy import Request
from agentloop.tasks.suites import load_suite


class InstantSandbox:
    async def run_suites(self, candidate: str, suites: list, timeout_s: float) -> list[ExecResult]:
        return [ExecResult(Verdict.PASSED, 0.0) for _ in suites]

    async def run_tests(self, candidate: str, tests: str, entry_point: str, timeout_s: float) -> ExecResult:
        return ExecResult(Verdict.PASSED, 0.0)

    async def run(self, program: str, timeout_s: float) -> ExecResult:
        return ExecResult(Verdict.PASSED, 0.0)


class InstantClient:
    """A model that answers at once: what is left is agentloop's own per-attempt cost."""

    async def complete(self, messages: list[dict], n: int, seed: int | None = None) -> list[Completion]:
        await anyio.sleep(0)
        return [Completion("```python\ndef f():\n    return None\n```", "stop", i, 12, "r", 100, None, 12, 0.0, 1)
                for i in range(n)]


async def own_cost_us(attempts: int, tmp: Path) -> float:
    suite, tasks = load_suite("smoke")
    store = AttemptStore.create(tmp / "own-cost")
    async with store.writer() as writer:
        ctx = Context(InstantClient(), InstantSandbox(), suite, {t.id: 1.0 for t in tasks}, writer.add, "parallel")  # type: ignore[arg-type]
        messages = [first_messages(suite, t) for t in tasks]
        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(attempts):
                tg.start_soon(run_request, ctx, Request(tasks[i % len(tasks)], (i,), 0, None), messages[i % len(tasks)])
    dt = time.perf_counter() - t0  # after the writer's final flush, as in agentloop_loop
    rows = store.count()
    store.close()
    assert rows == attempts, (rows, attempts)
    return dt / attempts * 1e6


async def raw_loop(url: str, requests: int, concurrency: int, messages: list[dict]) -> float:
    # The same client settings ModelClient uses, so only the code around the request differs.
    client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, timeout=600)
    limiter = anyio.Semaphore(concurrency)
    done = 0

    async def one() -> None:
        nonlocal done
        async with limiter:
            r = await client.chat.completions.create(model="scripted", messages=messages, n=1, max_tokens=64)
        done += len(r.choices)

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(requests):
            tg.start_soon(one)
    dt = time.perf_counter() - t0
    await client.close()
    assert done == requests
    return requests / dt


async def agentloop_loop(url: str, requests: int, concurrency: int, tmp: Path) -> float:
    suite, tasks = load_suite("smoke")
    store = AttemptStore.create(tmp / f"run-{time.monotonic_ns()}")
    cfg = ModelConfig(base_url=url, model="scripted", concurrency=concurrency)
    async with ModelClient(cfg, SamplingParams(max_tokens=64)) as client:
        async with store.writer() as writer:
            ctx = Context(client, InstantSandbox(), suite, {t.id: 1.0 for t in tasks}, writer.add, "parallel")
            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for i in range(requests):
                    task = tasks[i % len(tasks)]
                    tg.start_soon(run_request, ctx, Request(task, (i,), 0, None), first_messages(suite, task))
        # The writer has exited: its final flush is done and every attempt is committed.
        dt = time.perf_counter() - t0
    rows = store.count()
    store.close()
    assert writer.count == requests == rows, (writer.count, requests, rows)
    return requests / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--inflight", type=int, default=10_000)
    args = ap.parse_args()
    server, url = start_scripted(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    suite, tasks = load_suite("smoke")
    messages = first_messages(suite, tasks[0])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            raw, ours = [], []
            for r in range(args.rounds):  # A B, B A, ...: drift on a shared machine hits both sides
                sides = [lambda: raw.append(anyio.run(raw_loop, url, args.requests, args.concurrency, messages)),
                         lambda: ours.append(anyio.run(agentloop_loop, url, args.requests, args.concurrency, Path(tmp)))]
                for side in sides if r % 2 == 0 else sides[::-1]:
                    side()
                print(f"round {r}: raw {raw[-1]:.0f} req/s, agentloop {ours[-1]:.0f} attempts/s "
                      f"({ours[-1] / raw[-1]:.2f})", flush=True)
            print(f"agentloop's own cost per attempt (instant model and sandbox, store included): "
                  f"{anyio.run(own_cost_us, 20_000, Path(tmp)):.0f} us")
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            rate = anyio.run(agentloop_loop, url, args.inflight, args.concurrency, Path(tmp))
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{args.inflight} attempts in flight at once: {rate:.0f} attempts/s, "
                  f"peak RSS {peak:.0f} MiB (before: {rss_before:.0f} MiB; target < 1024)")
    finally:
        stop(server)
    ratio = statistics.median(o / r for o, r in zip(ours, raw))
    print(f"raw AsyncOpenAI loop: median {statistics.median(raw):.0f} req/s; agentloop: median "
          f"{statistics.median(ours):.0f} attempts/s; median of per-round ratios over {args.rounds} rounds")
    print(f"ratio runner_overhead {ratio:.3f}")


if __name__ == "__main__":
    main()
