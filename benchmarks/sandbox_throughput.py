"""Sandbox throughput against bare host subprocesses and a host fork server, on HumanEval+ programs.

    python benchmarks/sandbox_throughput.py [--data PATH] [--parallel P] [--timeout S] [--rounds R] [--forkserver-pidns]

Two workloads, each run three ways with the same parallelism P:
  typical  every task with a wrong candidate (`return None`), plus the reference for every third
  heavy    every reference solution with its full tests

Sides:
  bare        `python3 -` per program (the real interpreter binary, not a pyenv shim), program on
              stdin (tests appended to the candidate, one process), with the same single-threaded
              BLAS settings as the sandbox.
  forkserver  the sandbox's own executor (agentloop/sandbox/executor) started on the host without
              Docker, P of them: `python3 -m agentloop_executor --scratch DIR` (the package is
              reached through a symlink named as in the container, so the server imports exactly
              what a container's does, not the agentloop package; see FORK_SERVER_BOOT for the
              one module added so that numpy 2 on the host loads what numpy 1 in the image does),
              the container's environment (SANDBOX_ENV), a scratch dir per server under a
              temporary dir, the host's interpreter (sys.executable). Same pre-imports,
              same fork-per-job grading in two processes, same frames; spoken over the process's
              pipes by HostForkServer below. No isolation at all: trusted programs only.
              One host artifact: outside a container the executor finds a job's processes by
              scanning all of /proc (job_stats), at least twice per job, and the host has far
              more processes than a container; `--forkserver-pidns` starts each server as PID 1
              of its own PID namespace with its own /proc (`unshare --pid --fork --mount-proc`,
              no per-job cost) so it sees only its jobs, as in a container.
  sandbox     `DockerPool.run_tests` (the grading path) on a warm pool of P containers.
Start-up of the pool and of the fork servers is reported separately, not in the rates. Rounds
alternate the order (bare forkserver sandbox, then sandbox forkserver bare, ...), so drift on a
shared machine hits every side; rates are over all rounds.

Per side the mean per-job latency seen by the client is printed; for the two executor sides also
the executor's own `duration_s` and `cpu_s` of the job, and the difference (latency - duration_s:
framing, transport, fork/wipe bookkeeping and scheduling outside the job's measured time), which
is where Docker's attach stream shows up.

Verdicts must agree: in every round, bare, forkserver and sandbox must agree on passed / not
passed, and forkserver and sandbox (the same executor) on the exact verdict. Any disagreement in
a workload is printed (`MISMATCH ...`) and voids every ratio of that workload: its line reads
`ratio NAME void` and the exit status is 1.

The last four lines are `ratio ...` lines:
  ratio sandbox_isolation_heavy X   sandbox rate / forkserver rate, heavy     (target >= 0.8)
  ratio sandbox_isolation X         sandbox rate / forkserver rate, typical   (target >= 0.8)
  ratio sandbox_heavy X             sandbox rate / bare rate, heavy
  ratio sandbox_throughput X        sandbox rate / bare rate, typical
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from agentloop.sandbox import DockerPool, SandboxConfig, executor
from agentloop.sandbox.docker_pool import EXECUTOR_DIR, READY_TIMEOUT_S, SANDBOX_ENV

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "humanevalplus-v0.1.10.jsonl.gz"
BROKEN = {"HumanEval/32"}  # its test fails upstream in this format
WRONG_BODY = "    return None\n"
SIDES = ("bare", "forkserver", "sandbox")


@dataclass(frozen=True)
class Program:
    name: str
    candidate: str
    tests: str
    entry_point: str

    @property
    def text(self) -> str:
        """The single-process program the bare baseline runs."""
        return f"{self.candidate}\n\n{self.tests}\n\ncheck({self.entry_point})\n"


def load_programs(path: Path) -> tuple[list[Program], list[Program]]:
    """(typical, heavy) workloads."""
    with gzip.open(path, "rt") as f:
        tasks = [json.loads(line) for line in f if line.strip()]

    def program(t: dict, kind: str, body: str) -> Program:
        return Program(f"{t['task_id']}:{kind}", t["prompt"] + body, t["test"], t["entry_point"])

    typical, heavy = [], []
    for i, t in enumerate(tasks):  # file order: i is the task number, "every third" = 0, 3, 6, ...
        if t["task_id"] in BROKEN:
            continue
        ref = program(t, "ref", t["canonical_solution"])
        typical.append(program(t, "wrong", WRONG_BODY))
        if i % 3 == 0:
            typical.append(ref)
        heavy.append(ref)
    return typical, heavy


@dataclass(frozen=True)
class Outcome:
    verdict: str
    duration_s: float | None = None
    """The executor's own measure of the job (None for the bare side)."""
    cpu_s: float | None = None


# The sandbox sets these too: numpy's BLAS thread pools cost start-up time and fight over 2 cores.
HOST_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


async def host_run(text: str, timeout_s: float) -> Outcome:
    """One bare `python3 -` on the host: passed, failed or timeout."""
    async with await anyio.open_process(
        [sys.executable, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=HOST_ENV
    ) as proc:
        assert proc.stdin is not None
        with anyio.move_on_after(timeout_s) as scope:
            await proc.stdin.send(text.encode())
            await proc.stdin.aclose()
            code = await proc.wait()
        if scope.cancelled_caught:
            proc.kill()
            await proc.wait()
            return Outcome("timeout")
    return Outcome("passed" if code == 0 else "failed")


# --- the host fork server: the sandbox's executor without Docker ------------------------------


FORK_SERVER_BOOT = """\
import runpy, sys
sys.path.insert(0, {shim!r})
try:
    import numpy.random  # numpy >= 2 imports it lazily; numpy 1.x (the image's) with `import numpy`
except Exception:
    pass
runpy.run_module("agentloop_executor", run_name="__main__", alter_sys=True)
"""
"""`python3 -m agentloop_executor`, plus numpy.random loaded before the executor starts. The
executor pre-imports `numpy`, and the candidate's process reseeds `numpy.random` after each fork;
with numpy 1.x (the sandbox image) `import numpy` already loaded numpy.random, with numpy >= 2
(this venv) it is loaded lazily, so without this every host job would import it after the fork
(~12 ms CPU per job here), which no container job does."""


class HostForkServer:
    """One executor process on the host, speaking the executor's length-prefixed JSON frames over
    its stdin/stdout pipes (what DockerPool's _Worker does over a container's attach stream)."""

    def __init__(self, proc: Process) -> None:
        self._proc = proc
        self._buf = bytearray()
        self._ids = iter(range(1, 1 << 62))

    @classmethod
    async def start(cls, shim: Path, scratch: Path, pidns: bool = False) -> HostForkServer:
        prefix = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"] if pidns else []
        if pidns and os.geteuid() != 0:
            prefix.append("--map-root-user")
        boot = FORK_SERVER_BOOT.format(shim=str(shim))
        proc = await anyio.open_process(
            [*prefix, sys.executable, "-c", boot, "--scratch", str(scratch)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,  # stderr: ours (executor bugs show)
            cwd=str(shim), env=SANDBOX_ENV,
        )
        server = cls(proc)
        try:
            with anyio.fail_after(READY_TIMEOUT_S):
                hello = await server._read_frame()
            if not hello.get("ready") or hello.get("version") != executor.VERSION:
                raise RuntimeError(f"host fork server sent {hello!r}, expected ready with version {executor.VERSION}")
        except BaseException:
            await server.aclose()
            raise
        return server

    async def request(self, job: dict[str, Any]) -> dict[str, Any]:
        job_id = next(self._ids)
        data = json.dumps({**job, "id": job_id}).encode()
        assert self._proc.stdin is not None
        await self._proc.stdin.send(struct.pack(">I", len(data)) + data)
        reply = await self._read_frame()
        if reply.pop("id", None) != job_id:
            raise RuntimeError("host fork server answered a different job")
        return reply

    async def _read_frame(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        while True:
            if len(self._buf) >= 4:
                (n,) = struct.unpack(">I", self._buf[:4])
                if len(self._buf) >= 4 + n:
                    frame = json.loads(self._buf[4 : 4 + n])
                    del self._buf[: 4 + n]
                    return frame
            self._buf += await self._proc.stdout.receive(1 << 16)  # EndOfStream: the server died

    async def aclose(self) -> None:
        """EOF on its stdin ends the executor's loop; kill it if it does not go."""
        with anyio.CancelScope(shield=True):
            if self._proc.stdin is not None:
                await self._proc.stdin.aclose()
            with anyio.move_on_after(5):
                await self._proc.wait()
                return
            self._proc.kill()
            await self._proc.wait()


class HostForkPool:
    """P host fork servers, each with its own scratch dir; `run_tests` takes an idle one."""

    def __init__(self, servers: list[HostForkServer], output_limit: int) -> None:
        self._servers = servers
        self._output_limit = output_limit
        self._idle_send, self._idle_recv = anyio.create_memory_object_stream[HostForkServer](len(servers))
        for s in servers:
            self._idle_send.send_nowait(s)

    @classmethod
    async def start(cls, n: int, tmp: Path, output_limit: int, pidns: bool = False) -> HostForkPool:
        shim = tmp / "shim"  # `-m agentloop_executor` finds the package here, as in the container
        shim.mkdir()
        (shim / "agentloop_executor").symlink_to(EXECUTOR_DIR, target_is_directory=True)
        servers: list[HostForkServer] = []
        try:
            for i in range(n):
                scratch = tmp / f"scratch-{i}"
                scratch.mkdir()
                servers.append(await HostForkServer.start(shim, scratch, pidns))
        except BaseException:
            for s in servers:
                await s.aclose()
            raise
        return cls(servers, output_limit)

    async def run_tests(self, candidate: str, tests: str, entry_point: str, timeout_s: float) -> dict[str, Any]:
        """The job DockerPool.run_tests sends -> the executor's result for the one suite."""
        job = {"candidate": candidate, "suites": [{"tests": tests, "entry_point": entry_point}],
               "timeout_s": timeout_s, "output_limit": self._output_limit}
        server = await self._idle_recv.receive()
        try:
            reply = await server.request(job)
        finally:
            self._idle_send.send_nowait(server)
        if "results" not in reply:  # the executor failed the whole job
            return reply
        (result,) = reply["results"]
        return result  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        for s in self._servers:
            await s.aclose()


# --- measuring --------------------------------------------------------------------------------


@dataclass
class SideRun:
    """One side on one workload, summed over rounds."""

    seconds: float = 0.0
    verdicts: list[dict[str, str]] = field(default_factory=list)
    """Per round: verdict per program."""
    latency_s: list[float] = field(default_factory=list)
    duration_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)


async def run_all(programs: list[Program], parallel: int, one: Callable[[Program], Awaitable[Outcome]],
                  into: SideRun) -> None:
    """Run programs with `parallel` workers; add the time, the verdicts and per-job numbers to `into`."""
    verdicts: dict[str, str] = {}
    queue = iter(programs)

    async def worker() -> None:
        for p in queue:  # shared iterator: each program is taken once
            t = time.perf_counter()
            out = await one(p)
            into.latency_s.append(time.perf_counter() - t)
            verdicts[p.name] = out.verdict
            if out.duration_s is not None:
                into.duration_s.append(out.duration_s)
            if out.cpu_s is not None:
                into.cpu_s.append(out.cpu_s)

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(parallel):
            tg.start_soon(worker)
    into.seconds += time.perf_counter() - t0
    into.verdicts.append(verdicts)


def mismatches(programs: list[Program], runs: dict[str, SideRun]) -> list[str]:
    """Programs whose verdicts disagree: passed-or-not across all sides and rounds, and the exact
    verdict between the two executor sides."""
    out = []
    for p in programs:
        seen = {side: [v[p.name] for v in runs[side].verdicts] for side in SIDES}
        passed = {v == "passed" for vs in seen.values() for v in vs}
        exact = set(seen["forkserver"]) | set(seen["sandbox"])
        if len(passed) > 1 or len(exact) > 1:
            out.append(f"{p.name}: " + ", ".join(f"{side} {'/'.join(vs)}" for side, vs in seen.items()))
    return out


def ms(values: list[float]) -> str:
    return f"{statistics.fmean(values) * 1e3:.1f} ms" if values else "-"


def report(label: str, programs: list[Program], runs: dict[str, SideRun], rounds: int) -> dict[str, float | None]:
    """Print one workload's lines -> {"bare": sandbox/bare, "forkserver": sandbox/forkserver}, None when void."""
    rate = {side: rounds * len(programs) / runs[side].seconds for side in SIDES}
    parts = [f"{side} {rate[side]:.2f}/s ({runs[side].seconds:.1f} s) {dict(Counter(runs[side].verdicts[-1].values()))}"
             for side in SIDES]
    vs_bare, vs_fork = rate["sandbox"] / rate["bare"], rate["sandbox"] / rate["forkserver"]
    print(f"{label}: {len(programs)} programs x {rounds} rounds | " + " | ".join(parts)
          + f" | sandbox/bare {vs_bare:.2f}x, sandbox/forkserver {vs_fork:.2f}x")
    for side in SIDES:
        r = runs[side]
        line = f"  per job ({side}, mean): latency {ms(r.latency_s)}"
        if r.duration_s:
            outside = [lat - d for lat, d in zip(r.latency_s, r.duration_s)]
            line += (f", executor duration_s {ms(r.duration_s)}, cpu_s {ms(r.cpu_s)}, "
                     f"outside the job's own time {ms(outside)} (median {statistics.median(outside) * 1e3:.1f} ms)")
        print(line)
    bad = mismatches(programs, runs)
    for m in bad:
        print(f"  MISMATCH {m}")
    if bad:
        print(f"  {label}: {len(bad)} verdict mismatches: this workload's ratios are void")
        return {"bare": None, "forkserver": None}
    return {"bare": vs_bare, "forkserver": vs_fork}


async def main(args: argparse.Namespace) -> int:
    typical, heavy = load_programs(args.data)
    cfg = SandboxConfig(pool_size=args.parallel)
    with tempfile.TemporaryDirectory(prefix="agentloop-forkserver-") as tmp:
        t0 = time.perf_counter()
        fork = await HostForkPool.start(args.parallel, Path(tmp), cfg.output_limit_bytes, args.forkserver_pidns)
        fork_startup = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            async with DockerPool.start(cfg) as pool:
                print(f"start-up (not in the rates): pool {time.perf_counter() - t0:.2f} s for {cfg.pool_size} warm "
                      f"containers, host fork servers {fork_startup:.2f} s for {args.parallel}"
                      f"{' (each in its own PID namespace)' if args.forkserver_pidns else ''}; parallel "
                      f"{args.parallel}, timeout {args.timeout:g} s (bare: wall; executor sides: CPU)", flush=True)

                async def bare_one(p: Program) -> Outcome:
                    return await host_run(p.text, args.timeout)

                async def fork_one(p: Program) -> Outcome:
                    r = await fork.run_tests(p.candidate, p.tests, p.entry_point, args.timeout)
                    return Outcome(r["verdict"], r.get("duration_s"), r.get("cpu_s"))

                async def box_one(p: Program) -> Outcome:
                    r = await pool.run_tests(p.candidate, p.tests, p.entry_point, args.timeout)
                    return Outcome(r.verdict.value, r.duration_s, r.cpu_s)

                ones = {"bare": bare_one, "forkserver": fork_one, "sandbox": box_one}
                await host_run("import numpy\n", args.timeout)  # page cache warm, like the pool
                ratios = {}
                for label, programs in (("typical", typical), ("heavy", heavy)):
                    runs = {side: SideRun() for side in SIDES}
                    for r in range(args.rounds):  # A B C, C B A, ...: drift on a shared machine hits every side
                        for side in SIDES if r % 2 == 0 else SIDES[::-1]:
                            await run_all(programs, args.parallel, ones[side], runs[side])
                    ratios[label] = report(label, programs, runs, args.rounds)
                print(f"pool stats: {pool.stats}")
        finally:
            await fork.aclose()

    def line(name: str, value: float | None) -> str:
        return f"ratio {name} {'void' if value is None else f'{value:.2f}'}"

    print(line("sandbox_isolation_heavy", ratios["heavy"]["forkserver"]))
    print(line("sandbox_isolation", ratios["typical"]["forkserver"]))
    print(line("sandbox_heavy", ratios["heavy"]["bare"]))
    print(line("sandbox_throughput", ratios["typical"]["bare"]))
    return 1 if any(v is None for r in ratios.values() for v in r.values()) else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=1, help="repeat each side, alternating the order")
    parser.add_argument("--forkserver-pidns", action="store_true",
                        help="each host fork server in its own PID namespace and /proc (needs unshare)")
    sys.exit(anyio.run(main, parser.parse_args()))
