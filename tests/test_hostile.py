"""Hostile candidates, graded the way every attempt is graded (tests and candidate in two processes).

For each attack: the right verdict; afterwards the same container has nothing left (only its
executor runs, scratch, /tmp and /dev/shm are empty) and grades an honest candidate again; the
host is untouched. Plain-program variants of some attacks are in test_sandbox.py.
"""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import anyio
import docker
import pytest

from agentloop.sandbox import DockerPool, SandboxConfig, Verdict

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.usefixtures("docker_ready")]

CFG = SandboxConfig(pool_size=1, memory_mb=256, scratch_mb=16, pids_limit=64, output_limit_bytes=4096)
TESTS = "def check(candidate):\n    assert candidate(3) == 9\n"
HONEST = "def f(x):\n    return x * x\n"
HOST_MARKER = Path(f"/tmp/agentloop-hostile-{uuid.uuid4().hex}")

# Programs whose function f is right, but which attack something on the way: their verdict shows
# whether the attack was contained (`passed` only where containing it leaves the answer right).
HOSTILE: dict[str, tuple[str, Verdict, str | tuple[str, ...]]] = {
    "fork bomb": ("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """, Verdict.TIMEOUT, "timed out"),
    "memory bomb": ("""
        blocks = []
        while True:
            blocks.append(bytearray(10_000_000))
        """, Verdict.ERROR, ("OOM", "MemoryError")),  # whichever comes first
    "infinite loop in the function": ("""
        def f(x):
            while True:
                pass
        """, Verdict.TIMEOUT, "timed out after 2 s"),
    "SIGTERM-ignoring child that outlives it": ("""
        import os, signal, time
        if os.fork() == 0:
            os.setsid()
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if os.fork() == 0:
                time.sleep(1000)
            os._exit(0)
        def f(x):
            return x * x
        """, Verdict.PASSED, ""),
    "fills scratch, /tmp and /dev/shm": ("""
        import errno, os
        for d in (".", "/tmp", "/dev/shm"):
            try:
                with open(os.path.join(d, "fill"), "wb") as out:
                    for _ in range(200):
                        out.write(b"x" * (1 << 20))
                        out.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
        def f(x):
            return x * x
        """, Verdict.PASSED, ""),
    "writes outside scratch": (f"""
        import errno
        for path in ("/usr/lib/python3/x.py", "/etc/passwd", "/x", "/var/tmp/x", "{HOST_MARKER}"):
            try:
                open(path, "a").write("owned")
            except OSError as e:
                assert e.errno in (errno.EROFS, errno.EACCES, errno.ENOENT), (path, e)
        def f(x):
            return x * x
        """, Verdict.PASSED, ""),  # the marker lands in the container's own /tmp, never the host's
    "opens network connections": ("""
        import socket
        def f(x):
            socket.create_connection(("1.1.1.1", 80), timeout=1)
            return x * x
        """, Verdict.FAILED, "OSError"),
    "reads /proc, the environment and mounted paths for secrets": ("""
        import os
        SANDBOX_ENV = {"HOME", "HOSTNAME", "LANG", "PATH", "PYTHONDONTWRITEBYTECODE",
                       "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"}
        DOCKER_FILES = {"/etc/resolv.conf", "/etc/hostname", "/etc/hosts"}  # read-only, no secrets

        def readable(path):  # and not empty (Docker masks some /proc files with /dev/null)
            try:
                if os.path.isdir(path):
                    return bool(os.listdir(path))
                with open(path, "rb") as fh:
                    return bool(fh.read(1))
            except OSError:
                return False

        def executor_mount(fields):  # our own code, bind-mounted read-only
            return fields[4] == "/opt/agentloop/agentloop_executor" and "ro" in fields[5].split(",")

        def f(x):
            leaks = [k for k in os.environ if k not in SANDBOX_ENV]
            me = str(os.getpid())
            for pid in (p for p in os.listdir("/proc") if p.isdigit() and p != me):
                for what in ("environ", "mem", "fd/0", "fd/3", "fd/4", "maps", "root/"):
                    if readable(f"/proc/{pid}/{what}"):
                        leaks.append(f"/proc/{pid}/{what}")
            for path in ("/var/run/docker.sock", "/run/docker.sock", "/root", "/etc/shadow", "/proc/kcore",
                         "/home", "/work", "/sys/kernel/security", "/proc/keys"):
                if readable(path):
                    leaks.append(path)
            for line in open("/proc/self/mountinfo"):
                fields = line.split()
                fstype = fields[fields.index("-") + 1]
                if fstype not in ("overlay", "proc", "tmpfs", "devpts", "sysfs", "cgroup", "cgroup2", "mqueue") \\
                        and fields[4] not in DOCKER_FILES and not executor_mount(fields):
                    leaks.append("mount " + fields[4])
            return leaks or x * x
        """, Verdict.PASSED, ""),
    "kills PID 1 and its parent": ("""
        import os, signal
        for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGSTOP):
            os.kill(1, sig)
            os.kill(os.getppid(), sig)
        def f(x):
            return x * x
        """, Verdict.PASSED, ""),  # PID 1 ignores signals it has no handler for
    "kills every process it can": ("""
        import os, signal
        os.kill(-1, signal.SIGKILL)
        """, Verdict.ERROR, "killed by signal 9"),
    "prints a gigabyte": ("""
        import sys
        block = b"y" * (1 << 20)
        for _ in range(1024):
            sys.stdout.buffer.write(block)
        def f(x):
            return x * x
        """, Verdict.PASSED, ""),
    "deep recursion": ("""
        def f(x):
            return f(x + 1)
        """, Verdict.ERROR, "RecursionError"),
    "deep recursion past the C stack": ("""
        import sys
        sys.setrecursionlimit(10**8)
        def f(x):
            return f(x + 1) + 1
        """, Verdict.ERROR, ("signal 11 (SIGSEGV)", "OOM")),  # the stack hits a limit first
    "segfault": ("""
        import ctypes
        def f(x):
            return ctypes.string_at(0)
        """, Verdict.ERROR, "signal 11 (SIGSEGV)"),
}

CLEAN = """
import os
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
assert pids == sorted({1, os.getpid()}), f"leftover processes: {pids}"
for d in ("/scratch/job", "/tmp", "/dev/shm"):
    left = os.listdir(d) if os.path.isdir(d) else []
    assert left == [], (d, left)
"""


@pytest.fixture(scope="module")
async def pool(docker_ready):
    async with DockerPool.start(CFG) as p:
        yield p
    client = docker.from_env()
    try:
        assert client.containers.list(all=True, filters={"label": f"agentloop.run={p.run_id}"}) == []
    finally:
        client.close()


def _container_processes(run_id: str) -> list[list[str]]:
    client = docker.from_env()
    try:
        (container,) = client.containers.list(filters={"label": f"agentloop.run={run_id}"})
        return container.top()["Processes"]
    finally:
        client.close()


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_hostile_candidate_is_contained(pool, case):
    source, verdict, detail = HOSTILE[case]
    r = await pool.run_tests(textwrap.dedent(source), TESTS, "f", 2)
    details = detail if isinstance(detail, tuple) else (detail,)
    assert (r.verdict, any(d in r.detail for d in details)) == (verdict, True), r
    if case == "prints a gigabyte":
        assert r.truncated and len(r.stdout) < CFG.output_limit_bytes + 100
    # Nothing left behind, seen from inside and from the host, and the pool grades again.
    clean = await pool.run(CLEAN, 10)
    assert clean.verdict is Verdict.PASSED, clean
    processes = await anyio.to_thread.run_sync(_container_processes, pool.run_id)
    assert len(processes) == 1, processes  # the executor only
    honest = await pool.run_tests(HONEST, TESTS, "f", 10)
    assert honest.verdict is Verdict.PASSED, honest
    assert not HOST_MARKER.exists()
