"""Time limits that do not depend on machine load: a job is charged the CPU seconds of its
processes, not wall time, and grading and feedback tests run in one job against fresh candidate
forks. Real Docker engine throughout; no wall-clock thresholds (verdicts and the CPU seconds the
results report are what is asserted)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap

import anyio
import pytest

from agentloop.sandbox import DockerPool, SandboxConfig, Verdict
from agentloop.sandbox.types import Tests
from agentloop.tasks.extract import assemble
from agentloop.tasks.suites import load_suite
from agentloop.verify import calibrate_time_limits, grade

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.usefixtures("docker_ready")]

LOOP_TESTS = "def check(candidate):\n    assert candidate(3) == 9\n"


async def test_a_job_stopped_for_a_second_still_passes_at_a_half_second_limit():
    """A stalled machine (SIGSTOP of the job's processes for 1 s, through the executor's test hook)
    costs wall time, not CPU time: 20 smoke references at a 0.5 s limit all pass."""
    _, tasks = load_suite("smoke")
    jobs = [tasks[i % len(tasks)] for i in range(20)]
    async with DockerPool.start(SandboxConfig(pool_size=2)) as pool:
        pool.job_extra = {"stall_s": 1.0}
        results = []

        async def one(task):
            results.append(await grade(pool, task, task.reference or "", time_limit_s=0.5))

        async with anyio.create_task_group() as tg:
            for task in jobs:
                tg.start_soon(one, task)
    assert [(r.verdict, r.detail) for r in results] == [(Verdict.PASSED, "")] * 20
    assert all(r.cpu_s is not None and r.cpu_s < 0.5 for r in results)
    # the hook did stall them: each job took its second of wall time
    assert all(r.duration_s > r.cpu_s for r in results)


async def test_a_real_loop_times_out_on_cpu_seconds_and_a_sleeper_at_the_backstop():
    async with DockerPool.start(SandboxConfig(pool_size=1)) as pool:
        looping = await pool.run_tests("def f(x):\n    while True:\n        pass\n", LOOP_TESTS, "f", 0.5)
        forking = await pool.run_tests(textwrap.dedent("""
            import os
            def f(x):
                for _ in range(3):  # CPU burnt in other processes counts too
                    if os.fork() == 0:
                        while True:
                            pass
                return x * x
            """), "def check(candidate):\n    assert candidate(3) == 9\n    while True:\n        pass\n", "f", 0.5)
        sleeping = await pool.run_tests("import time\ndef f(x):\n    time.sleep(1000)\n", LOOP_TESTS, "f", 0.2)
    assert looping.verdict is Verdict.TIMEOUT and looping.cpu_s >= 0.5, looping
    assert looping.detail.startswith("timed out after 0.5 s (used "), looping.detail
    assert forking.verdict is Verdict.TIMEOUT and forking.cpu_s >= 0.5, forking
    assert sleeping.verdict is Verdict.TIMEOUT and sleeping.cpu_s < 0.2, sleeping
    assert "sleeping or blocked" in sleeping.detail


BURN = "import os, time\ndef burn(s):\n    t = time.process_time()\n    while time.process_time() - t < s:\n        pass\n"
ESCAPES = {
    "waited child": "def f(x):\n    p = os.fork()\n    if p == 0:\n        burn(0.3); os._exit(0)\n    os.waitpid(p, 0)\n    return x\n",
    "zombie left to the executor": (
        "def f(x):\n    p = os.fork()\n    if p == 0:\n        burn(0.3); os._exit(0)\n"
        "    while open('/proc/%d/stat' % p).read().rsplit(') ', 1)[1][0] != 'Z':\n        time.sleep(0.01)\n    return x\n"),
    "setsid escapee": "def f(x):\n    p = os.fork()\n    if p == 0:\n        os.setsid(); burn(0.3); os._exit(0)\n    os.waitpid(p, 0)\n    return x\n",
}


@pytest.mark.parametrize("case", list(ESCAPES))
async def test_cpu_burnt_in_any_descendant_is_charged(case):
    """RLIMIT_CPU is per process; the job's charge is not: 0.3 CPU s burnt in a child, whether
    the candidate reaps it, leaves it a zombie or setsid()s it away, is in the result."""
    async with DockerPool.start(SandboxConfig(pool_size=1)) as pool:
        r = await pool.run_tests(BURN + ESCAPES[case], "def check(candidate):\n    assert candidate(1) == 1\n", "f", 5)
        over = await pool.run_tests(BURN + ESCAPES[case], "def check(candidate):\n    assert candidate(1) == 1\n", "f", 0.2)
    assert r.verdict is Verdict.PASSED and r.cpu_s >= 0.3, r
    assert over.verdict is Verdict.TIMEOUT and over.cpu_s >= 0.2, over


async def test_suites_of_one_job_run_against_fresh_candidates_with_their_own_verdicts():
    candidate = textwrap.dedent("""
        import os
        calls = []
        def bump():
            calls.append(1)
            with open("/scratch/job/mark", "a") as fh:
                fh.write("x")
            return len(calls), os.path.getsize("/scratch/job/mark")
        """)
    first = "def check(candidate):\n    assert candidate() == (1, 1)\n    assert candidate() == (2, 2)\n"
    second = "def check(candidate):\n    assert candidate() == (1, 1), 'saw the first suite'\n    assert False, 'fails on its own'\n"
    looping = "def check(candidate):\n    while True:\n        pass\n"
    async with DockerPool.start(SandboxConfig(pool_size=1)) as pool:
        a, b = await pool.run_suites(candidate, [Tests(first, "bump"), Tests(second, "bump")], 2)
        c, d = await pool.run_suites(candidate, [Tests(looping, "bump"), Tests(first, "bump")], 0.5)
        jobs = pool.stats.jobs
    assert a.verdict is Verdict.PASSED, a
    assert (b.verdict, b.detail) == (Verdict.FAILED, "AssertionError: fails on its own"), b
    assert c.verdict is Verdict.TIMEOUT and d.verdict is Verdict.PASSED, (c, d)  # each suite has its own limit
    assert jobs == 2


@pytest.mark.slow
async def test_humanevalplus_references_pass_under_cpu_and_disk_load(tmp_path):
    """Calibrate on an idle machine, then grade all 164 HumanEval+ references while four
    busy loops hog the CPUs and a process writes to disk as fast as it can: all pass."""
    suite, tasks = load_suite("humanevalplus")
    async with DockerPool.start(SandboxConfig(pool_size=2)) as pool:
        limits = await calibrate_time_limits(pool, tasks, suite, "agentloop-sandbox:latest")
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4)]
        disk = tempfile.NamedTemporaryFile(dir=tmp_path)
        hogs.append(subprocess.Popen([sys.executable, "-c",
                                      "import os, sys\nf = open(sys.argv[1], 'wb')\nb = os.urandom(1 << 20)\n"
                                      "while True:\n    f.write(b); f.flush(); os.fsync(f.fileno())\n"
                                      "    f.seek(0) if f.tell() > (1 << 30) else None\n", disk.name]))
        results = {}
        try:
            async def one(task):
                results[task.id] = await pool.run_tests(assemble(task, task.reference or ""), task.grading_tests,
                                                        task.entry_point, limits[task.id])

            async with anyio.create_task_group() as tg:
                for task in tasks:
                    tg.start_soon(one, task)
        finally:
            for p in hogs:
                p.kill()
                p.wait()
    not_passed = {k: (r.verdict.value, r.detail, r.cpu_s, limits[k]) for k, r in results.items() if r.verdict is not Verdict.PASSED}
    assert not_passed == {}
