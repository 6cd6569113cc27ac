"""The math worker pool: no verdict depends on history, guard-less scripts work, a pool that cannot
answer raises, and the per-item limit is CPU time (assertions on outcomes, never on durations)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agentloop.errors import MathWorkerError
from agentloop.math.pool import CanonPool

ROOT = Path(__file__).resolve().parents[1]
MATH500 = ROOT / ".." / "shared" / "data" / "math500.jsonl"

# Answers that rebind latex2sympy2's module-level `var` ("d followed by a letter") or add to its
# `variances`: after any of them, a worker without state restoration fails every later parse.
POISON = [r"\int f(x)dx", "dx", r"f(x)dx", "We find that", r"x = 1 \text{ and } y = 2", r"\frac{dy}{dx}",
          r"y = 3", r"A = \begin{bmatrix} 1 & 2 \\ 3 & 4 \end{bmatrix}", r"\mathrm{d}t", r"\frac{d}{dx} x^2"]
PAIRS = [r"(z+1)^2", "z^2+2z+1", r"\frac{\sqrt{3}}{2}", r"\sin\left(\frac{\pi}{3}\right)", r"x^2 + y", r"y + x^2"]


@pytest.fixture(scope="module")
def one() -> CanonPool:
    pool = CanonPool(1, 2.0)
    yield pool
    pool.close()


def test_canonical_forms_do_not_depend_on_earlier_answers(one):
    before = one.map(PAIRS)
    assert before[0] is not None and before[0] == before[1]  # the pair is equal on a fresh worker
    for poison in POISON:  # one at a time, on the same (only) worker
        one.map([poison])
        assert one.map(PAIRS) == before, f"after {poison!r}"
    assert one.map(POISON + PAIRS)[len(POISON):] == before


def test_the_pool_itself_restores_latex2sympy2_state():
    """With raw latex2sympy2 as the entry (no reset of its own), only the pool stands between items."""
    pool = CanonPool(1, 2.0, entry="latex2sympy2:latex2latex")
    try:
        before = pool.map([r"(z+1)^2"])
        assert isinstance(before[0], str)
        for poison in ["dx", "We find that", r"f(x)dx"]:
            pool.map([poison])
            assert pool.map([r"(z+1)^2"]) == before, f"after {poison!r}"
    finally:
        pool.close()


def test_one_long_lived_worker_agrees_with_a_fresh_worker_per_item(one):
    """A MATH-500 stretch with the poisons mixed in: one runner for all vs a fresh fork per item."""
    answers = [json.loads(line)["answer"] for line in MATH500.open()][:20]
    items = [a for pair in zip(answers, POISON * 2, strict=True) for a in pair]
    fresh = CanonPool(1, 2.0, fresh=True)
    try:
        assert one.map(items) == fresh.map(items)
    finally:
        fresh.close()


GUARDLESS = textwrap.dedent("""\
    import agentloop
    print("MARKER", agentloop.answers_equal("-\\\\frac{1}{2}", "-0.5"), agentloop.answers_equal("(z+1)^2", "z^2+2z+1"))
""")


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


@pytest.mark.timeout(300)
def test_a_script_without_main_guard_gets_the_right_answer_once(tmp_path):
    script = tmp_path / "check.py"
    script.write_text(GUARDLESS)
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         timeout=280)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [ln for ln in out.stdout.splitlines() if "MARKER" in ln] == ["MARKER True True"]


@pytest.mark.timeout(300)
def test_code_piped_to_python_stdin_gets_the_right_answer_once(tmp_path):
    out = subprocess.run([sys.executable, "-"], input=GUARDLESS, cwd=tmp_path, env=_env(), capture_output=True,
                         text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [ln for ln in out.stdout.splitlines() if "MARKER" in ln] == ["MARKER True True"]


@pytest.mark.parametrize("python", ["/nonexistent/bin/python3", "/bin/false"])
def test_workers_that_cannot_start_raise(python):
    pool = CanonPool(1, 2.0, python=python)
    with pytest.raises(MathWorkerError, match="math workers") as e:
        pool.map([r"(z+1)^2"])
    assert "\n" not in str(e.value) and "fix:" in str(e.value)
    pool.close()


def test_runners_that_die_at_start_raise(monkeypatch):
    monkeypatch.setenv("AGENTLOOP_MATH_WORKER_FAULT", "runner-start")  # every forked runner exits at once
    pool = CanonPool(1, 2.0)
    with pytest.raises(MathWorkerError, match=r"failed its self-check .* exited with code 71"):
        pool.map([r"(z+1)^2"])
    pool.close()


def _runners(pool: CanonPool) -> list[int]:
    server = pool._server
    assert server is not None
    pid = server.proc.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _wait_dead(pid: int) -> None:
    """Until the killed process is a zombie (the kill is asynchronous); the per-test timeout guards."""
    while Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z":
        os.sched_yield()


def test_a_runner_or_server_killed_from_outside_raises_then_the_pool_starts_afresh():
    pool = CanonPool(1, 2.0)
    try:
        good = pool.map([r"(z+1)^2"])
        (runner,) = _runners(pool)
        os.kill(runner, signal.SIGKILL)
        _wait_dead(runner)
        with pytest.raises(MathWorkerError, match="died while idle"):
            pool.map([r"(z+1)^2"])
        assert pool.map([r"(z+1)^2"]) == good  # the next call starts a fresh server
        server = pool._server
        assert server is not None
        server.proc.kill()
        server.proc.wait()
        with pytest.raises(MathWorkerError, match="died"):
            pool.map([r"(z+1)^2"])
        assert pool.map([r"(z+1)^2"]) == good
    finally:
        pool.close()


def test_pathological_inputs_use_up_their_limit_and_the_worker_is_replaced(one):
    before = dict(one.counts)
    towers = [r"10^{10^{10^{10}}}", r"7^{7^{7^{7}}}"]
    assert one.map(towers) == [None, None]
    spent = {k: one.counts[k] - before.get(k, 0) for k in ("cpu", "memory", "wall", "crash")}
    assert spent["cpu"] + spent["memory"] == 2 and spent["wall"] == spent["crash"] == 0, spent
    assert one.map(PAIRS[:2])[0] == one.map(PAIRS[1:2])[0]  # the replacement answers as before


@pytest.fixture(scope="module")
def evaluator() -> CanonPool:
    """A pool whose runners evaluate Python expressions: items that sleep, spin or crash on demand."""
    pool = CanonPool(1, 0.5, entry="builtins:eval")
    yield pool
    pool.close()


def test_the_limit_is_cpu_time_and_a_wall_clock_backstop_stops_what_never_gets_cpu(evaluator):
    """An item that waits (no CPU) outlives the limit; one that computes is stopped by it; one that
    waits forever meets the backstop (3 * 0.5 + 5 s)."""
    before = dict(evaluator.counts)
    items = ["__import__('time').sleep(1.5) or 7", "sum(range(10**13))", "__import__('time').sleep(600)", "6*7"]
    assert evaluator.map(items) == [7, None, None, 42]
    assert (evaluator.counts["cpu"] - before.get("cpu", 0), evaluator.counts["wall"] - before.get("wall", 0)) == (1, 1)


def test_a_crash_is_retried_once_and_only_a_repeated_one_is_the_items_fault(evaluator, tmp_path):
    flag = tmp_path / "crash-once"
    flag.touch()
    os_ = "__import__('os')"
    once = f"({os_}.remove({str(flag)!r}), {os_}.abort()) if {os_}.path.exists({str(flag)!r}) else 5"
    always = "__import__('os').abort()"
    before = dict(evaluator.counts)
    assert evaluator.map([once, always, "1+1"]) == [5, None, 2]
    spent = {k: evaluator.counts[k] - before.get(k, 0) for k in ("recovered", "crash", "ok")}
    assert spent == {"recovered": 1, "crash": 1, "ok": 1}


@pytest.mark.timeout(300)
def test_results_under_cpu_load_equal_results_on_a_quiet_machine(one, evaluator):
    items = [r"(x+1)^{12}", r"\sin^2 x + \cos^2 x", r"\frac{x^3-1}{x-1}", r"\sqrt{50} + \sqrt{18}", r"e^{i\pi}",
             r"\binom{20}{10}", r"\tan^2 x + 1", r"(1+\sqrt{2})^{6}", r"(x+1)^{200}", r"\sin^{10} x + \cos^{10} x"]
    quiet = one.map(items)
    assert all(r is not None for r in quiet)
    # ~0.1 s of CPU each under a 0.5 s CPU limit: several times 0.5 s of wall time on the loaded machine
    spinning = ["sum(range(5 * 10**6))"] * 3
    spin = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3 * (os.cpu_count() or 1))]
    try:
        loaded = one.map(items)
        computed = evaluator.map(spinning)
    finally:
        for p in spin:
            p.kill()
            p.wait()
    assert loaded == quiet
    assert computed == [sum(range(5 * 10**6))] * 3


def test_concurrent_callers_each_get_their_own_results(one):
    import threading

    got: dict[int, list] = {}

    def call(i: int) -> None:
        got[i] = one.map([f"{i} x + x", f"(x+{i})^2"])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert got[i] == one.map([f"{i} x + x", f"(x+{i})^2"])
