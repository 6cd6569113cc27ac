"""Agent episodes end to end: `agentloop run --splits agent:NxM` with a real Docker engine (job
sandbox and workspaces), real SQLite, and a scripted server that acts as an agent: it reads each
observation and decides its next action, so a task is solved only if the observations reach it."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentloop.agent.config import AgentConfig
from agentloop.attempt import Attempt, AttemptKind
from agentloop.config import RunConfig
from agentloop.model.config import ModelConfig, SamplingParams
from agentloop.model.scripted import ScriptedReply, ScriptedRequest, scripted_server_in_thread
from agentloop.runner import run
from agentloop.sandbox import SandboxConfig, Verdict
from agentloop.store import AttemptStore
from agentloop.tasks.suites import load_suite

pytestmark = pytest.mark.usefixtures("docker_ready")

SUITE, TASKS = load_suite("smoke")
SQUARE = next(t for t in TASKS if t.entry_point == "square")
WRONG = "def square(x):\n    return x + x\n"
RIGHT = "def square(x):\n    return x * x\n"
AGENTLOOP = str(Path(sys.executable).parent / "agentloop")


def bash(command: str, text: str = "Next step.") -> str:
    return f"{text}\n```bash\n{command}\n```"


def write(code: str) -> str:
    return f"cat > solution.py <<'EOF'\n{code}EOF"


def step_of(request: ScriptedRequest) -> int:
    return sum(m["role"] == "assistant" for m in request.messages)


def observation(request: ScriptedRequest) -> str:
    last = request.messages[-1]
    return last.get("content") or "" if last["role"] in ("user", "tool") and step_of(request) else ""


def solver(request: ScriptedRequest) -> str:
    """Writes a wrong square, runs the visible tests, fixes it only after seeing them fail, checks, submits."""
    step, seen = step_of(request), observation(request)
    if step == 0:
        return bash(write(WRONG))
    if step in (1, 3):
        return bash("python3 test_solution.py")
    if step == 2:
        return bash(write(RIGHT)) if "AssertionError" in seen else bash("submit")
    return bash("submit") if "visible tests passed" in seen else bash("python3 test_solution.py")


def run_agent(tmp_path: Path, script: Any, splits: list[str], *, agent: AgentConfig | None = None,
              budget: int | None = None, budget_unit: str = "generations", **server: Any) -> list[Attempt]:
    with scripted_server_in_thread(script, **server) as srv:
        cfg = RunConfig(suite="smoke", task_ids=[SQUARE.id], splits=splits, runs_dir=str(tmp_path),
                        budget=budget, budget_unit=budget_unit,
                        model=ModelConfig(base_url=srv.base_url, model="scripted", max_retries=0),
                        sampling=SamplingParams(max_tokens=256, seed=1),
                        sandbox=SandboxConfig(pool_size=2), agent=agent or AgentConfig(step_timeout_s=3))
        report = anyio.run(run, cfg)
    store = AttemptStore.open(Path(report.run_dir))
    try:
        return sorted(store.iter_attempts(with_messages=True), key=lambda a: (a.strategy, a.chain, a.turn))
    finally:
        store.close()


def episode(a: Attempt) -> dict[str, Any]:
    return a.extra["episode"]


def grading_only_lines(task) -> list[str]:
    feedback = set(task.feedback_tests.splitlines())
    lines = task.grading_tests.splitlines()
    return [ln.strip() for ln in lines if ln.strip().startswith("assert") and ln not in feedback]


def test_an_episode_solves_a_task_only_through_its_observations(tmp_path):
    rows = run_agent(tmp_path, solver, ["agent:1x8"])
    assert [a.kind for a in rows] == [AttemptKind.COMPLETED] * 5
    failed, passed = Verdict.FAILED, Verdict.PASSED
    assert [a.verdict for a in rows] == [failed, failed, passed, passed, passed]
    assert [episode(a)["outcome"] for a in rows] == [None, None, None, None, "submitted"]
    assert "AssertionError" in rows[1].feedback and "visible tests passed" in rows[3].feedback
    assert rows[0].code == WRONG and rows[-1].code == RIGHT
    # Every step's prompt extends the previous one unchanged (prefix cache), with the reply and its observation.
    for prev, cur in itertools.pairwise(rows):
        assert cur.messages[: len(prev.messages)] == prev.messages
        assert cur.messages[len(prev.messages):] == [episode(prev)["assistant"], *episode(prev)["observation_messages"]]
    assert all(a.cached_prompt_tokens for a in rows[1:])
    # The grading tests never reach the model (or the workspace): no observation holds a grading-only line.
    for a in rows:
        assert not any(line in json.dumps(a.messages) + (a.feedback or "") for line in grading_only_lines(SQUARE))


def test_format_errors_step_and_token_limits(tmp_path):
    def chatty(request: ScriptedRequest) -> str:
        return "I think the answer is x*x." if step_of(request) % 2 == 0 else "```python\nprint(1)\n```"

    rows = run_agent(tmp_path / "fmt", chatty, ["agent:1x8"], agent=AgentConfig(max_format_errors=3))
    assert [episode(a)["outcome"] for a in rows] == [None, None, "format_errors"]
    assert "Format error" in rows[0].feedback and episode(rows[-1])["format_errors"] == 3
    assert all(a.verdict is Verdict.FAILED for a in rows)  # graded on the untouched stub

    def idle(request: ScriptedRequest) -> str:
        return bash("ls")

    rows = run_agent(tmp_path / "steps", idle, ["agent:2x3"])
    assert [(a.chain, a.turn, episode(a)["outcome"]) for a in rows] == [
        (0, 0, None), (0, 1, None), (0, 2, "step_limit"), (1, 0, None), (1, 1, None), (1, 2, "step_limit")]
    assert "solution.py" in rows[0].feedback and "test_solution.py" in rows[0].feedback

    def sleepy(request: ScriptedRequest) -> ScriptedReply:  # a slow model: 1 s per reply, not counted
        return ScriptedReply(texts=[bash("sleep 0.5")], delay_s=1.0)

    # The time limit counts the actions' time in the workspace, not the model's: the episode ends at the
    # first step whose actions bring the total to 1.2 s (a wall-clock limit would end it at step 0 or 1).
    rows = run_agent(tmp_path / "time", sleepy, ["agent:1x8"], agent=AgentConfig(time_limit_s=1.2))
    acted = [sum(x["duration_s"] for x in episode(a)["actions"]) for a in rows]
    assert [episode(a)["outcome"] for a in rows] == [None] * (len(rows) - 1) + ["time_limit"]
    assert sum(acted[:-1]) < 1.2 <= sum(acted) and len(rows) >= 2

    rows = run_agent(tmp_path / "tokens", idle, ["agent:1x50"], budget=400, budget_unit="tokens")
    assert episode(rows[-1])["outcome"] == "token_limit" and 1 < len(rows) < 50
    spent = sum(a.prompt_tokens + a.completion_tokens for a in rows)
    assert spent >= 400 > spent - rows[-1].prompt_tokens - rows[-1].completion_tokens


def test_context_full_ends_the_episode_graded_on_its_state(tmp_path):
    def grows(request: ScriptedRequest) -> str:
        return bash(write(RIGHT)) if step_of(request) == 0 else bash("seq 1 200")

    rows = run_agent(tmp_path, grows, ["agent:1x20"], max_model_len=1500)
    last = rows[-1]
    assert episode(last)["outcome"] == "context_full" and last.kind is AttemptKind.COMPLETED
    assert last.completion is None and "maximum context length" in last.error
    assert last.verdict is Verdict.PASSED and last.code == RIGHT  # its state: the right solution, written at step 0
    assert all(episode(a)["outcome"] is None for a in rows[:-1]) and len(rows) >= 3


def test_actions_that_never_end_or_fail_become_observations(tmp_path):
    secret = grading_only_lines(SQUARE)[0]

    def stubborn(request: ScriptedRequest) -> str:
        return [bash("sleep 100"), bash("echo $((1/0))"), bash("rm solution.py"), bash("submit"),
                ][step_of(request)] if step_of(request) < 4 else bash("submit")

    def searcher(request: ScriptedRequest) -> str:  # hunts for the hidden tests in its workspace
        hunt = f"grep -rlF {secret!r} / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null"
        return bash(f"{hunt}; echo searched rc=$?") if step_of(request) == 0 else bash("submit")

    (found, _) = run_agent(tmp_path / "search", searcher, ["agent:1x2"], agent=AgentConfig(step_timeout_s=20))
    # grep listed no file (rc 1: no match; 2: no match, some unreadable files): the line is nowhere in the container
    assert found.feedback.split("stdout:\n")[1].strip() in ("searched rc=1", "searched rc=2"), found.feedback
    rows = run_agent(tmp_path, stubborn, ["agent:1x8"], agent=AgentConfig(step_timeout_s=1.5))
    assert "timed out after 1.5 s" in rows[0].feedback
    assert "exit code: 1" in rows[1].feedback and "division by 0" in rows[1].feedback
    assert rows[2].code is None and rows[3].code is None  # a submit with no solution: graded, failed
    assert episode(rows[3])["outcome"] == "submitted" and rows[3].verdict is Verdict.FAILED
    assert "no solution.py" in rows[3].grading.detail


def tool_solver(request: ScriptedRequest) -> ScriptedReply:
    step, seen = step_of(request), observation(request)
    assert request.params.get("tools"), "the tools protocol sends its tool schemas"
    if step == 0:
        return ScriptedReply.call("nonexistent", {"x": 1})
    if step == 1:
        return ScriptedReply.call("bash", '{"command": "ls"')  # malformed JSON
    if step == 2:
        code = f"open('solution.py', 'w').write({WRONG!r})"
        return ScriptedReply.calls({"name": "python", "arguments": {"code": code}},
                                   {"name": "bash", "arguments": {"command": "python3 test_solution.py"}})
    if step == 3:
        return (ScriptedReply.call("bash", {"command": write(RIGHT)}) if "AssertionError" in seen
                else ScriptedReply.call("submit"))
    return ScriptedReply.call("submit")


def test_tools_protocol(tmp_path):
    rows = run_agent(tmp_path, tool_solver, ["agent:1x8"], agent=AgentConfig(protocol="tools", step_timeout_s=3))
    assert len(rows) == 5 and episode(rows[-1])["outcome"] == "submitted"
    assert "there is no tool 'nonexistent'" in rows[0].feedback and "not valid JSON" in rows[1].feedback
    assert episode(rows[1])["format_errors"] == 2
    assert [m["role"] for m in episode(rows[2])["observation_messages"]] == ["tool", "tool"]
    calls = episode(rows[2])["assistant"]["tool_calls"]
    assert [c["id"] for c in calls] == [m["tool_call_id"] for m in episode(rows[2])["observation_messages"]]
    assert rows[3].code == RIGHT and rows[-1].verdict is Verdict.PASSED
    assert [t["function"]["name"] for t in episode(rows[0])["tools"]] == ["bash", "python", "submit"]


def test_agent_runs_beside_revision_and_parallel(tmp_path):
    def both(request: ScriptedRequest) -> str | ScriptedReply:
        if "```bash" in request.messages[0]["content"]:
            return solver(request)
        return f"```python\n{RIGHT}```"

    rows = run_agent(tmp_path, both, ["2:1", "1:2", "agent:1x2"])
    assert {a.strategy for a in rows} == {"2:1", "1:2", "agent:1x2"}
    agent = [a for a in rows if a.strategy == "agent:1x2"]
    assert [episode(a)["outcome"] for a in agent] == [None, "step_limit"]


def test_a_hostile_episode_leaves_an_honest_one_unchanged(tmp_path):
    """Episode 1 runs each of the sandbox's hostile programs (tests/test_hostile.py) as an action, plus a
    `kill -9 -1` and a process that outlives its step, while episode 0 solves the task next to it."""
    spec = importlib.util.spec_from_file_location("hostile_programs", Path(__file__).with_name("test_hostile.py"))
    assert spec and spec.loader
    programs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(programs)
    HOSTILE = programs.HOSTILE
    hostile = [f"python3 - <<'EOF'\n{textwrap.dedent(code)}\nEOF" for code, _, _ in HOSTILE.values()]
    hostile += ["(sleep 300 &) ; kill -9 -1", "submit"]
    split = f"agent:2x{len(hostile)}"
    honest_alone = run_agent(tmp_path / "alone", solver, [f"agent:1x{len(hostile)}"])
    both = run_agent(tmp_path / "both", _chain_split(hostile, split), [split], agent=AgentConfig(step_timeout_s=3))
    honest = [a for a in both if a.chain == 0]
    evil = [a for a in both if a.chain == 1]
    assert [a.feedback for a in honest] == [a.feedback for a in honest_alone]
    assert [a.verdict for a in honest] == [a.verdict for a in honest_alone]
    assert len(evil) == len(hostile) and episode(evil[-1])["outcome"] == "submitted"
    assert all(a.kind is AttemptKind.COMPLETED for a in both)
    assert "timed out" in evil[0].feedback  # the fork bomb ran until its step's time limit


def _chain_split(hostile: list[str], split: str):
    """Episode 0 is the honest solver and episode 1 runs the hostile actions: the seed of a step is
    the slot's (strategy, task, episode, step), so the script tells them apart by the seed of step 0."""
    from agentloop.strategy import slot_seed

    evil_seeds = {slot_seed(1, split, 0, 1, s) for s in range(len(hostile))}

    def script(request: ScriptedRequest) -> str:
        if request.params.get("seed") in evil_seeds:
            return bash(hostile[min(step_of(request), len(hostile) - 1)])
        return solver(request)

    return script



def test_kill_9_mid_episode_then_resume_replays_and_never_asks_again(tmp_path):
    """A run killed while step 3 waits for the model resumes from its stored steps: their actions are
    replayed into a fresh workspace and the model is asked for step 3 onwards only."""
    asked: list[int] = []
    slow = {"on": True}

    def script(request: ScriptedRequest) -> ScriptedReply:
        step = step_of(request)
        asked.append(step)
        return ScriptedReply(texts=[solver(request)], delay_s=60 if step == 3 and slow["on"] else 0)

    with scripted_server_in_thread(script) as srv:
        common = ["--base-url", srv.base_url, "--model", "scripted"]
        cmd = [AGENTLOOP, "run", "--suite", "smoke", "--tasks", SQUARE.id,
               "--splits", "agent:1x8", "--seed", "1", "--pool-size", "1", "--runs-dir", str(tmp_path), *common]
        with open(tmp_path / "run.err", "w") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            run_dir = _wait_for_steps(tmp_path, 3, proc)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert asked == [0, 1, 2, 3]
        slow["on"] = False
        asked.clear()
        done = subprocess.run([AGENTLOOP, "run", "--resume", str(run_dir), *common],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    assert asked == [3, 4]  # stored steps are never asked again
    store = AttemptStore.open(run_dir)
    try:
        rows = sorted(store.iter_attempts(with_messages=True), key=lambda a: a.turn)
    finally:
        store.close()
    assert [a.turn for a in rows] == [0, 1, 2, 3, 4] and rows[-1].verdict is Verdict.PASSED
    assert "replay_diverged" not in episode(rows[3])  # the replay saw the same observations
    assert rows[3].messages[: len(rows[2].messages)] == rows[2].messages
    run_id = _meta(run_dir, "run_id")
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=agentloop.run={run_id}"],
                          capture_output=True, text=True)
    assert left.stdout.strip() == ""


def _meta(run_dir: Path, key: str) -> Any:
    store = AttemptStore.open(run_dir)
    try:
        return store.get_meta(key)
    finally:
        store.close()


def _wait_for_steps(runs_dir: Path, steps: int, proc: subprocess.Popen) -> Path:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        err = (runs_dir / "run.err").read_text()[-2000:]
        assert proc.poll() is None, f"the run ended before it could be killed: {err}"
        for db in runs_dir.glob("*/attempts.sqlite"):
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                try:
                    n = conn.execute("SELECT COUNT(*) FROM attempts WHERE kind = 'completed'").fetchone()[0]
                except sqlite3.OperationalError:
                    continue
            if n >= steps:
                return db.parent
        time.sleep(0.2)
    raise AssertionError(f"no {steps} steps stored in time")


@pytest.mark.parametrize(("args", "expected"), [
    (["--suite", "gsm8k", "--limit", "2", "--splits", "agent:1x2"],
     "splits: 'agent:1x2' runs agent episodes, which need function tasks, but gsm8k has math tasks"),
    (["--splits", "agent:0x2"], "--splits: 'agent:0x2' is not a split"),
    (["--agent-protocol", "smoke-signals"], "argument --agent-protocol: invalid choice: 'smoke-signals'"),
    (["--step-timeout", "0"], "--step-timeout must be a number of seconds > 0, got 0.0"),
])
def test_bad_agent_input_is_one_line_and_leaves_no_run_dir(args, expected, tmp_path, capsys):
    from agentloop.cli import main

    runs = tmp_path / "runs"
    assert main(["run", "--base-url", "http://127.0.0.1:9/v1", "--runs-dir", str(runs), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err, err
    assert len(err.splitlines()) == 1 and not runs.exists()
