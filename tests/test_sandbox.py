"""The Docker sandbox against the real engine and image: verdicts, isolation, clean-up, recovery."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid

import anyio
import docker
import pytest

from agentloop.errors import DockerUnavailable, ImageMissing
from agentloop.sandbox import DockerPool, ExecResult, SandboxConfig, Verdict, exec_file, reap_dead_runs
from agentloop.sandbox.docker_pool import GRACE_S

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.usefixtures("docker_ready")]

CFG = SandboxConfig(pool_size=2, memory_mb=256, output_limit_bytes=4096)
ONLY_ME = """
import os
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
assert pids == sorted({1, os.getpid()}), f"leftover processes: {pids}"
"""


@pytest.fixture(scope="module")
async def pool(docker_ready):
    """Two containers, shared by the stateless tests."""
    async with DockerPool.start(CFG) as p:
        yield p


@pytest.fixture(scope="module")
async def pool1(docker_ready):
    """One container, so consecutive jobs are known to share it."""
    async with DockerPool.start(SandboxConfig(pool_size=1, memory_mb=256)) as p:
        yield p


def run_containers(run_id: str) -> list:
    client = docker.from_env()
    try:
        return client.containers.list(all=True, filters={"label": f"agentloop.run={run_id}"})
    finally:
        client.close()


async def run(pool: DockerPool, program: str, timeout_s: float = 10) -> ExecResult:
    return await pool.run(textwrap.dedent(program), timeout_s)


# --- verdicts ----------------------------------------------------------------------------------

VERDICTS = {
    "passes": ('print("hello")', Verdict.PASSED, ""),
    "assertion": ('assert 1 + 1 == 3, "math is off"', Verdict.FAILED, "AssertionError: math is off"),
    "type_error": ('def f(x):\n    return x + "a"\nf(1)', Verdict.FAILED, "TypeError: unsupported operand"),
    "syntax_error": ("def (:", Verdict.FAILED, "SyntaxError"),
    "exit_nonzero": ("import sys\nsys.exit(3)", Verdict.FAILED, "exited with status 3"),
    "sys_exit_0_midway": ("import sys\nsys.exit(0)\nassert False", Verdict.FAILED, "not a pass"),
    "os_exit_0_midway": ("import os\ndef check():\n    os._exit(0)\n    assert False\ncheck()", Verdict.FAILED, "not a pass"),
    "infinite_loop": ("while True:\n    pass", Verdict.TIMEOUT, "timed out after 1 s"),
    "segfault": ("import ctypes\nctypes.string_at(0)", Verdict.ERROR, "signal 11 (SIGSEGV)"),
    "recursion": ("def f(n):\n    return f(n + 1)\nf(0)", Verdict.ERROR, "RecursionError"),
    "memory_error": ("x = bytearray(10**13)", Verdict.ERROR, "MemoryError"),
}


@pytest.mark.parametrize("case", list(VERDICTS))
async def test_verdicts(pool, case):
    program, verdict, detail = VERDICTS[case]
    r = await pool.run(program, 1)
    assert (r.verdict, detail in r.detail) == (verdict, True), r
    if verdict is Verdict.PASSED:
        assert (r.stdout, r.exit_code, r.detail) == ("hello\n", 0, "")
    if case == "assertion":
        assert "Traceback" in r.stderr and 'File "<candidate>", line 1' in r.stderr
    if case == "infinite_loop":
        assert r.signal == 9 and r.cpu_s >= 1  # killed at the limit (CPU seconds), not before


async def test_memory_bomb_is_an_error_and_the_container_survives(pool1):
    r = await run(pool1, """
        blocks = []
        while True:
            blocks.append(b"x" * 10_000_000)
    """)
    assert r.verdict is Verdict.ERROR and ("OOM" in r.detail or "MemoryError" in r.detail), r
    assert (await run(pool1, "print(sum(range(10)))")).stdout == "45\n"


async def test_timeout_kills_sigterm_ignorers_and_setsid_escapees(pool1):
    r = await run(pool1, """
        import os, signal, time
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if os.fork() == 0:
                os.setsid()  # leaves the job's process group
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                time.sleep(1000)
            time.sleep(1000)
        while True:  # over the CPU limit (sleeping alone would wait for the wall-clock backstop)
            pass
    """, timeout_s=1)
    assert r.verdict is Verdict.TIMEOUT and r.detail.startswith("timed out after 1 s"), r
    after = await run(pool1, ONLY_ME)
    assert after.verdict is Verdict.PASSED, after


async def test_daemon_left_by_a_passing_program_is_killed(pool1):
    r = await run(pool1, """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(1000)
            os._exit(0)
        os.wait()
        print("main done")
    """)
    assert (r.verdict, r.stdout) == (Verdict.PASSED, "main done\n"), r
    after = await run(pool1, ONLY_ME)
    assert after.verdict is Verdict.PASSED, after


async def test_huge_output_is_truncated_head_and_tail(pool):
    r = await run(pool, """
        import sys
        print("FIRST LINE")
        chunk = "y" * 1023 + "\\n"
        for _ in range(300_000):  # 300 MB
            sys.stdout.write(chunk)
        print("LAST LINE")
        sys.stderr.write("e" * 100_000)
    """, timeout_s=30)
    assert r.verdict is Verdict.PASSED and r.truncated, r.detail
    assert r.stdout.startswith("FIRST LINE\n") and r.stdout.endswith("LAST LINE\n")
    assert "bytes truncated" in r.stdout and len(r.stdout) < CFG.output_limit_bytes + 100
    assert len(r.stderr) < CFG.output_limit_bytes + 100


async def test_large_program_round_trips(pool):
    program = "data = " + repr(list(range(100_000))) + "\nassert sum(data) == 4999950000\nprint('ok')\n"
    assert len(program) > 500_000
    r = await pool.run(program, 30)
    assert (r.verdict, r.stdout) == (Verdict.PASSED, "ok\n"), r


# --- isolation ---------------------------------------------------------------------------------


async def test_no_network(pool):
    r = await run(pool, """
        import socket
        for addr in [("1.1.1.1", 53), ("8.8.8.8", 443)]:
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect(addr)
            except OSError as e:
                print("blocked", e.errno)
            else:
                raise AssertionError(f"connected to {addr}")
        ifaces = [line.split(":")[0].strip() for line in open("/proc/net/dev").readlines()[2:]]
        assert ifaces == ["lo"], ifaces
    """)
    assert r.verdict is Verdict.PASSED and r.stdout.count("blocked") == 2, r


async def test_read_only_root_and_unprivileged_user(pool):
    r = await run(pool, """
        import errno, os
        assert (os.getuid(), os.getgid(), os.geteuid()) == (65534, 65534, 65534)
        for path in ["/var/tmp/x", "/x", "/usr/lib/x"]:  # /var/tmp is world-writable: only ro stops it
            try:
                open(path, "w")
            except OSError as e:
                assert e.errno in (errno.EROFS, errno.EACCES), e
            else:
                raise AssertionError(f"wrote {path}")
        try:
            open("/var/tmp/y", "w")
        except OSError as e:
            assert e.errno == errno.EROFS, e
        caps = [l for l in open("/proc/self/status") if l.startswith("CapEff")]
        assert caps == ["CapEff:\\t0000000000000000\\n"], caps
        print(os.getcwd())
    """)
    assert r.verdict is Verdict.PASSED, r
    assert r.stdout.startswith("/scratch/")


async def test_no_host_environment(docker_ready, tmp_path, monkeypatch):
    marker = f"AGENTLOOP_TEST_{uuid.uuid4().hex}"
    monkeypatch.setenv(marker, "leak")
    prog = tmp_path / "env.py"
    prog.write_text(f"import os\nassert {marker!r} not in os.environ\nprint(sorted(os.environ))\n")
    r = await exec_file(prog, 10, SandboxConfig())
    assert r.verdict is Verdict.PASSED, r
    assert marker not in r.stdout and "HOME" in r.stdout


async def test_scratch_is_wiped_between_jobs(pool1):
    write = await run(pool1, """
        import os
        open("here.txt", "w").write("x")
        os.mkdir("sub"); os.chmod("sub", 0o500)  # a read-only dir must not survive either
        for d in ["/tmp", "/scratch", "/dev/shm"]:
            open(os.path.join(d, "left.txt"), "w").write("x")
    """)
    assert write.verdict is Verdict.PASSED, write
    check = await run(pool1, """
        import os
        assert os.listdir(".") == [], os.listdir(".")
        for d in ["/tmp", "/dev/shm"]:
            assert os.listdir(d) == [], (d, os.listdir(d))
        assert os.listdir("/scratch") == [os.path.basename(os.getcwd())]
    """)
    assert check.verdict is Verdict.PASSED, check


# --- recovery ----------------------------------------------------------------------------------


async def test_program_killing_its_executor_gets_a_verdict_and_pool_stays_full(pool):
    r = await run(pool, """
        import os, signal
        os.kill(os.getppid(), signal.SIGKILL)
        os.kill(1, signal.SIGKILL)
        print("still here")
    """)
    assert r.verdict in (Verdict.PASSED, Verdict.ERROR), r  # the executor is PID 1: signals bounce
    results = await _concurrently(pool, ["import time; time.sleep(0.5); print('ok')"] * CFG.pool_size)
    assert [x.stdout for x in results] == ["ok\n"] * CFG.pool_size
    assert len([c for c in run_containers(pool.run_id) if c.status == "running"]) == CFG.pool_size


async def test_dead_container_is_replaced_and_job_retried(pool1):
    started, retries = pool1.stats.started, pool1.stats.retries
    async with anyio.create_task_group() as tg:
        tg.start_soon(_kill_run_after, pool1.run_id, 0.5)
        r = await run(pool1, "import time; time.sleep(1.5); print('done')")
    assert (r.verdict, r.stdout) == (Verdict.PASSED, "done\n"), r
    assert pool1.stats.retries == retries + 1 and pool1.stats.started >= started + 1


async def test_program_that_kills_its_sandbox_twice_is_an_error(pool1):
    retries, started = pool1.stats.retries, pool1.stats.started

    async def killer() -> None:
        await _kill_run_after(pool1.run_id, 0.5)
        # wait for the retry on a fresh container (its start may take seconds on a loaded machine)
        while pool1.stats.retries == retries or pool1.stats.started == started:
            await anyio.sleep(0.05)
        await _kill_run_after(pool1.run_id, 0.5)

    async with anyio.create_task_group() as tg:
        tg.start_soon(killer)
        r = await run(pool1, "import time; time.sleep(5)")
    assert (r.verdict, r.detail) == (Verdict.ERROR, "sandbox died twice running this program"), r
    assert (await run(pool1, "print(1)")).verdict is Verdict.PASSED


async def test_watchdog_replaces_a_hung_executor(pool1):
    (container,) = [c for c in run_containers(pool1.run_id) if c.status == "running"]
    await anyio.to_thread.run_sync(container.pause)  # the executor stops answering
    t0 = time.monotonic()
    r = await run(pool1, "print('fresh')", timeout_s=1)
    assert (r.verdict, r.stdout) == (Verdict.PASSED, "fresh\n"), r
    assert time.monotonic() - t0 >= 1 + GRACE_S  # the watchdog gave the executor its grace first
    assert container.id not in {c.id for c in run_containers(pool1.run_id)}


async def test_engine_failure_is_infra_error_and_pool_recovers(pool1, monkeypatch):
    def broken(name: str):
        raise docker.errors.APIError("engine is broken")

    monkeypatch.setattr(pool1, "_create_container", broken)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_kill_run_after, pool1.run_id, 0.3)
        r = await run(pool1, "import time; time.sleep(2)")
    assert r.verdict is Verdict.INFRA_ERROR and "engine is broken" in r.detail, r
    monkeypatch.undo()
    assert (await run(pool1, "print(2)")).stdout == "2\n"


async def _kill_run_after(run_id: str, delay_s: float) -> None:
    await anyio.sleep(delay_s)
    for c in await anyio.to_thread.run_sync(run_containers, run_id):
        await anyio.to_thread.run_sync(c.kill)


async def _concurrently(pool: DockerPool, programs: list[str], timeout_s: float = 10) -> list[ExecResult]:
    results: list[ExecResult | None] = [None] * len(programs)

    async def one(i: int) -> None:
        results[i] = await pool.run(programs[i], timeout_s)

    async with anyio.create_task_group() as tg:
        for i in range(len(programs)):
            tg.start_soon(one, i)
    return results  # type: ignore[return-value]


async def test_many_jobs_over_a_small_pool(pool):
    programs = [
        f"import random, time\ntime.sleep(random.random() / 20)\nprint({i})\nassert {i} % 3 != 0, 'multiple of 3'"
        for i in range(40)
    ]
    results = await _concurrently(pool, programs)
    for i, r in enumerate(results):
        assert r.stdout == f"{i}\n", (i, r)
        assert r.verdict is (Verdict.FAILED if i % 3 == 0 else Verdict.PASSED), (i, r)


# --- lifecycle ---------------------------------------------------------------------------------


async def test_exit_removes_all_containers_even_when_cancelled(docker_ready):
    async with DockerPool.start(SandboxConfig(pool_size=2)) as p:
        run_id = p.run_id
        assert len(run_containers(run_id)) == 2
    assert run_containers(run_id) == []

    with anyio.move_on_after(1.5):
        async with DockerPool.start(SandboxConfig(pool_size=2)) as p:
            run_id = p.run_id
            await p.run("import time; time.sleep(30)", 60)  # cancelled mid-job
    assert run_containers(run_id) == []
    assert p.stats.started == 2


async def test_start_up_errors_are_one_line_user_errors(docker_ready):
    with pytest.raises(ImageMissing, match="agentloop sandbox build"):
        async with DockerPool.start(SandboxConfig(image="agentloop-missing:none", pool_size=1)):
            pass
    broken = DockerPool.start(SandboxConfig(runtime="agentloop-no-such-runtime", pool_size=1))
    with pytest.raises(DockerUnavailable, match="could not start a sandbox container") as info:
        async with broken:
            pass
    assert "\n" not in str(info.value)
    assert run_containers(broken.run_id) == []


def test_reaper_removes_containers_of_dead_owners(docker_ready):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    client = docker.from_env()
    run_id = f"test-reap-{uuid.uuid4().hex[:8]}"

    def make(pid: int, host: str):
        return client.containers.create(docker_ready, command=["true"], labels={
            "agentloop.run": run_id, "agentloop.owner_pid": str(pid), "agentloop.owner_host": host,
        })

    orphan, alive, elsewhere = make(dead.pid, socket.gethostname()), make(os.getpid(), socket.gethostname()), make(dead.pid, "other-host")
    try:
        assert reap_dead_runs(client) >= 1
        left = {c.id for c in run_containers(run_id)}
        assert orphan.id not in left and {alive.id, elsewhere.id} <= left
    finally:
        for c in run_containers(run_id):
            c.remove(force=True)
        client.close()
