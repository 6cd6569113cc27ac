"""Agent steps: a workspace step against `docker exec` into a running container.

    python benchmarks/agent_steps.py [--rounds R] [--idle K] [--only SECTION ...]

Sections (main() runs them in order; each prints its own lines, the `ratio` lines come last):
  step    Round trip of a trivial command (`echo hi`) as the episode loop sees it, three ways, on
          the same machine in the same run, interleaved round by round so drift hits every side:
            workspace  `Workspace.run("echo hi", read=())` on a warm workspace (framed JSON over the
                       attach stream to the step server, fork+exec of `bash -c`, kill sweep, reply)
            exec_cli   `docker exec -w /work CID bash -lc "echo hi"` in a subprocess, as
                       mini-swe-agent runs each command
            exec_sdk   the Docker SDK's `container.exec_run(["bash", "-c", "echo hi"], workdir="/work")`
                       (no CLI process; the faster baseline)
          both baselines into a container of the same image with the same lock-down, idling on
          `sleep infinity`. Medians per side; the baseline is the faster of the two.
          -> `ratio agent_step V`, V = baseline median / workspace median (target >= 5)
  idle    Memory per idle workspace: K warm workspaces, each container's cgroup memory less its
          inactive page cache (what `docker stats` shows as MEM USAGE), median over the K.
  left    Containers of the benchmark's runs left after the pools exited (must be 0).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import docker
from docker.models.containers import Container

from agentloop.sandbox import engine
from agentloop.sandbox.config import SandboxConfig
from agentloop.sandbox.workspace import STEP_ENV, WORKDIR, WorkspacePool

COMMAND = "echo hi"


@dataclass
class Bench:
    args: argparse.Namespace
    cfg: SandboxConfig = field(default_factory=SandboxConfig)
    run_ids: list[str] = field(default_factory=list)
    ratios: dict[str, float | None] = field(default_factory=dict)

    def run_id(self, what: str) -> str:
        rid = f"bench-{what}-{uuid.uuid4().hex[:8]}"
        self.run_ids.append(rid)
        return rid


def baseline_container(client: docker.DockerClient, cfg: SandboxConfig, run_id: str) -> Container:
    """A container as mini-swe-agent keeps one (`sleep infinity`), locked down as a workspace is."""
    tmpfs = f"size={cfg.workspace_mb}m,mode=1777"
    return client.containers.run(
        cfg.image, command=["sleep", "infinity"], detach=True, name=f"agentloop-{run_id}-exec",
        labels={engine.RUN_LABEL: run_id}, user="65534:65534", environment=STEP_ENV, network_mode="none",
        read_only=True, tmpfs={WORKDIR: tmpfs, "/tmp": tmpfs}, mem_limit=f"{cfg.memory_mb}m",
        memswap_limit=f"{cfg.memory_mb}m", pids_limit=cfg.pids_limit, nano_cpus=int(cfg.cpus * 1e9),
        cap_drop=["ALL"], security_opt=["no-new-privileges"])


async def timed(fn: Callable[[], Awaitable[None]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return time.perf_counter() - t0


def ms(xs: list[float]) -> str:
    return (f"median {statistics.median(xs) * 1e3:7.2f} ms  (p10 {quantile(xs, 0.1) * 1e3:.2f}, "
            f"p90 {quantile(xs, 0.9) * 1e3:.2f}, n={len(xs)})")


def quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def section_step(b: Bench) -> None:
    print(f"== step round trip: `{COMMAND}`, {b.args.rounds} rounds of "
          f"{b.args.ours} workspace / {b.args.sdk} exec_sdk / {b.args.cli} exec_cli", flush=True)
    client = await anyio.to_thread.run_sync(engine.connect)
    rid = b.run_id("exec")
    container = await anyio.to_thread.run_sync(baseline_container, client, b.cfg, rid)
    try:
        async with WorkspacePool(b.cfg, b.run_id("steps"), warm=1) as pool, pool.workspace() as ws:

            async def ours() -> None:
                r = await ws.run(COMMAND, 30, read=())
                assert (r.exit_code, r.stdout) == (0, "hi\n"), r

            def sdk() -> None:
                code, out = container.exec_run(["bash", "-c", COMMAND], workdir=WORKDIR)
                assert (code, out) == (0, b"hi\n"), (code, out)

            def cli() -> None:
                out = subprocess.run(["docker", "exec", "-w", WORKDIR, container.id, "bash", "-lc", COMMAND],
                                     capture_output=True, check=True, text=True).stdout
                assert out == "hi\n", out

            async def in_thread(fn: Callable[[], None]) -> None:
                await anyio.to_thread.run_sync(fn)

            sides: dict[str, list[float]] = {"workspace": [], "exec_sdk": [], "exec_cli": []}
            for _ in range(3):  # warm-up, not counted
                await ours()
                await in_thread(sdk)
            for _ in range(b.args.rounds):
                for _ in range(b.args.ours):
                    sides["workspace"].append(await timed(ours))
                for _ in range(b.args.sdk):
                    sides["exec_sdk"].append(await timed(lambda: in_thread(sdk)))
                for _ in range(b.args.cli):
                    sides["exec_cli"].append(await timed(lambda: in_thread(cli)))
            for name, xs in sides.items():
                print(f"  {name:10s} {ms(xs)}")
            ours_m = statistics.median(sides["workspace"])
            base_name = min(("exec_sdk", "exec_cli"), key=lambda n: statistics.median(sides[n]))
            base_m = statistics.median(sides[base_name])
            print(f"  baseline: {base_name} (the faster); step server's own time for the step "
                  f"{(await ws.run(COMMAND, 30, read=())).duration_s * 1e3:.2f} ms")
            b.ratios["agent_step"] = base_m / ours_m
    finally:
        await anyio.to_thread.run_sync(lambda: container.remove(force=True))
        await anyio.to_thread.run_sync(client.close)


async def section_idle(b: Bench) -> None:
    k = b.args.idle
    print(f"== memory per idle workspace: {k} warm workspaces", flush=True)
    async with WorkspacePool(b.cfg, b.run_id("idle"), warm=k) as pool:
        await anyio.sleep(2)  # let them settle
        client = await anyio.to_thread.run_sync(engine.connect)
        try:
            containers = await anyio.to_thread.run_sync(
                lambda: client.containers.list(filters={"label": f"{engine.RUN_LABEL}={pool.run_id}"}))
            usage = [await anyio.to_thread.run_sync(mem_usage, c) for c in containers]
        finally:
            await anyio.to_thread.run_sync(client.close)
    mib = [u / 2**20 for u in usage]
    print(f"  containers measured: {len(mib)}; MEM USAGE per idle workspace: median {statistics.median(mib):.2f} MiB "
          f"(min {min(mib):.2f}, max {max(mib):.2f})")
    print(f"memory_per_idle_workspace_mib {statistics.median(mib):.2f}")


def mem_usage(c: Container) -> int:
    """As `docker stats`: cgroup usage less inactive page cache (v1: total_inactive_file)."""
    m = c.stats(stream=False)["memory_stats"]
    stats = m.get("stats") or {}
    inactive = stats.get("total_inactive_file", stats.get("inactive_file", 0))
    return int(m["usage"]) - int(inactive)


async def section_left(b: Bench) -> None:
    client = await anyio.to_thread.run_sync(engine.connect)
    try:
        left = 0
        for rid in b.run_ids:
            found = await anyio.to_thread.run_sync(functools.partial(
                client.containers.list, all=True, sparse=True, filters={"label": f"{engine.RUN_LABEL}={rid}"}))
            left += len(found)
    finally:
        await anyio.to_thread.run_sync(client.close)
    print(f"containers_left {left}")
    if left:
        b.ratios["containers_left_is_zero"] = None


SECTIONS: dict[str, Callable[[Bench], Awaitable[None]]] = {
    "step": section_step,
    "idle": section_idle,
    "left": section_left,  # keep last: it counts what every section before left behind
}


async def main(args: argparse.Namespace) -> int:
    b = Bench(args)
    for name, section in SECTIONS.items():
        if not args.only or name in args.only or name == "left":
            await section(b)
    for name, value in b.ratios.items():
        print(f"ratio {name} {'void' if value is None else f'{value:.2f}'}")
    return 1 if None in b.ratios.values() else 0


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=20, help="interleaved rounds of the step section")
    p.add_argument("--ours", type=int, default=10, help="workspace steps per round")
    p.add_argument("--sdk", type=int, default=3, help="exec_run calls per round")
    p.add_argument("--cli", type=int, default=1, help="`docker exec` subprocesses per round")
    p.add_argument("--idle", type=int, default=8, help="warm workspaces measured for idle memory")
    p.add_argument("--only", nargs="*", choices=list(SECTIONS), help="sections to run (`left` always runs)")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(anyio.run(main, parse(sys.argv[1:])))
