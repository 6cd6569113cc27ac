"""soak: thousands of concurrent chains through the real run path for minutes, watching for leaks.

    python benchmarks/soak.py [--duration 600] [--chains 2000] [--pool 2] [--window 30] [--out FILE]

The same building blocks as `agentloop run` (runner.create_store, ModelClient, DockerPool with
real containers, calibrate_time_limits, the batched store writer, loop.run_request) against the
scripted server in a separate process, so its CPU is not our event loop's. `--chains` attempts are
in flight at all times: each chain worker sends a request, grades the reply in the sandbox,
records the attempt and starts the next slot until `--duration` is up (or SIGINT/SIGTERM), then
everything is cancelled the way a Ctrl-C cancels a run. The sandbox pool is the bottleneck, so
almost all chains queue for a container; the point is that they queue without leaking.

The scripted model answers the smoke suite with a fixed mix: references (passed), `return None`
(failed), 200 kB of output (failed, truncated), syntax errors (failed), infinite recursion
(error), a rare infinite loop (timeout) and 2% HTTP 500s (retried by the client).

Prints attempts/s per window; RSS, open fds, asyncio tasks and threads at the start (after
`--warmup`) and at the end (before cancelling) with growth per 1000 attempts; event-loop lag
(overshoot of a 10 ms sleep) p50/p99/max; the store's row count against what was recorded; and
the run's containers left after exit. One `target ...: PASS|FAIL (value)` line per target, then
`ratio soak_rss END/START` as the last line. A target that could not be measured is not a pass:
it prints `target ...: UNMEASURED (why)` (stopped before the warm-up ended, no attempts or no lag
samples after warm-up, containers not counted, store rows or recorded attempts not counted).
Exit status 1 when a target fails or is unmeasured.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import gc
import itertools
import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from _scripted import start_scripted, stop

HERE = Path(__file__).resolve().parent

LAG_TICK_S = 0.010
LAG_TARGET_MS = 100.0
RSS_NOISE = 1.10
"""RSS end/start above this is growth, not noise (the allocator keeps freed arenas)."""
FD_NOISE = 16
"""Open fds may differ by this much: HTTP connections to the model come and go with load."""


# --- the scripted model (runs in the server process: `--script soak:soak_script`) -----------


@functools.cache
def _smoke() -> dict[str, Any]:
    from agentloop.tasks.suites import load_suite

    return {t.entry_point: t for t in load_suite("smoke")[1]}


def _fence(body: str) -> str:
    return f"```python\n{body}```\n"


def soak_script(request: Any) -> Any:
    """A fixed mix of replies for the smoke suite, chosen by the request's index."""
    from agentloop.model.scripted import ScriptedReply

    name = re.search(r"def (\w+)\(", request.messages[-1]["content"]).group(1)  # type: ignore[union-attr]
    i = request.index
    if i % 1000 in (13, 513):  # 0.2%: never returns (the time limit kills it: timeout)
        text = _fence(f"def {name}(*args):\n    while True:\n        pass\n")
    elif i % 100 in (7, 57):  # 2%: a server error; the client retries it
        return ScriptedReply.http_error(500, "scripted outage")
    elif i % 100 in (3, 23, 43, 63, 83):  # 5%: 200 kB on stdout, then wrong (output truncated)
        text = _fence(f"def {name}(*args):\n    print('x' * 200_000)\n    return None\n")
    elif i % 100 in (11, 61):  # 2%: does not compile
        text = _fence(f"def {name}(*args):\n    return (\n")
    elif i % 100 in (17, 67):  # 2%: RecursionError (verdict error)
        text = _fence(f"def {name}(*args):\n    return {name}(*args)\n")
    elif i % 10 in (1, 2, 5, 8):  # ~40%: wrong
        text = _fence(f"def {name}(*args):\n    return None\n")
    else:  # the rest: the reference solution
        t = _smoke()[name]
        text = "Sure!\n" + _fence(f"{t.prompt}{t.reference}")
    return ScriptedReply(texts=(text,))


# --- measurements ---------------------------------------------------------------------------


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fd_kinds() -> Counter[str]:
    """Open fds by what they point at (socket, pipe, a file path, ...)."""
    kinds: Counter[str] = Counter()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        kinds[re.sub(r":\[\d+\]$", "", target)] += 1
    return kinds


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


@dataclass
class Snapshot:
    t: float
    attempts: int
    rss_mib: float
    fds: int
    tasks: int
    threads: int


@dataclass
class State:
    started: float = 0.0
    """perf_counter when the chains were launched (t=0)."""
    attempts: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    lag_t: array = field(default_factory=lambda: array("d"))
    lag_s: array = field(default_factory=lambda: array("d"))
    windows: list[dict[str, Any]] = field(default_factory=list)
    start: Snapshot | None = None
    end: Snapshot | None = None
    stop: anyio.Event = field(default_factory=anyio.Event)
    running: bool = False
    interrupted: str | None = None

    def now(self) -> float:
        return time.perf_counter() - self.started

    def snapshot(self) -> Snapshot:
        import asyncio

        return Snapshot(self.now(), self.attempts, rss_mib(), open_fds(), len(asyncio.all_tasks()),
                        threading.active_count())

    def lags_ms(self, t0: float, t1: float = float("inf")) -> list[float]:
        """Lag samples taken in [t0, t1), in ms (a slice: the reporter runs on the loop it measures)."""
        i, j = bisect.bisect_left(self.lag_t, t0), bisect.bisect_left(self.lag_t, t1)
        return [lag * 1e3 for lag in self.lag_s[i:j]]


async def lag_monitor(state: State) -> None:
    """Overshoot of a LAG_TICK_S sleep: how long a ready callback waits for the event loop."""
    while True:
        t0 = time.perf_counter()
        await anyio.sleep(LAG_TICK_S)
        t1 = time.perf_counter()
        state.lag_t.append(t1 - state.started)
        state.lag_s.append(max(0.0, t1 - t0 - LAG_TICK_S))


def count_containers(docker_client: Any, run_id: str) -> tuple[int, int, list[str]]:
    """(containers of this run or this process, other agentloop containers, their runs)."""
    from agentloop.sandbox.engine import RUN_LABEL

    ours, others = 0, []
    # sparse: the list's own data; a full list inspects each container and fails on one removed meanwhile
    for c in docker_client.containers.list(all=True, sparse=True, filters={"label": RUN_LABEL}):
        labels = c.attrs.get("Labels") or {}
        if labels.get(RUN_LABEL) == run_id or labels.get("agentloop.owner_pid") == str(os.getpid()):
            ours += 1
        else:
            others.append(labels.get(RUN_LABEL, "?"))
    return ours, len(others), sorted(set(others))


async def reporter(state: State, window: float, docker_client: Any, run_id: str) -> None:
    last_t, last_n = 0.0, 0
    for k in itertools.count(1):
        await anyio.sleep(max(0.0, k * window - state.now()))
        t, n = state.now(), state.attempts
        lags = state.lags_ms(last_t, t)
        try:
            ours: int | str = (await anyio.to_thread.run_sync(count_containers, docker_client, run_id))[0]
        except Exception as e:  # noqa: BLE001 - a Docker hiccup must not end the soak
            ours = f"?({type(e).__name__})"
        w = {"t": round(t, 1), "attempts": n, "rate": (n - last_n) / (t - last_t), "rss_mib": rss_mib(),
             "fds": open_fds(), "lag_p99_ms": pct(lags, 99), "lag_max_ms": max(lags, default=0.0),
             "containers": ours}
        state.windows.append(w)
        print(f"t={t:.0f}s attempts={n} rate={w['rate']:.1f}/s rss={w['rss_mib']:.0f}MiB fds={w['fds']} "
              f"lag_p99={w['lag_p99_ms']:.0f}ms lag_max={w['lag_max_ms']:.0f}ms containers={ours}", flush=True)
        last_t, last_n = t, n


# --- the run --------------------------------------------------------------------------------


def start_server(log_path: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    with open(log_path, "w") as log:
        # start_new_session: a terminal's Ctrl-C is ours to handle; we stop the server last
        return start_scripted("--script", "soak:soak_script", stdout=log, stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)


async def watch_signals(state: State, work: anyio.CancelScope, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    """The first SIGINT/SIGTERM ends the soak as the deadline would (or cancels the start-up)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if state.interrupted:
                print(f"{name} again: already stopping", flush=True)
                continue
            state.interrupted = f"{name} at t={state.now():.0f}s" if state.running else f"{name} during start-up"
            print(f"{state.interrupted}: stopping", flush=True)
            state.stop.set()
            if not state.running:
                work.cancel()


async def soak(args: argparse.Namespace, url: str, runs_dir: Path, state: State, out: dict[str, Any]) -> None:
    """Signals first, then the run; afterwards the store and the engine are checked."""
    from agentloop.sandbox import engine
    from agentloop.store import DB_NAME

    out.update(rss_before_mib=rss_mib(), fds_before=open_fds())
    kinds_before = fd_kinds()
    docker_client = None
    with anyio.CancelScope() as work:
        async with anyio.create_task_group() as outer:
            await outer.start(watch_signals, state, work)
            docker_client = await anyio.to_thread.run_sync(engine.connect)
            try:
                await drive(args, url, runs_dir, state, out, outer, docker_client)
            finally:
                state.running = False
                outer.cancel_scope.cancel()
    if docker_client is not None:
        await anyio.to_thread.run_sync(docker_client.close)
    # Every resource of the run is released here (after the loop ran the transports' close
    # callbacks and a collection): what is left now stays for good.
    await anyio.sleep(0.5)
    gc.collect()
    out["fds_after_teardown"] = open_fds()
    out["fds_left_after_teardown"] = dict(fd_kinds() - kinds_before)
    out["rss_after_teardown_mib"] = rss_mib()
    run_dir = Path(out["run_dir"]) if "run_dir" in out else None
    if run_dir is not None and (run_dir / DB_NAME).exists():
        with sqlite3.connect(run_dir / DB_NAME) as conn:
            out["store_rows"] = conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
    try:  # a failed count leaves leaked_containers unset: the target is UNMEASURED, not passed
        docker_client = await anyio.to_thread.run_sync(engine.connect)
        try:
            run_id = out.get("run_id", "")
            ours, others, other_runs = await anyio.to_thread.run_sync(count_containers, docker_client, run_id)
            if ours:  # removal may be slow, or they leaked: look again
                out["leaked_containers_first_look"] = ours
                await anyio.sleep(5)
                ours, others, other_runs = await anyio.to_thread.run_sync(count_containers, docker_client, run_id)
            out.update(leaked_containers=ours, other_agentloop_containers=others, other_runs=other_runs)
        finally:
            await anyio.to_thread.run_sync(docker_client.close)
    except Exception as e:  # noqa: BLE001 - Docker gone at the end: say so in the report
        out["containers_error"] = f"{type(e).__name__}: {e}"


async def drive(args: argparse.Namespace, url: str, runs_dir: Path, state: State, out: dict[str, Any],
                outer: Any, docker_client: Any) -> None:
    """What `agentloop run` does (runner.run/_execute), with `--chains` chain workers instead of a
    fixed plan: client check, store, pool, calibration, batched writer, run_request per attempt."""
    from agentloop import logs
    from agentloop.attempt import Attempt, AttemptKind
    from agentloop.config import RunConfig, validate
    from agentloop.loop import Context, first_messages, run_request
    from agentloop.model.client import ModelClient
    from agentloop.model.config import ModelConfig, SamplingParams
    from agentloop.runner import create_store, new_run_dir
    from agentloop.sandbox.config import SandboxConfig
    from agentloop.sandbox.docker_pool import DockerPool
    from agentloop.strategy import PARALLEL, Request
    from agentloop.tasks.suites import load_suite
    from agentloop.verify import calibrate_time_limits

    n = args.samples_per_request
    workers = max(1, args.chains // n)
    cfg = validate(RunConfig(
        suite="smoke", samples=1, runs_dir=str(runs_dir),
        model=ModelConfig(base_url=url, model="scripted", concurrency=args.concurrency or workers,
                          samples_per_request=n),
        sampling=SamplingParams(seed=0),
        sandbox=SandboxConfig(pool_size=args.pool),
    ))
    suite, tasks = await anyio.to_thread.run_sync(load_suite, cfg.suite)
    messages = {t.id: first_messages(suite, t) for t in tasks}
    run_dir, run_id = new_run_dir(cfg)
    out.update(run_id=run_id, run_dir=str(run_dir), workers=workers, chains=workers * n, concurrency=cfg.model.concurrency)

    async def record(a: Attempt) -> None:
        await writer.add(a)
        state.attempts += 1
        state.kinds[a.kind.value if a.kind is AttemptKind.INFRA_ERROR else a.verdict.value] += 1

    slots = itertools.count()

    async def chain() -> None:
        for k in slots:  # shared: each slot is taken once
            task = tasks[k % len(tasks)]
            first = (k // len(tasks)) * n
            await run_request(ctx, Request(task, tuple(range(first, first + n)), 0, k), messages[task.id])

    async def control(chains: anyio.CancelScope) -> None:
        with anyio.move_on_after(args.warmup):
            await state.stop.wait()
        if not state.stop.is_set():
            state.start = state.snapshot()
        with anyio.move_on_after(args.duration - args.warmup):
            await state.stop.wait()
        state.end = state.snapshot()
        out["t_stop"] = time.perf_counter()
        chains.cancel()  # what a Ctrl-C does to `agentloop run`: every chain cancelled mid-flight

    async with ModelClient(cfg.model, cfg.sampling) as client:
        await client.check()
        store = await anyio.to_thread.run_sync(create_store, run_dir, run_id, cfg, tasks, suite)
        try:
            with logs.to_file(run_dir / "log.jsonl"):
                t0 = time.perf_counter()
                async with DockerPool.start(cfg.sandbox, run_id) as pool:
                    limits = await calibrate_time_limits(pool, tasks, suite, cfg.sandbox.image)
                    await anyio.to_thread.run_sync(store.put_tasks, tasks, limits)
                    print(f"start-up: pool of {args.pool} in {pool.stats.startup_s:.2f} s, calibration "
                          f"{time.perf_counter() - t0 - pool.stats.startup_s:.2f} s; time limits "
                          f"{min(limits.values()):g}-{max(limits.values()):g} s", flush=True)
                    async with store.writer() as writer:
                        ctx = Context(client, pool, suite, limits, record, PARALLEL)
                        state.started = time.perf_counter()
                        state.running = True
                        outer.start_soon(lag_monitor, state)
                        outer.start_soon(reporter, state, args.window, docker_client, run_id)
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(control, tg.cancel_scope)
                            for _ in range(workers):
                                tg.start_soon(chain)
                        out["recorded"] = writer.count
                    out["teardown_writer_s"] = time.perf_counter() - out["t_stop"]
                    out["pool_stats"] = vars(pool.stats).copy()
                out["teardown_s"] = time.perf_counter() - out["t_stop"]
        finally:
            store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    ap.add_argument("--chains", type=int, default=2000, help="attempts in flight at all times (default 2000)")
    ap.add_argument("--pool", type=int, default=max(2, os.cpu_count() or 2), help="sandbox containers (default: CPU count)")
    ap.add_argument("--window", type=float, default=30.0, help="seconds per attempts/s line (default 30)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds before the start snapshot (default: min(30, duration/3))")
    ap.add_argument("--concurrency", type=int, default=None, help="model requests in flight (default: one per chain)")
    ap.add_argument("--samples-per-request", type=int, default=1, help="chains per request (n); default 1")
    ap.add_argument("--runs-dir", type=Path, default=None, help="keep the run dir here (default: a temporary dir)")
    ap.add_argument("--out", type=Path, default=None, help="write a JSON summary here")
    args = ap.parse_args()
    if args.warmup is None:
        args.warmup = min(30.0, args.duration / 3)
    args.warmup = min(args.warmup, args.duration)
    state, out = State(), {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="agentloop-soak-") as tmp:
        runs_dir = args.runs_dir or Path(tmp) / "runs"
        try:
            server, url = start_server(Path(tmp) / "scripted-server.log")
            try:
                print(f"soak: {args.chains} chains in flight (model concurrency {args.concurrency or args.chains}), "
                      f"pool {args.pool}, {args.duration:g} s (warm-up "
                      f"{args.warmup:g} s, window {args.window:g} s); scripted server pid {server.pid} at {url}",
                      flush=True)
                anyio.run(soak, args, url, runs_dir, state, out)
            finally:
                stop(server)
        except KeyboardInterrupt:  # before our own signal handling was in place: no container yet
            print("interrupted before the soak started", file=sys.stderr)
            return 130
    return summarize(args, state, out)


def summarize(args: argparse.Namespace, state: State, out: dict[str, Any]) -> int:
    s, e = state.start, state.end
    nan = float("nan")
    if state.interrupted:
        print(f"interrupted: {state.interrupted}")
    steady = s is not None and e is not None
    if not steady:
        print("stopped before the warm-up ended: no steady-state numbers")
        s = e = e or Snapshot(0.0, state.attempts, nan, 0, 0, 0)
    assert s is not None and e is not None
    span, done = e.t - s.t, e.attempts - s.attempts
    per_k = 1000 / done if done else nan
    whole, warm, lags = state.lags_ms(0.0, e.t or float("inf")), state.lags_ms(0.0, s.t), state.lags_ms(s.t, e.t)
    print(f"attempts: {state.attempts} recorded in {e.t:.0f} s ({state.attempts / e.t if e.t else nan:.1f}/s); "
          f"after warm-up {done} in {span:.0f} s ({done / span if span else nan:.1f}/s); "
          f"verdicts {dict(sorted(state.kinds.items()))}")
    if "pool_stats" in out:
        print(f"pool: {out['pool_stats']}")
    print(f"store: {out.get('store_rows')} rows for {out.get('recorded')} recorded attempts "
          f"({'all there' if out.get('store_rows') == out.get('recorded') else 'MISMATCH'})")
    print(f"RSS: start {s.rss_mib:.1f} MiB, end {e.rss_mib:.1f} MiB ({e.rss_mib - s.rss_mib:+.1f} MiB, "
          f"{(e.rss_mib - s.rss_mib) * per_k:+.2f} MiB per 1000 attempts); after teardown "
          f"{out.get('rss_after_teardown_mib', nan):.1f} MiB (before the run: {out.get('rss_before_mib', nan):.1f} MiB)")
    print(f"open fds: start {s.fds}, end {e.fds} ({e.fds - s.fds:+d}, {(e.fds - s.fds) * per_k:+.2f} per 1000 attempts); "
          f"after teardown {out.get('fds_after_teardown')} (before the run: {out.get('fds_before')}; "
          f"new since: {out.get('fds_left_after_teardown') or 'none'})")
    print(f"asyncio tasks: start {s.tasks}, end {e.tasks}; threads: start {s.threads}, end {e.threads}")
    print(f"event-loop lag (overshoot of {LAG_TICK_S * 1e3:g} ms sleeps): whole run ({len(whole)}) p50 "
          f"{pct(whole, 50):.1f} ms, p99 {pct(whole, 99):.1f} ms, max {max(whole, default=nan):.1f} ms; "
          f"warm-up ({len(warm)}) p99 {pct(warm, 99):.1f} ms, max {max(warm, default=nan):.1f} ms; "
          f"after warm-up ({len(lags)}) p99 {pct(lags, 99):.1f} ms, max {max(lags, default=nan):.1f} ms")
    stalls = [lag for lag in whole if lag >= LAG_TARGET_MS]
    print(f"event loop late by >= {LAG_TARGET_MS:g} ms: {len(stalls)} times, {sum(stalls) / 1e3:.1f} s in all "
          f"({sum(stalls) / 10 / e.t if e.t else nan:.2f}% of the run; a stalled loop takes few samples)")
    if "teardown_s" in out:
        print(f"teardown: {out['teardown_s']:.2f} s (chains cancelled and store flushed in "
              f"{out['teardown_writer_s']:.2f} s, then the containers removed)")
    if out.get("leaked_containers_first_look"):
        print(f"containers of this run right after exit: {out['leaked_containers_first_look']} (looked again after 5 s)")
    print(f"containers of this run after exit: {out.get('leaked_containers')}; other agentloop containers on the "
          f"engine (other processes): {out.get('other_agentloop_containers')}")
    rss_ratio = e.rss_mib / s.rss_mib if steady else nan
    p99 = pct(whole, 99)
    # Why a steady-state target cannot be judged (None: it can). A leak check needs a start and an
    # end snapshot and attempts between them.
    no_steady = ("stopped before the warm-up ended: no start snapshot" if not steady
                 else "no attempts completed after warm-up" if done <= 0 else None)
    rss_why = no_steady or ("RSS not read" if math.isnan(rss_ratio) else None)
    lag_why = ("no lag samples after warm-up" if not lags else None) if steady else no_steady
    leaked = out.get("leaked_containers")
    leaked_why = None if isinstance(leaked, int) else \
        f"containers not counted ({out.get('containers_error') or 'the run did not get that far'})"
    rows, recorded = out.get("store_rows"), out.get("recorded")
    store_why = ("recorded attempts not counted (the writer did not close)" if recorded is None
                 else "store rows not counted (no store file)" if rows is None else None)
    # (name, passed, value shown, why it is unmeasured or None)
    targets: list[tuple[str, bool, str, str | None]] = [
        (f"event-loop lag p99 < {LAG_TARGET_MS:g} ms", p99 < LAG_TARGET_MS, f"{p99:.0f} ms", lag_why),
        ("leaked containers = 0", leaked == 0, f"{leaked}", leaked_why),
        ("store holds every recorded attempt", rows == recorded, f"{rows}/{recorded}", store_why),
        (f"RSS end/start <= {RSS_NOISE:g}", rss_ratio <= RSS_NOISE, f"{rss_ratio:.3f}", rss_why),
        (f"open fds growth <= {FD_NOISE}", e.fds - s.fds <= FD_NOISE, f"{e.fds - s.fds:+d}", no_steady),
    ]
    results: dict[str, str] = {}
    for name, ok, value, why in targets:
        results[name] = "UNMEASURED" if why else "PASS" if ok else "FAIL"
        print(f"target {name}: " + (f"UNMEASURED ({why})" if why else f"{results[name]} ({value})"))
    if args.out:
        out.update(start=vars(s), end=vars(e), windows=state.windows, verdicts=dict(state.kinds),
                   lag_ms={"p50": pct(whole, 50), "p99": p99, "max": max(whole, default=None),
                           "steady_p99": pct(lags, 99), "steady_max": max(lags, default=None),
                           "warmup_p99": pct(warm, 99), "warmup_max": max(warm, default=None)},
                   interrupted=state.interrupted, targets=results)
        args.out.write_text(json.dumps(out, indent=1, default=str))
    print(f"ratio soak_rss {rss_ratio:.3f}")
    return 0 if all(r == "PASS" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
