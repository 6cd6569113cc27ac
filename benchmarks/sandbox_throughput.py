"""Sandbox throughput against bare host subprocesses, on HumanEval+ programs.

    python benchmarks/sandbox_throughput.py [--data PATH] [--parallel P] [--timeout S] [--rounds R]

Two workloads, each run both ways with the same parallelism P:
  typical  every task with a wrong candidate (`return None`), plus the reference for every third
  heavy    every reference solution with its full tests
Baseline: `python3 -` per program (the real interpreter binary, not a pyenv shim), program on
stdin, with the same single-threaded BLAS settings as the sandbox. Sandbox: `DockerPool.run_tests`
(the grading path: tests and candidate in two processes) on a warm pool of P containers (start-up
reported separately).
The last two lines are `ratio sandbox_heavy X` and `ratio sandbox_throughput X` (typical).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from agentloop.sandbox import DockerPool, SandboxConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "humanevalplus-v0.1.10.jsonl.gz"
BROKEN = {"HumanEval/32"}  # its test fails upstream in this format
WRONG_BODY = "    return None\n"


@dataclass(frozen=True)
class Program:
    name: str
    candidate: str
    tests: str
    entry_point: str

    @property
    def text(self) -> str:
        """The single-process program the baseline runs."""
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


# The sandbox sets these too: numpy's BLAS thread pools cost start-up time and fight over 2 cores.
HOST_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


async def host_run(text: str, timeout_s: float) -> str:
    """One bare `python3 -` on the host: passed, failed or timeout."""
    async with await anyio.open_process(
        [sys.executable, "-"], stdin=-1, stdout=-3, stderr=-3, env=HOST_ENV  # PIPE, DEVNULL, DEVNULL
    ) as proc:
        assert proc.stdin is not None
        with anyio.move_on_after(timeout_s) as scope:
            await proc.stdin.send(text.encode())
            await proc.stdin.aclose()
            code = await proc.wait()
        if scope.cancelled_caught:
            proc.kill()
            await proc.wait()
            return "timeout"
    return "passed" if code == 0 else "failed"


async def run_all(programs: list[Program], parallel: int, one: Callable[[Program], Awaitable[str]]) -> tuple[float, dict[str, str]]:
    """Run programs with `parallel` workers; -> (seconds, verdict per program)."""
    verdicts: dict[str, str] = {}
    queue = iter(programs)

    async def worker() -> None:
        for p in queue:  # shared iterator: each program is taken once
            verdicts[p.name] = await one(p)

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(parallel):
            tg.start_soon(worker)
    return time.perf_counter() - t0, verdicts


def report(label: str, programs: list[Program], host: tuple[float, dict[str, str]],
           box: tuple[float, dict[str, str]], rounds: int) -> float:
    """Print one workload's line (rates over all rounds, verdicts of the last) -> sandbox/host."""
    (th, vh), (ts, vs) = host, box
    rate_h, rate_s = rounds * len(programs) / th, rounds * len(programs) / ts
    ratio = rate_s / rate_h
    print(f"{label}: {len(programs)} programs | host {rate_h:.2f}/s ({th:.1f} s) {dict(Counter(vh.values()))}"
          f" | sandbox {rate_s:.2f}/s ({ts:.1f} s) {dict(Counter(vs.values()))} | {ratio:.2f}x")
    mismatches = [p.name for p in programs if (vh[p.name] == "passed") != (vs[p.name] == "passed")]
    for name in mismatches:
        print(f"  MISMATCH {name}: host {vh[name]}, sandbox {vs[name]}")
    return ratio


async def main(args: argparse.Namespace) -> None:
    typical, heavy = load_programs(args.data)
    cfg = SandboxConfig(pool_size=args.parallel)
    t0 = time.perf_counter()
    async with DockerPool.start(cfg) as pool:
        print(f"pool start-up: {time.perf_counter() - t0:.2f} s for {cfg.pool_size} warm containers "
              f"(not in the rates); parallel {args.parallel}, timeout {args.timeout:g} s")

        async def host_one(p: Program) -> str:
            return await host_run(p.text, args.timeout)

        async def box_one(p: Program) -> str:
            return (await pool.run_tests(p.candidate, p.tests, p.entry_point, args.timeout)).verdict.value

        await host_run("import numpy\n", args.timeout)  # page cache warm, like the pool
        ratios = {}
        for label, programs in (("typical", typical), ("heavy", heavy)):
            host, box = (0.0, {}), (0.0, {})
            for r in range(args.rounds):  # A B B A ...: drift on a shared machine hits both sides
                sides = [("host", host_one), ("box", box_one)]
                for side, one in sides if r % 2 == 0 else sides[::-1]:
                    t, verdicts = await run_all(programs, args.parallel, one)
                    if side == "host":
                        host = (host[0] + t, verdicts)
                    else:
                        box = (box[0] + t, verdicts)
            ratios[label] = report(label, programs, host, box, args.rounds)
        print(f"pool stats: {pool.stats}")
    print(f"ratio sandbox_heavy {ratios['heavy']:.2f}")
    print(f"ratio sandbox_throughput {ratios['typical']:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=1, help="repeat each side, alternating which goes first")
    anyio.run(main, parser.parse_args())
