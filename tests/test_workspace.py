"""Agent-episode workspaces against the real engine and image: files persist, processes do not,
the lock-down holds, one workspace cannot touch another, and no container outlives its pool."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import textwrap
import uuid
from dataclasses import replace

import anyio
import docker
import pytest

from agentloop.errors import ConfigError, DockerUnavailable, WorkspaceError
from agentloop.sandbox import SandboxConfig, reap_dead_runs
from agentloop.sandbox.workspace import StepResult, Workspace, WorkspacePool

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.usefixtures("docker_ready")]

CFG = SandboxConfig(memory_mb=256, pids_limit=128, output_limit_bytes=4096, workspace_mb=32,
                    workspace_file_limit_bytes=1000)
LEFTOVERS = textwrap.dedent("""
    import os
    others = []
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) not in (1, os.getpid()):
            try:
                others.append(open("/proc/%s/cmdline" % p, "rb").read().replace(b"\\0", b" ").decode())
            except OSError:
                pass
    print(sorted(others))
""")


@pytest.fixture(scope="module")
async def pool(docker_ready):
    async with WorkspacePool(CFG, f"test-ws-{uuid.uuid4().hex[:8]}", warm=2) as p:
        yield p


def run_containers(run_id: str) -> list:
    client = docker.from_env()
    try:
        # sparse: a full listing inspects each container and fails if one is being removed meanwhile
        return client.containers.list(all=True, sparse=True, filters={"label": f"agentloop.run={run_id}"})
    finally:
        client.close()


def seen(r: StepResult) -> tuple:
    """Everything a step shows the agent, less its duration."""
    return r.exit_code, r.signal, r.timed_out, r.stdout, r.stderr, r.truncated, r.files, r.notes


async def leftovers(ws: Workspace) -> str:
    """Other processes than the server and the one looking (`python3 -c`: works with /tmp full)."""
    r = await ws.run(f"python3 -c {shlex.quote(LEFTOVERS)}", 30, read=())
    assert r.exit_code == 0, r
    return r.stdout


# --- steps -------------------------------------------------------------------------------------

async def test_files_persist_processes_do_not(pool):
    async with pool.workspace({"solution.py": "x = 1\n", "pkg/data.txt": "given\n"}) as ws:
        r = await ws.run("echo kept > notes.txt; sleep 1000 & nohup sleep 1001 >/dev/null 2>&1 & "
                         "setsid sleep 1002 & (trap '' HUP TERM; sleep 1003) & echo started", 60)
        # The background processes hold stdout open: the step still ends when its command does.
        assert (r.exit_code, r.timed_out, r.stdout, r.files) == (0, False, "started\n", {"solution.py": "x = 1\n"})
        assert await leftovers(ws) == "[]\n"
        r = await ws.run("cat notes.txt pkg/data.txt; echo 'x = 2' >> solution.py", 30)
        assert (r.exit_code, r.stdout, r.files) == (0, "kept\ngiven\n", {"solution.py": "x = 1\nx = 2\n"})
        assert await ws.read(["notes.txt", "solution.py"]) == {"notes.txt": "kept\n", "solution.py": "x = 1\nx = 2\n"}


async def test_timeout_kills_the_whole_tree(pool):
    async with pool.workspace() as ws:
        r = await ws.run("sleep 1000 & setsid bash -c 'trap \"\" TERM INT; while :; do :; done' & "
                         "echo before; echo err >&2; wait", 1)
        assert (r.exit_code, r.signal, r.timed_out, r.stdout, r.stderr) == (None, 9, True, "before\n", "err\n")
        assert r.duration_s >= 1
        assert await leftovers(ws) == "[]\n"
        r = await ws.run("exit 3", 10)
        assert (r.exit_code, r.signal, r.timed_out) == (3, None, False)
        r = await ws.run("kill -SEGV $$", 10)
        assert (r.exit_code, r.signal, r.timed_out) == (None, 11, False)


async def test_output_is_capped_head_and_tail_and_always_drained(pool):
    async with pool.workspace() as ws:
        r = await ws.run("python3 -c \"import sys; print('A' * 50000); print('B' * 50000); "
                         "sys.stderr.write('E' * 20000 + 'Z')\"", 60)
        assert (r.exit_code, r.truncated) == (0, True)
        assert r.stdout.startswith("A" * 2048 + "\n[... ") and r.stdout.endswith("B" * 2047 + "\n")
        assert "bytes truncated ...]" in r.stdout and len(r.stdout) < 4096 + 100
        assert r.stderr.startswith("E" * 2048) and r.stderr.endswith("E" * 2047 + "Z")
        # 20 MB through the pipe: a chatty command is read all along, never blocked.
        r = await ws.run("head -c 20000000 /dev/zero | tr '\\0' y; echo; echo end", 120)
        assert (r.exit_code, r.timed_out, r.truncated, r.stdout[-4:]) == (0, False, True, "end\n")
        r = await ws.run("printf 'short'", 10)
        assert (r.stdout, r.truncated) == ("short", False)


async def test_python_steps_and_reading_files(pool):
    async with pool.workspace({"solution.py": "def f():\n    return 0\n"}) as ws:
        r = await ws.run("open('solution.py', 'w').write('def f():\\n    return 42\\n')\n"
                         "from solution import f\nprint(f())", 30, kind="python")
        assert (r.exit_code, r.stdout, r.files) == (0, "42\n", {"solution.py": "def f():\n    return 42\n"})
        r = await ws.run("x = 1\nprint(x / 0)", 30, kind="python", read=())
        assert r.exit_code == 1 and "print(x / 0)" in r.stderr and "ZeroDivisionError" in r.stderr, r
        await ws.run("printf 'a\\0b' > bin.dat; head -c 5000 /dev/zero | tr '\\0' x > big.txt; mkdir d; "
                     "printf '\\xff\\xfe' > latin.txt", 10)
        files, notes = await ws.read_with_notes(["solution.py", "missing.py", "bin.dat", "big.txt", "d", "latin.txt"])
        assert files == {"solution.py": "def f():\n    return 42\n", "missing.py": None, "bin.dat": None,
                         "big.txt": None, "d": None, "latin.txt": None}
        assert notes == {"missing.py": "no such file", "bin.dat": "binary (contains NUL bytes)",
                         "big.txt": "over 1000 bytes (5000)", "d": "not a regular file", "latin.txt": "not UTF-8 text"}


async def test_lockdown_and_a_server_that_survives_its_steps(pool):
    async with pool.workspace() as ws:
        r = await ws.run("id -u; hostname; cat /proc/self/oom_score_adj; cat /proc/1/oom_score_adj; "
                         "ls /proc/1/fd >/dev/null 2>&1 || echo no-fd; touch /etc/x 2>/dev/null || echo ro-root; "
                         "touch /work/w /tmp/t && echo rw-work; "
                         "python3 -c 'import socket; socket.create_connection((\"1.1.1.1\", 53), 2)' 2>/dev/null "
                         "|| echo no-net", 30)
        assert r.stdout.split() == ["65534", "workspace", "1000", "0", "no-fd", "ro-root", "rw-work", "no-net"], r
        r = await ws.run("kill -9 -1; for s in KILL STOP INT TERM HUP QUIT USR1; do kill -$s 1; done; echo done", 10)
        assert (r.exit_code, r.stdout) == (0, "done\n"), r
        r = await ws.run("echo still here", 10)
        assert (r.exit_code, r.stdout) == (0, "still here\n")


async def test_paths_are_confined_to_the_workdir(pool):
    async with pool.workspace() as ws:
        for bad in ("../x.py", "/etc/passwd", "a/../../x", "", ".", "a\0b"):
            with pytest.raises(ValueError, match="workspace path"):
                await ws.write({bad: "no"})
            with pytest.raises(ValueError, match="workspace path"):
                await ws.read([bad])
        with pytest.raises(ValueError, match="workspace path"):
            await ws.run("true", 10, read=["../../etc/passwd"])
        await ws.run("ln -s /tmp out; ln -s /etc/passwd pw; mkfifo fifo", 10)
        with pytest.raises(WorkspaceError, match="leaves the workdir through a symlink"):
            await ws.write({"out/x.py": "escaped"})
        with pytest.raises(WorkspaceError, match=r"not a regular file|No such device"):
            await ws.write({"fifo": "blocked?"})
        files, notes = await ws.read_with_notes(["pw", "fifo"])
        assert files == {"pw": None, "fifo": None}
        assert notes == {"pw": "outside the workdir (a symlink)", "fifo": "not a regular file"}
        r = await ws.run("ls /tmp; echo ok", 10)  # a refused write leaves the workspace usable
        assert (r.exit_code, r.stdout) == (0, "ok\n")
        with pytest.raises(ValueError, match="unknown step kind"):
            await ws.run("true", 10, kind="perl")


# --- isolation ---------------------------------------------------------------------------------

HONEST = [
    ("bash", "rm -rf /work/* /tmp/*; echo start; pwd; id -u; hostname; ls -A /work /tmp", 30),
    ("bash", "printf 'def add(a, b):\\n    return a + b\\n' > solution.py; cat solution.py", 30),
    ("python", "from solution import add\nprint(add(2, 3))", 30),
    ("python", LEFTOVERS, 30),
    ("bash", "ls -A /work /tmp /dev/shm; cat secret.txt 2>&1; ulimit -u; cat /proc/self/oom_score_adj", 30),
    ("bash", "python3 -c 'import numpy; print(numpy.arange(10).sum())'", 60),
    ("bash", "head -c 3000000 /dev/zero | tr '\\0' y | wc -c; seq 1 3; echo err >&2; exit 4", 60),
    ("bash", "sleep 30; echo never", 1),
]

HOSTILE = {
    "fork_bomb": ("bash", "bomb() { bomb | bomb & }; bomb; exec sleep 3", 20),  # exec: no fork needed to wait
    "memory_bomb": ("python", "x = []\nwhile True:\n    x.append('x' * (1 << 20))\n", 60),
    "outlives_its_step": ("bash", ("nohup setsid python3 -c 'import time\nwhile True: time.sleep(0.01)' "
                                  ">/dev/null 2>&1 & disown; (trap '' HUP TERM; while :; do :; done) & echo bye"), 20),
    "kill_all": ("bash", "kill -9 -1; kill -KILL 1; kill -STOP 1; echo done", 20),
    "cpu_hog": ("bash", "for i in 1 2 3 4; do (while :; do :; done) & done; sleep 2", 20),
    "disk_fill": ("bash", ("echo secret > secret.txt; for d in /work /tmp /dev/shm; do "
                          "dd if=/dev/zero of=$d/fill bs=1M 2>/dev/null; done; df -k /work /tmp | tail -2"), 60),
}


async def honest_round(ws: Workspace) -> list[tuple]:
    return [seen(await ws.run(cmd, t, kind=kind)) for kind, cmd, t in HONEST]


async def test_a_hostile_episode_does_not_change_an_honest_one(pool):
    async with pool.workspace() as solo_ws:
        alone = await honest_round(solo_ws)
    assert alone[0][3] == "start\n/work\n65534\nworkspace\n/tmp:\n\n/work:\n", alone[0]
    assert alone[3][3] == "[]\n" and alone[-1][2] is True, alone

    hostile: dict[str, StepResult] = {}
    rounds: list[list[tuple]] = []
    done = anyio.Event()
    async with pool.workspace() as a, pool.workspace() as b:

        async def honest() -> None:
            while not done.is_set() or not rounds:
                rounds.append(await honest_round(b))

        async def attacker() -> None:
            for name, (kind, cmd, t) in HOSTILE.items():
                hostile[name] = await a.run(cmd, t, kind=kind, read=())
                r = await a.run("echo alive", 10, read=())  # A's own server keeps answering
                assert (r.exit_code, r.stdout) == (0, "alive\n"), (name, r)
                assert await leftovers(a) == "[]\n", name
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(honest)
            tg.start_soon(attacker)
        assert await b.read(["secret.txt", "fill"]) == {"secret.txt": None, "fill": None}
        r = await a.run("cat secret.txt; ls -A /tmp", 10, read=())
        assert r.stdout == "secret\nfill\n"

    for observed in rounds:
        assert observed == alone
    assert hostile["memory_bomb"].signal == 9 and not hostile["memory_bomb"].timed_out, hostile["memory_bomb"]
    assert hostile["fork_bomb"].exit_code == 0 and not hostile["fork_bomb"].timed_out, hostile["fork_bomb"]
    assert hostile["kill_all"].stdout == "done\n"
    used = [line.split()[2] for line in hostile["disk_fill"].stdout.splitlines()]
    assert used == [str(32 * 1024)] * 2, hostile["disk_fill"]


# --- failures and clean-up ---------------------------------------------------------------------

async def test_a_dead_or_hung_server_is_a_workspace_error(pool):
    async with pool.workspace() as ws:
        async def kill_soon() -> None:
            await anyio.sleep(1)
            await anyio.to_thread.run_sync(ws.container.kill)  # type: ignore[attr-defined]

        async with anyio.create_task_group() as tg:
            tg.start_soon(kill_soon)
            with pytest.raises(WorkspaceError, match="step server is gone"):
                await ws.run("sleep 60", 120)
        with pytest.raises(WorkspaceError, match="unusable"):
            await ws.run("true", 10)

    pool.request_extra, pool.grace_s = {"hang_s": 30}, 0.5
    try:
        async with pool.workspace() as ws:
            with pytest.raises(WorkspaceError, match="no answer from the step server within 1 s"):
                await ws.run("true", 0.5)
    finally:
        pool.request_extra, pool.grace_s = {}, 10.0
    async with pool.workspace() as ws:  # the pool goes on
        assert (await ws.run("echo ok", 10)).stdout == "ok\n"


def test_workspace_size_must_fit_the_memory_limit():
    with pytest.raises(ConfigError, match=r"does not fit sandbox\.memory_mb"):
        WorkspacePool(replace(CFG, memory_mb=128, workspace_mb=40))


async def test_a_container_that_cannot_start_is_a_workspace_error(docker_ready):
    cfg = replace(CFG, runtime="agentloop-no-such-runtime")
    async with WorkspacePool(cfg, warm=0) as pool:
        with pytest.raises(WorkspaceError, match="could not start a workspace container"):
            async with pool.workspace():
                pass
    with pytest.raises(DockerUnavailable, match="could not start a workspace container"):
        async with WorkspacePool(cfg, warm=1):
            pass


async def test_cancelled_episodes_and_pool_exit_leave_no_container(docker_ready):
    run_id = f"test-ws-{uuid.uuid4().hex[:8]}"
    async with WorkspacePool(CFG, run_id, warm=1) as pool:
        taken: list[Workspace] = []
        with anyio.move_on_after(2) as scope:
            async with pool.workspace() as ws:
                taken.append(ws)
                await ws.run("sleep 100", 60)
        assert scope.cancelled_caught
        with pytest.raises(WorkspaceError):
            await taken[0].run("true", 10)
        async with pool.workspace() as ws:
            assert (await ws.run("echo fine", 10)).stdout == "fine\n"
        assert run_containers(run_id)  # the warm one at least
    assert run_containers(run_id) == []

    run_id = f"test-ws-{uuid.uuid4().hex[:8]}"
    with anyio.move_on_after(4) as scope:  # Ctrl-C in the middle of a step: the pool is left cancelled
        async with WorkspacePool(CFG, run_id, warm=2) as pool, pool.workspace() as ws:
            await ws.run("sleep 100", 60)
    assert scope.cancelled_caught
    assert run_containers(run_id) == []


def test_reaper_removes_the_workspaces_of_a_dead_owner(docker_ready):
    run_id = f"test-ws-{uuid.uuid4().hex[:8]}"
    script = textwrap.dedent(f"""
        import anyio, sys
        from agentloop.sandbox import SandboxConfig
        from agentloop.sandbox.workspace import WorkspacePool

        async def main():
            async with WorkspacePool(SandboxConfig(memory_mb=256), {run_id!r}, warm=2) as pool:
                async with pool.workspace() as ws:
                    await ws.run("true", 10)
                    print("ready", flush=True)
                    await anyio.sleep(600)

        anyio.run(main)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        assert run_containers(run_id)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    client = docker.from_env()
    try:
        reap_dead_runs(client)
    finally:
        client.close()
    assert run_containers(run_id) == []
