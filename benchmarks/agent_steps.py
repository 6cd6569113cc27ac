"""Agent steps: a workspace step against `docker exec` into a running container.

    python benchmarks/agent_steps.py [--rounds R] [--idle K] [--episodes E --tasks T --steps S]
                                     [--only SECTION ...]

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
  episodes  `--episodes` concurrent episodes of `--steps` steps each through the real runner
          (`agentloop.runner.run`: real store, job sandbox grading, workspaces), on the first
          `--tasks` smoke tasks with the split `agent:{episodes/tasks}x{steps}`, `[agent] max_live`
          = all of them. The model is the scripted server in a separate process (its CPU and memory
          are not agentloop's), answering `episode_script`: ten shell actions that look around, run
          the visible tests, edit solution.py three times (so each episode's state is graded 4
          times: the stub and 3 edits; an unchanged file is not graded again) and never submit, so
          every episode ends at the step limit. Prints wall time of `run()` (pool start-up and time
          limit calibration included), completed steps / wall, peak RSS of this process during the
          run (sampled VmRSS and ru_maxrss; the server's is printed apart), where a step's time
          goes (model, action, the rest = grading + store), infra errors and the run's containers
          left.
  left    Containers of the benchmark's runs left after the pools exited (must be 0).
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import docker
from _scripted import start_scripted, stop
from docker.models.containers import Container
from rich.console import Console

from agentloop import runner
from agentloop.agent.config import AgentConfig
from agentloop.attempt import AttemptKind
from agentloop.config import RunConfig
from agentloop.model.config import ModelConfig, SamplingParams
from agentloop.sandbox import engine
from agentloop.sandbox.config import SandboxConfig
from agentloop.sandbox.workspace import STEP_ENV, WORKDIR, WorkspacePool
from agentloop.store import AttemptStore

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


EPISODE_ACTIONS = (
    "ls -la",
    "cat solution.py",
    "python3 test_solution.py",
    "echo '# edit 1' >> solution.py",
    "python3 test_solution.py",
    "python3 -c 'import solution; print(sorted(vars(solution)))'",
    "echo '# edit 2' >> solution.py",
    "python3 test_solution.py",
    "grep -n def solution.py",
    "echo '# edit 3' >> solution.py && python3 test_solution.py",
)


def episode_script(request: Any) -> str:
    """The scripted model of the episodes section (served by `python -m agentloop.model.scripted
    --script agent_steps:episode_script`): step k's action is EPISODE_ACTIONS[k]; never submits."""
    step = sum(m["role"] == "assistant" for m in request.messages)
    return f"Step {step}.\n```bash\n{EPISODE_ACTIONS[step % len(EPISODE_ACTIONS)]}\n```"


def vm_kib(pid: int | str, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


async def section_episodes(b: Bench) -> None:
    a = b.args
    per_task, rest = divmod(a.episodes, a.tasks)
    if rest or per_task < 1:
        raise SystemExit(f"--episodes {a.episodes} must be a multiple of --tasks {a.tasks}")
    split = f"agent:{per_task}x{a.steps}"
    print(f"== episodes: {a.episodes} concurrent episodes x {a.steps} steps ({a.tasks} smoke tasks, {split}), "
          f"scripted model in a separate process, {os.cpu_count()} cores", flush=True)
    server, url = start_scripted("--script", "agent_steps:episode_script", cwd=Path(__file__).parent,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = {"vmrss": vm_kib("self", "VmRSS")}
    rss_before = peak["vmrss"]
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    maxrss_before = ru0.ru_maxrss
    stop_sampling = anyio.Event()

    async def sample() -> None:
        while not stop_sampling.is_set():
            peak["vmrss"] = max(peak["vmrss"], vm_kib("self", "VmRSS"))
            with anyio.move_on_after(0.2):
                await stop_sampling.wait()

    try:
        with tempfile.TemporaryDirectory() as tmp:
            sandbox = SandboxConfig(workspace_warm=a.warm, **({'pool_size': a.pool_size} if a.pool_size else {}))
            cfg = RunConfig(suite="smoke", limit=a.tasks, splits=[split], runs_dir=tmp,
                            model=ModelConfig(base_url=url, model="scripted", max_retries=0, concurrency=a.episodes),
                            sampling=SamplingParams(max_tokens=64, seed=1), sandbox=sandbox,
                            agent=AgentConfig(step_timeout_s=30, max_live=a.episodes))
            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg:
                tg.start_soon(sample)
                try:
                    report = await runner.run(cfg, console=Console(stderr=True, quiet=True))
                finally:
                    stop_sampling.set()
            wall = time.perf_counter() - t0
            server_hwm = vm_kib(server.pid, "VmHWM")
            store = AttemptStore.open(Path(report.run_dir))
            try:
                run_id = store.get_meta("run_id")
                rows = list(store.iter_attempts())
            finally:
                store.close()
    finally:
        stop(server)
    b.run_ids.append(run_id)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    maxrss = ru1.ru_maxrss
    cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    done = [r for r in rows if r.kind is AttemptKind.COMPLETED]
    infra = [r for r in rows if r.kind is AttemptKind.INFRA_ERROR]
    outcomes: dict[str, int] = {}
    for r in done:
        outcome = r.extra["episode"].get("outcome")
        if outcome:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    graded = len({(r.task_id, r.chain, r.code) for r in done})
    step_s = [r.finished_at - r.started_at for r in done]
    model_s = [r.latency_s or 0.0 for r in done]
    action_s = [sum(x.get("duration_s", 0.0) for x in r.extra["episode"].get("actions", [])) for r in done]
    total = sum(step_s)
    window = max(r.finished_at for r in done) - min(r.started_at for r in done)
    left = await anyio.to_thread.run_sync(lambda: subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={engine.RUN_LABEL}={run_id}"],
        capture_output=True, text=True, check=True).stdout.split())
    print(f"  completed steps {len(done)} (expected {a.episodes * a.steps}), infra errors {len(infra)}, "
          f"episode outcomes {outcomes}, distinct states graded {graded}")
    print(f"  wall {wall:.1f} s for run() (pool start-up, calibration, report included); first step start to "
          f"last step end {window:.1f} s")
    print(f"  steps/s {len(done) / wall:.1f} over the wall ({len(done) / window:.1f} over the step window)")
    print(f"  a step's time, summed over steps ({total:.0f} s, {total / len(done) * 1e3:.0f} ms per step, "
          f"{a.episodes} at once): model {sum(model_s) / total:.0%}, action in the workspace "
          f"{sum(action_s) / total:.0%}, rest (grading the state in the job sandbox, store) "
          f"{1 - (sum(model_s) + sum(action_s)) / total:.0%}")
    print(f"  median per step: model {statistics.median(model_s) * 1e3:.0f} ms, action "
          f"{statistics.median(action_s) * 1e3:.0f} ms, whole step {statistics.median(step_s) * 1e3:.0f} ms")
    new_state = new_states(done)
    fresh = [s for r, s in zip(done, step_s, strict=True) if (r.task_id, r.chain, r.turn) in new_state]
    same = [s for r, s in zip(done, step_s, strict=True) if (r.task_id, r.chain, r.turn) not in new_state]
    in_box = [r.grading.duration_s for r in done if (r.task_id, r.chain, r.turn) in new_state and r.grading]
    print(f"  steps that graded a new state: {len(fresh)}, median {statistics.median(fresh) * 1e3:.0f} ms, "
          f"sum {sum(fresh):.0f} s (grading job's own time: median {statistics.median(in_box) * 1e3:.0f} ms, "
          f"sum {sum(in_box):.0f} s on a pool of {cfg.sandbox.pool_size} job containers); steps with an "
          f"unchanged state: {len(same)}, median {statistics.median(same) * 1e3:.0f} ms, sum {sum(same):.0f} s")
    print(f"  agentloop process RSS: peak during the run {peak['vmrss'] / 1024:.0f} MiB (sampled every 0.2 s; "
          f"{rss_before / 1024:.0f} MiB before), ru_maxrss {maxrss / 1024:.0f} MiB "
          f"({maxrss_before / 1024:.0f} before); "
          f"scripted server process (not agentloop) peak {server_hwm / 1024:.0f} MiB")
    print(f"  agentloop process CPU during the run {cpu:.1f} s ({cpu / wall:.0%} of one core over the wall; "
          f"{cpu / len(done) * 1e3:.1f} ms per step)")
    print(f"  containers left of run {run_id}: {len(left)}")
    print(f"episodes_steps_per_s {len(done) / wall:.1f}")
    print(f"episodes_peak_rss_mib {max(peak['vmrss'], maxrss) / 1024:.0f}")
    if len(done) != a.episodes * a.steps or infra or left:
        b.ratios["episodes_all_completed"] = None


def new_states(rows: list[Any]) -> set[tuple[str, int, int]]:
    """(task, episode, step) of the steps whose solution.py differs from the step before (step 0 included):
    the steps that graded a state in the job sandbox (an unchanged state reuses its verdict)."""
    code = {(r.task_id, r.chain, r.turn): r.code for r in rows}
    return {k for k, c in code.items() if k[2] == 0 or code.get((k[0], k[1], k[2] - 1), c) != c}


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
    "episodes": section_episodes,
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
    p.add_argument("--episodes", type=int, default=64, help="concurrent episodes of the episodes section")
    p.add_argument("--tasks", type=int, default=8, help="smoke tasks the episodes are spread over")
    p.add_argument("--steps", type=int, default=10, help="steps per episode")
    p.add_argument("--warm", type=int, default=8, help="[sandbox] workspace_warm of the episodes run")
    p.add_argument("--pool-size", type=int, help="[sandbox] pool_size of the episodes run (default: its default)")
    p.add_argument("--only", nargs="*", choices=list(SECTIONS), help="sections to run (`left` always runs)")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(anyio.run(main, parse(sys.argv[1:])))
