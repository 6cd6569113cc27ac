"""A candidate cannot pass without passing: every known trick, graded with `agentloop grade`.

Each forged solution is a row of a samples file, next to an honest one that must pass. The same
tricks are also run through a single-process harness (test code appended to the candidate, as
HumanEval and evalplus do it) to show they are real attacks: several pass there.
"""

from __future__ import annotations

import json

import anyio
import pytest

from agentloop.cli import main
from agentloop.sandbox import DockerPool, SandboxConfig, Verdict
from agentloop.store import AttemptStore
from agentloop.tasks.extract import assemble, build_program
from agentloop.tasks.suites import load_suite

pytestmark = pytest.mark.usefixtures("docker_ready")

HONEST = "def square(x):\n    return x * x\n"

# The honest function is defined first in most tricks, then the trick tries to make the
# (wrong) function pass: each row must be graded `failed`, `error` or `timeout`, never `passed`.
FORGED = {
    "os._exit(0) at import": "import os\nos._exit(0)\n",
    "sys.exit(0) at import": "import sys\nsys.exit(0)\n",
    "os._exit(0) inside the function": "import os\ndef square(x):\n    os._exit(0)\n",
    "always-equal object": (
        "class Anything:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
        "def square(x):\n    return Anything()\n"
    ),
    "int subclass equal to everything": (
        "class Int(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "def square(x):\n    return Int(0)\n"
    ),
    "shadowed builtins": (
        "def square(x):\n    return 0\n"
        "def abs(x):\n    return 0\ndef isinstance(*a):\n    return True\ndef all(x):\n    return True\n"
        "def len(x):\n    return 0\nclass AssertionError(Exception):\n    pass\n"
    ),
    "patched builtins module": (
        "import builtins\nbuiltins.isinstance = lambda *a: True\nbuiltins.abs = lambda x: 0\n"
        "builtins.AssertionError = type('Nope', (Exception,), {})\n"
        "def square(x):\n    return 0\n"
    ),
    "patched math.isclose": "import math\nmath.isclose = lambda *a, **k: True\ndef square(x):\n    return 0\n",
    "token dug out of the harness's frames": (
        "import os, sys\n"
        "f = sys._getframe()\n"
        "while f is not None:\n"
        "    for name, value in list(f.f_locals.items()):\n"
        "        if name in ('token', 'secret') and isinstance(value, (bytes, str)):\n"
        "            os.write(3, value if isinstance(value, bytes) else value.encode() + b'\\n')\n"
        "            os._exit(0)\n"
        "    f = f.f_back\n"
        "def square(x):\n    return 0\n"
    ),
    "prints what a harness would print": (
        "import os, struct, json, sys\n"
        "fake = json.dumps({'verdict': 'passed', 'detail': ''}).encode()\n"
        "os.write(1, struct.pack('>I', len(fake)) + fake)\n"
        "print('passed'); print('All tests passed'); print(json.dumps({'kind': 'passed'}))\n"
        "sys.stdout.flush()\n"
        "def square(x):\n    return 0\n"
    ),
    "writes a token to every fd and /proc/*/fd": (
        "import os, gc, re\n"
        "tokens = {o for o in gc.get_objects() if isinstance(o, str) and re.fullmatch('[0-9a-f]{32}', o)}\n"
        "for t in tokens | {'0' * 32}:\n"
        "    for fd in range(3, 64):\n"
        "        try:\n"
        "            os.write(fd, t.encode() + b'\\n')\n"
        "        except OSError:\n"
        "            pass\n"
        "    for pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
        "        for fd in range(3, 16):\n"
        "            try:\n"
        "                with open(f'/proc/{pid}/fd/{fd}', 'wb') as f:\n"
        "                    f.write(t.encode() + b'\\n')\n"
        "            except OSError:\n"
        "                pass\n"
        "def square(x):\n    return 0\n"
    ),
    "edits test files and the tests' memory": (
        "import os\n"
        "for path in ['/scratch/job/test.py', '/tmp/test.py', '/scratch/check.py']:\n"
        "    try:\n"
        "        open(path, 'w').write('def check(candidate):\\n    pass\\n')\n"
        "    except OSError:\n"
        "        pass\n"
        "for pid in [p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]:\n"
        "    try:\n"
        "        open(f'/proc/{pid}/mem', 'r+b').close()\n"
        "        raise SystemExit('opened the memory of ' + pid)\n"
        "    except PermissionError:\n"
        "        pass\n"
        "def square(x):\n    return 0\n"
    ),
    "ptrace the tests' process": (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "for pid in [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, os.getpid())]:\n"
        "    assert libc.ptrace(16, pid, 0, 0) == -1, 'PTRACE_ATTACH worked'\n"  # 16 = PTRACE_ATTACH
        "def square(x):\n    return 0\n"
    ),
    "kills the tests' process": (
        "import os, signal\n"
        "for pid in [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, os.getpid())]:\n"
        "    os.kill(pid, signal.SIGKILL)\n"
        "def square(x):\n    return 0\n"
    ),
    "atexit handler": "import atexit, os\natexit.register(lambda: os._exit(0))\ndef square(x):\n    return 0\n",
}


# Three tests of the same function, in the styles attacks aim at: `==` (HumanEval), `abs(...)`
# (HumanEval/32), and a library comparison (evalplus uses numpy/math closeness).
PROMPT = 'def square(x):\n    """Return x * x."""\n'
TESTS = {
    "forge/eq": "def check(candidate):\n    assert candidate(3) == 9\n    assert candidate(-4) == 16\n",
    "forge/abs": "def check(candidate):\n    assert abs(candidate(3) - 9) < 1e-9\n    assert abs(candidate(-4) - 16) < 1e-9\n",
    "forge/isclose": "import math\n\ndef check(candidate):\n    assert math.isclose(candidate(3), 9)\n    assert math.isclose(candidate(-4), 16)\n",
}
# Tricks that do pass a single-process harness (the control below proves it) on these tasks.
FORGES_SINGLE_PROCESS = {
    ("always-equal object", "forge/eq"), ("shadowed builtins", "forge/abs"),
    ("patched math.isclose", "forge/isclose"),
    ("token dug out of the harness's frames", "forge/eq"),
    ("token dug out of the harness's frames", "forge/abs"),
    ("token dug out of the harness's frames", "forge/isclose"),
}


@pytest.fixture
def forge_suite(tmp_path):
    data = tmp_path / "forge.jsonl"
    data.write_text("".join(json.dumps({
        "task_id": task_id, "prompt": PROMPT, "entry_point": "square",
        "canonical_solution": "    return x * x\n", "test": test,
    }) + "\n" for task_id, test in TESTS.items()))
    suite = tmp_path / "forge.toml"
    suite.write_text(f'path = "{data}"\n')
    return suite


def verdicts(run_dir) -> dict[tuple[str, str], tuple[str, str]]:
    """(task id, completion) -> (verdict, detail)."""
    store = AttemptStore.open(run_dir)
    try:
        return {(a.task_id, a.completion): (a.verdict.value if a.verdict else a.kind.value, a.grading.detail if a.grading else "")
                for a in store.iter_attempts()}
    finally:
        store.close()


def test_no_trick_forges_a_pass(tmp_path, monkeypatch, forge_suite):
    monkeypatch.setenv("AGENTLOOP_CACHE", str(tmp_path / "cache"))
    rows = [{"task_id": t, "solution": code} for t in TESTS for code in (HONEST, *FORGED.values())]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs = tmp_path / "runs"
    assert main(["grade", str(samples), "--suite", str(forge_suite), "--runs-dir", str(runs), "--pool-size", "2"]) == 0
    (run_dir,) = list(runs.iterdir())
    got = verdicts(run_dir)
    assert len(got) == len(rows)
    assert {t: got[t, HONEST][0] for t in TESTS} == {t: "passed" for t in TESTS}
    forged = {(name, t): got[t, code] for name, code in FORGED.items() for t in TESTS}
    assert {k: v for k, v in forged.items() if v[0] not in ("failed", "error", "timeout")} == {}
    # Breaking the harness in its own process is the candidate's failure, not an infra error.
    assert forged["patched builtins module", "forge/eq"][0] == "failed"
    assert forged["sys.exit(0) at import", "forge/eq"] == ("failed", "SystemExit: 0")


def test_always_equal_cannot_pass_humanevalplus(tmp_path, monkeypatch):
    """evalplus compares with `out == exp` in the candidate's own process; here it cannot cheat."""
    monkeypatch.setenv("AGENTLOOP_CACHE", str(tmp_path / "cache"))
    _, tasks = load_suite("humanevalplus")
    task = tasks[0]
    forged = (f"class Anything:\n    def __eq__(self, other):\n        return True\n\n"
              f"def {task.entry_point}(*args):\n    return Anything()\n")
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": task.id, "solution": forged}) + "\n"
                       + json.dumps({"task_id": task.id, "completion": task.reference}) + "\n")
    assert main(["grade", str(samples), "--suite", "humanevalplus", "--runs-dir", str(tmp_path / "runs")]) == 0
    (run_dir,) = list((tmp_path / "runs").iterdir())
    got = verdicts(run_dir)
    assert got[task.id, task.reference][0] == "passed"
    assert got[task.id, forged] == ("failed", "TypeError: cannot pass a value of type __main__.Anything between the candidate and the tests")


def test_the_tricks_are_real_attacks_on_a_single_process_harness(forge_suite):
    """Control: the same tricks, with the tests appended to the candidate and run as one plain
    program (as HumanEval and evalplus do), pass; so the test above can fail."""
    _, tasks = load_suite(str(forge_suite))
    by_id = {t.id: t for t in tasks}
    results: dict[tuple[str, str], Verdict] = {}

    async def main_() -> None:
        async with DockerPool.start(SandboxConfig(pool_size=2)) as pool:
            async def one(name: str, task_id: str) -> None:
                task = by_id[task_id]
                program = build_program(task, assemble(task, FORGED[name]), task.grading_tests)
                results[name, task_id] = (await pool.run(program, 10)).verdict

            async with anyio.create_task_group() as tg:
                for name, task_id in FORGES_SINGLE_PROCESS:
                    tg.start_soon(one, name, task_id)

    anyio.run(main_)
    assert results == {key: Verdict.PASSED for key in FORGES_SINGLE_PROCESS}
