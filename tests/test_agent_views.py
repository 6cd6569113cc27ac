"""Agent episodes (`agent:NxM`) in report, compare and export, on hand-built run dirs (real SQLite,
written through AttemptStore) whose rows are shaped as the episode loop stores them: one row per
step, the whole history as messages, extra["episode"] with the assistant message, the observation
messages, the actions, format errors and the outcome. No Docker, no server."""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from agentloop.attempt import Attempt, AttemptKind
from agentloop.compare import build_comparison, print_comparison
from agentloop.compare.data import to_candidate
from agentloop.compare.walk import UNITS, chain_orders, walk_group, walk_once
from agentloop.export import ExportOptions, export_runs
from agentloop.report import OUTCOMES, build_report, print_report
from agentloop.sandbox.types import ExecResult, Verdict
from agentloop.selection import Candidate
from agentloop.store import AttemptStore
from agentloop.tasks.model import Suite, Task

SECRET = "GRADING-ONLY-a9c3"  # in every grading test and grading output: never in an export
SYSTEM = {"role": "system", "content": "You are an agent in a workspace. Reply with one ```bash block."}
TOOLS = [
    {"type": "function", "function": {"name": "bash", "description": "Run a bash command.", "parameters": {
        "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}},
    {"type": "function", "function": {"name": "submit", "description": "Submit solution.py.", "parameters": {
        "type": "object", "properties": {}, "required": []}}},
]
PASS, FAIL = Verdict.PASSED, Verdict.FAILED
GOOD = "def f(x):\n    return x + 1\n"


def task(i: int) -> Task:
    return Task(id=f"t/{i}", prompt=f"def f(x):\n    '''x + 1 (task {i})'''\n", entry_point="f",
                grading_tests=f"def check(c):\n    assert c(1) == 2, '{SECRET}'\n",
                feedback_tests="def check(c):\n    assert c(0) == 1\n")


def code(i: int) -> str:
    return f"def f(x):\n    return x + {i}\n" if i != 1 else GOOD


def row(strategy: str, t: Task, chain: int, turn: int, code_: str | None, verdict: Verdict | None,
        fb: Verdict | None, *, messages: list[dict] | None = None, completion: str = "x",
        prompt: int = 100, cached: int = 0, out: int = 10, extra: dict | None = None,
        kind: AttemptKind = AttemptKind.COMPLETED) -> Attempt:
    grading = ExecResult(verdict, 0.01, stderr=f"AssertionError: {SECRET}") if verdict else None
    return Attempt(
        strategy=strategy, task_id=t.id, chain=chain, turn=turn, kind=kind,
        messages=messages or [SYSTEM, {"role": "user", "content": t.prompt}], started_at=1.0, finished_at=2.0,
        request_id=f"{strategy}/{t.id}/{chain}/{turn}", completion=completion, code=code_, prompt_tokens=prompt,
        cached_prompt_tokens=cached, completion_tokens=out, verdict=verdict, grading=grading,
        feedback=None, feedback_verdict=fb, error=None if kind is AttemptKind.COMPLETED else "server said no",
        extra={"seed": turn, "finish_reason": "stop", **(extra or {})})


def episode(t: Task, chain: int, states: list[tuple[str | None, Verdict, Verdict | None]], *,
            strategy: str = "agent:2x4", protocol: str = "text", outcome: str | None = "submitted",
            bad_steps: tuple[int, ...] = (), prompt0: int = 100) -> list[Attempt]:
    """One episode's rows: step k leaves `states[k]` = (solution.py, grading verdict, feedback
    verdict). Step k's messages = step k-1's + its assistant message + its observation messages;
    the last step submits (or ends with `outcome`). `bad_steps`: replies with no usable action."""
    messages = [SYSTEM, {"role": "user", "content": f"Task:\n{t.prompt}"}]
    rows, errors = [], 0
    for k, (code_, verdict, fb) in enumerate(states):
        last = k == len(states) - 1
        command = "submit" if last and outcome == "submitted" else f"python -m pytest test_feedback.py  # step {k}"
        bad = k in bad_steps
        errors += bad
        if protocol == "tools":
            call = {"id": f"call_{chain}_{k}", "type": "function",
                    "function": {"name": "submit" if command == "submit" else "bash",
                                 "arguments": "{}" if command == "submit" else json.dumps({"command": command})}}
            assistant = {"role": "assistant", "content": None, "tool_calls": [call]}
            obs = [{"role": "tool", "tool_call_id": call["id"], "content": f"exit code 0\nstep {k} ok"}]
            completion = ""
        else:
            completion = "I will think." if bad else f"Next:\n```bash\n{command}\n```"
            assistant = {"role": "assistant", "content": completion}
            obs = [{"role": "user", "content": "Format error: one ```bash block." if bad else f"exit code 0\nstep {k}"}]
        kind = "format_error" if bad else ("submit" if command == "submit" else "bash")
        info = {"protocol": protocol, "assistant": assistant, "observation_messages": obs,
                "actions": [{"kind": kind, "command": command, "exit_code": 0, "timed_out": False, "duration_s": 0.1}],
                "format_errors": errors, "outcome": outcome if last else None}
        if k == 0 and protocol == "tools":
            info["tools"] = TOOLS
        rows.append(row(strategy, t, chain, k, code_, verdict, fb, messages=messages, completion=completion,
                        prompt=prompt0 + 50 * k, cached=prompt0 + 50 * k - 60 if k else 0, out=10,
                        extra={"episode": info}))
        messages = [*messages, assistant, *obs]
    return rows


def make_run(run_dir: Path, tasks: list[Task], attempts: list[Attempt], **config) -> Path:
    store = AttemptStore.create(run_dir)
    store.set_meta("run_id", run_dir.name)
    store.set_meta("config", {"suite": "unit", "model": {"model": "m"}, "samples": 4, "budget": None,
                              "budget_unit": None, "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 64},
                              **config})
    store.set_meta("suite", asdict(Suite(name="unit")))
    store.put_tasks(tasks, {})
    store.write_batch(attempts)
    store.set_meta("finished_at", 3.0)
    store.close()
    return run_dir


def three_way_run(path: Path) -> Path:
    """`2:4` revision, `4:1` parallel and `agent:2x4` over the same three tasks.
    t/0: episode 0 fixes the code at step 2 and submits; episode 1 submits a failing state.
    t/1: episode 0 is resolved at step 1 and then breaks it at step 2 (ends on the token limit);
         episode 1 hits the step limit with a format error on the way.
    t/2: episode 0 has a full context at step 1 (no reply; graded on its current state); episode 1
         was cut by an infra error (the run never resumed it)."""
    t0, t1, t2 = task(0), task(1), task(2)
    rows: list[Attempt] = []
    for t in (t0, t1, t2):
        rows += [row("4:1", t, ch, 0, code(ch), *((PASS, PASS) if ch == 1 else (FAIL, FAIL))) for ch in range(4)]
        rows += [row("2:4", t, 0, 0, code(0), FAIL, FAIL), row("2:4", t, 0, 1, code(1), PASS, PASS)]
        rows += [row("2:4", t, 1, turn, code(5 + turn), FAIL, FAIL) for turn in range(4)]
    rows += episode(t0, 0, [(None, FAIL, None), (code(0), FAIL, FAIL), (GOOD, PASS, PASS)])
    rows += episode(t0, 1, [(code(3), FAIL, FAIL), (code(3), FAIL, FAIL)])
    rows += episode(t1, 0, [(code(0), FAIL, FAIL), (GOOD, PASS, PASS), (code(2), FAIL, FAIL)], outcome="token_limit")
    rows += episode(t1, 1, [(code(4), FAIL, FAIL)] * 4, outcome="step_limit", bad_steps=(1,))
    ctx = episode(t2, 0, [(code(0), FAIL, FAIL), (code(0), FAIL, FAIL)], outcome="context_full")
    rows += ctx
    cut = episode(t2, 1, [(code(6), FAIL, FAIL)], outcome=None)
    rows += [*cut, row("agent:2x4", t2, 1, 1, None, None, None, kind=AttemptKind.INFRA_ERROR,
                       extra={"episode": {"protocol": "text"}})]
    return make_run(path, [t0, t1, t2], rows, splits=["2:4", "4:1", "agent:2x4"])


# -- compare ---------------------------------------------------------------------------------------

def cut_episode(t: Task) -> list[Attempt]:
    """Steps 0 and 1 fail, step 2 passes (feedback too), step 3 breaks it again (feedback fails)."""
    return episode(t, 0, [(code(0), FAIL, FAIL), (code(2), FAIL, FAIL), (GOOD, PASS, PASS), (code(3), FAIL, FAIL)],
                   strategy="agent:1x4", outcome="step_limit")


def test_a_budget_cut_mid_episode_grades_the_state_at_the_cut(tmp_path):
    steps = cut_episode(task(0))
    cands = [to_candidate(a, 1) for a in steps]
    budgets = {"generations": np.array([2.0, 3.0, 4.0]), "completion_tokens": np.array([29.0, 30.0, 40.0])}
    rng = np.random.default_rng(0)
    got = walk_group(cands, budgets, 50, rng, episodes=True)
    # 3 steps (or 30 completion tokens): the current state is step 2's, which passes; all 4: step 3's, which fails
    assert got["generations"][0].tolist() == [0.0, 1.0, 0.0] and got["generations"][1].tolist() == [0.0, 1.0, 0.0]
    assert got["completion_tokens"][0].tolist() == [0.0, 1.0, 0.0]
    assert [walk_once([cands], [0], b, "generations", episodes=True) for b in (3, 4)] == [(True, True), (False, False)]
    # Steps as separate candidates (the revision rule) would keep step 2 (it passes the feedback tests): success 1 at 4.
    as_turns = walk_group(cands, budgets, 50, rng, episodes=False)
    assert as_turns["generations"][0].tolist() == [0.0, 1.0, 1.0]
    assert walk_once([cands], [0], 4, "generations") == (True, True)
    # Through the whole comparison, from a run dir
    c = build_comparison(make_run(tmp_path / "run", [task(0)], steps, splits=["agent:1x4"]))
    (info,) = c.strategies
    assert info.agent and (info.chains, info.turns, info.nominal) == (1, 4, 4)
    (curve,) = c.success["generations"]
    assert [(p.budget, p.mean) for p in curve.points] == [(1.0, 0.0), (2.0, 0.0), (4.0, 0.0)]
    assert c.pass_at_k == [] and c.adaptive["strategies"] == []  # no turn-0 answers; nothing to adapt between


def test_selection_runs_over_the_episodes_current_states(tmp_path):
    """Two episodes: A's step 0 passes the feedback tests (grading fails) and A goes on to a state
    whose feedback fails; B ends passing both. With all steps as candidates the feedback pass of A's
    step 0 and B tie, and the tie goes to the lower turn (A's step 0, a failure)."""
    t = task(0)
    a = episode(t, 0, [(code(7), FAIL, PASS), (code(8), FAIL, FAIL)], strategy="agent:2x2")
    b = episode(t, 1, [(code(9), FAIL, FAIL), (GOOD, PASS, PASS)], strategy="agent:2x2")
    cands = [to_candidate(x, 1) for x in a + b]
    got = walk_group(cands, {"generations": np.array([4.0])}, 50, np.random.default_rng(0), episodes=True)
    assert got["generations"][0].tolist() == [1.0]
    assert walk_group(cands, {"generations": np.array([4.0])}, 50, np.random.default_rng(0))["generations"][0] == [0.0]


def random_episodes(rng: random.Random) -> list[Candidate]:
    cands, codes = [], rng.choice([1, 3, 50])
    for chain in range(rng.randint(1, 6)):
        for turn in range(rng.randint(1, 5)):
            cands.append(Candidate(chain, turn, f"code{rng.randrange(codes)}", rng.random() < 0.3, rng.random() < 0.4,
                                   prompt_tokens=rng.choice([0.0, 12.5, 40.0]), completion_tokens=rng.randint(0, 30)))
    return cands


def test_vectorized_episode_walk_equals_the_specification():
    """walk_group(episodes=True) against walk_once(episodes=True) on random groups and budgets."""
    rng = random.Random(11)
    budgets = {u: np.array([0.0, 1.0, 2.0, 3.0, 5.0, 7.0, 30.0, 45.0, 100.0, 1e9]) for u in UNITS}
    differs = 0
    for _ in range(80):
        cands = random_episodes(rng)
        chains = [[c for c in cands if c.chain == i] for i in sorted({c.chain for c in cands})]
        orders = chain_orders(len(chains), 50, np.random.default_rng(0))
        got = walk_group(cands, budgets, 50, np.random.default_rng(0), episodes=True)
        for unit, bs in budgets.items():
            want = np.array([[walk_once(chains, list(o), b, unit, episodes=True) for b in bs] for o in orders],
                            dtype=float).mean(axis=0)
            assert got[unit][0] == pytest.approx(want[:, 0]) and got[unit][1] == pytest.approx(want[:, 1])
        plain = walk_group(cands, budgets, 50, np.random.default_rng(0))
        differs += any(not np.allclose(plain[u][i], got[u][i]) for u in UNITS for i in (0, 1))
    assert differs > 10  # the episode rule is not the revision rule on these groups


def test_compare_shows_agent_revision_and_parallel_side_by_side(tmp_path, capsys):
    from rich.console import Console

    run = three_way_run(tmp_path / "run")
    c = build_comparison(run)
    assert [s.name for s in c.strategies] == ["2:4", "4:1", "agent:2x4"]
    assert {s.name: s.agent for s in c.strategies} == {"2:4": False, "4:1": False, "agent:2x4": True}
    assert c.fixed == ["4:1", "2:4", "agent:2x4"] and c.adaptable == ["4:1", "2:4"]
    assert c.adaptive["strategies"] == ["4:1", "2:4"] and set(c.adaptive["best"].values()) <= {"4:1", "2:4"}
    # turn 0 of 4:1 (1 of 4 passes) and 2:4 (0 of 2): agent steps are not first-prompt samples
    assert c.per_task.oracle_score.tolist() == [1 / 6] * 3
    for unit in UNITS:
        assert {cv.strategy for cv in c.success[unit]} == {"2:4", "4:1", "agent:2x4"}
    at8 = {cv.strategy: [p.mean for p in cv.points if p.budget == 8] for cv in c.success["generations"]}
    # all 8 generations: t/0 episode 0 resolved (feedback pass), t/1's episode 0 ended broken, t/2 nothing
    assert at8 == {"2:4": [1.0], "4:1": [], "agent:2x4": [pytest.approx(1 / 3)]}
    oracle8 = next(p.mean for p in c.oracle["generations"][2].points if p.budget == 8)
    assert oracle8 == pytest.approx(1 / 3)  # t/1 passed at step 1 only: superseded, not covered
    assert any("last included step" in n for n in c.notes)
    data = c.to_json()
    assert [s["agent"] for s in data["strategies"]] == [False, False, True]
    json.dumps(data, allow_nan=False)
    print_comparison(c, Console(width=200))
    assert "agent:2x4" in capsys.readouterr().out


# -- report ----------------------------------------------------------------------------------------

def test_report_counts_episode_outcomes_steps_and_tokens(tmp_path, capsys):
    from rich.console import Console

    run = three_way_run(tmp_path / "run")
    r = build_report(run)
    (ep,) = r.episodes
    assert ep.strategy == "agent:2x4" and ep.protocol == "text" and ep.episodes == 6
    assert ep.outcomes == {"submitted": 2, "step_limit": 1, "token_limit": 1, "context_full": 1, "time_limit": 0,
                           "format_errors": 0, "infra_error": 1, "unfinished": 0}
    assert set(OUTCOMES) <= set(ep.outcomes)
    assert ep.resolved == pytest.approx(1 / 6)  # only t/0's episode 0 ends passing
    steps = [3, 2, 3, 4, 2, 1]
    assert ep.steps_mean == pytest.approx(np.mean(steps)) and ep.steps_median == np.median(steps)
    assert ep.format_errors == 1
    prompts = [100 + 50 * k for n in steps for k in range(n)]
    cached = [100 + 50 * k - 60 if k else 0 for n in steps for k in range(n)]
    assert ep.prompt_tokens_mean == pytest.approx(np.mean(prompts))
    assert ep.cached_share == pytest.approx(sum(cached) / sum(prompts)) and ep.completion_tokens_mean == 10
    by = {s.strategy: s for s in r.strategies}
    agent = by["agent:2x4"]
    assert agent.agent and agent.first_turn_pass is None and agent.generations == sum(steps) and agent.chains == 6
    assert agent.success == pytest.approx(1 / 3) and agent.oracle == pytest.approx(1 / 3)  # final states only
    # pass@k over k episodes' final states: n = 2 per task, c = 1, 0, 0
    assert [(p.k, round(p.mean, 4)) for p in agent.pass_at_k] == [(1, round(1 / 6, 4)), (2, round(1 / 3, 4))]
    # first-turn pass@k: the 6 turn-0 answers per task of 4:1 and 2:4 only
    assert r.pass_at_k[0].mean == pytest.approx(1 / 6) and r.samples_per_task == (6, 6)
    # missing: early ends (submitted, token limit, context full) are complete; the infra-cut episode is not
    assert r.missing == 1
    saved = json.loads(json.dumps(r.to_json()))
    assert saved["episodes"][0]["outcomes"]["infra_error"] == 1
    print_report(r, Console(width=220))
    out = capsys.readouterr().out
    assert "agent episodes" in out and "submitted 2" in out and "final states" in out


def test_report_missing_counts_an_episode_interrupted_mid_way(tmp_path):
    t = task(0)
    rows = episode(t, 0, [(GOOD, PASS, PASS)]) + episode(t, 1, [(GOOD, PASS, PASS)] * 2, outcome=None)
    r = build_report(make_run(tmp_path / "run", [t], rows, splits=["agent:2x4"]))
    assert r.missing == 1 and r.episodes[0].outcomes["unfinished"] == 1 and r.episodes[0].resolved == 1.0
    done = episode(t, 1, [(GOOD, PASS, PASS)] * 4, outcome=None)  # all 4 steps: nothing left to run
    assert build_report(make_run(tmp_path / "run2", [t], rows[:1] + done, splits=["agent:2x4"])).missing == 0


# -- export ----------------------------------------------------------------------------------------

def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def stored(run: Path, task_id: str, chain: int, turn: int) -> Attempt:
    store = AttemptStore.open(run)
    try:
        return next(a for a in store.iter_attempts(with_messages=True)
                    if (a.task_id, a.chain, a.turn) == (task_id, chain, turn))
    finally:
        store.close()


def tools_run(path: Path) -> Path:
    t0, t1 = task(0), task(1)
    rows = episode(t0, 0, [(code(0), FAIL, FAIL), (GOOD, PASS, PASS), (GOOD, PASS, PASS)], protocol="tools")
    rows += episode(t0, 1, [(code(2), FAIL, PASS), (code(2), FAIL, PASS)], protocol="tools")
    rows += episode(t1, 0, [(code(0), FAIL, FAIL), (GOOD, PASS, PASS)], protocol="tools", bad_steps=(0,))
    rows += episode(t1, 1, [(GOOD, PASS, PASS)] * 2, protocol="tools", outcome=None)  # unfinished: not exported
    return make_run(path, [t0, t1], rows, splits=["agent:2x4"])


def test_tools_episode_exports_as_a_trl_transcript_with_tools(tmp_path):
    run = tools_run(tmp_path / "run")
    out = tmp_path / "sft.jsonl"
    stats = export_runs([run], out, ExportOptions(tokenizer="usage"))
    records = jsonl(out)
    assert [(r["metadata"]["task_id"], r["metadata"]["chain"]) for r in records] == [("t/0", 0), ("t/1", 0)]
    assert stats.episodes == {"ended": 3, "resolved": 2, "unfinished": 1} and stats.verified == 2
    last = stored(run, "t/0", 0, 2)
    info = last.extra["episode"]
    assert records[0]["messages"] == [*last.messages, info["assistant"], *info["observation_messages"]]
    assert [m["role"] for m in records[0]["messages"]] == ["system", "user"] + ["assistant", "tool"] * 3
    assert records[0]["messages"][-2]["tool_calls"][0]["function"]["name"] == "submit"
    assert json.loads(records[0]["tools"]) == TOOLS
    meta = records[0]["metadata"]
    assert meta["shape"] == "episode" and meta["turn"] == 2 and meta["verdicts"]["grading"] == "passed"
    assert meta["episode"] == {"protocol": "tools", "steps": 3, "outcome": "submitted", "format_errors": 0,
                               "resolved": True, "tokens": {"prompt": 450, "cached_prompt": 230, "completion": 30}}
    assert stats.tokens == {"prompt": 200, "completion": 50}  # step 0's prompt per record; every step's reply


def test_text_episode_exports_plain_messages_without_tools(tmp_path):
    run = three_way_run(tmp_path / "run")
    out = tmp_path / "sft.jsonl"
    export_runs([run], out, ExportOptions(tokenizer="usage", shape="trajectory"))
    episodes = [r for r in jsonl(out) if r["metadata"]["strategy"].startswith("agent:")]
    assert len(episodes) == 1 and "tools" not in episodes[0]
    msgs = episodes[0]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user"] + ["assistant", "user"] * 3
    assert msgs[-2]["content"] == "Next:\n```bash\nsubmit\n```" and all("tool_calls" not in m for m in msgs)
    # the revision and parallel records of the same run are there too, with their own prompts, even
    # when a task's agent rows come first in the store
    others = [r for r in jsonl(out) if not r["metadata"]["strategy"].startswith("agent:")]
    assert len(others) == 6 and all(r["messages"][:2] == [SYSTEM, {"role": "user", "content": task(int(
        r["metadata"]["task_id"][2:])).prompt}] for r in others)
    t = task(0)
    rows = [*episode(t, 0, [(GOOD, PASS, PASS)]), row("1:2", t, 0, 0, GOOD, PASS, PASS)]
    first = make_run(tmp_path / "agent-first", [t], rows, splits=["agent:1x2", "1:2"])
    export_runs([first], tmp_path / "first.jsonl", ExportOptions(tokenizer="usage"))
    ep, rev = jsonl(tmp_path / "first.jsonl")
    assert ep["messages"][1]["content"] == f"Task:\n{t.prompt}" and rev["messages"][1]["content"] == t.prompt


def test_openai_format_has_tool_calls_a_tools_list_and_weights_bad_steps_out(tmp_path):
    run = tools_run(tmp_path / "run")
    out = tmp_path / "oa.jsonl"
    export_runs([run], out, ExportOptions(format="openai", tokenizer="usage"))
    first, second = jsonl(out)
    assert set(first) == {"messages", "tools"} and first["tools"] == TOOLS
    assert all("weight" not in m for m in first["messages"])  # every step was a usable action
    assert [m.get("weight") for m in second["messages"] if m["role"] == "assistant"] == [0, 1]  # step 0: format error
    tool_msgs = [m for m in first["messages"] if m["role"] == "tool"]
    calls = [c["id"] for m in first["messages"] if m["role"] == "assistant" for c in m["tool_calls"]]
    assert [m["tool_call_id"] for m in tool_msgs] == calls
    sidecar = jsonl(tmp_path / "oa.metadata.jsonl")
    assert [m["episode"]["steps"] for m in sidecar] == [3, 2]


def test_dpo_pairs_a_resolved_and_an_unresolved_episode_of_one_task(tmp_path):
    run = tools_run(tmp_path / "run")
    out = tmp_path / "dpo.jsonl"
    stats = export_runs([run], out, ExportOptions(format="dpo", tokenizer="usage"))
    (pair,) = jsonl(out)  # t/1 has no unresolved ended episode to pair with
    assert stats.tasks_without_pair == 1
    steps0 = stored(run, "t/0", 0, 0)
    assert pair["prompt"] == steps0.messages  # system + task: where the two episodes part
    assert pair["chosen"][0]["role"] == pair["rejected"][0]["role"] == "assistant"
    assert len(pair["chosen"]) == 6 and len(pair["rejected"]) == 4
    assert pair["metadata"]["near_miss"] == "feedback_pass"  # the rejected final state passes the feedback tests
    assert pair["metadata"]["chosen"]["episode"]["resolved"] and not pair["metadata"]["rejected"]["episode"]["resolved"]
    assert json.loads(pair["tools"]) == TOOLS
    none = tmp_path / "oadpo.jsonl"
    s = export_runs([run], none, ExportOptions(format="openai-dpo", tokenizer="usage"))
    assert jsonl(none) == [] and s.episodes["not_paired"] == 3


def test_nothing_of_the_grading_tests_reaches_an_export(tmp_path):
    run = three_way_run(tmp_path / "run")
    tools = tools_run(tmp_path / "tools")
    for fmt in ("sft", "dpo", "openai", "openai-dpo"):
        out = tmp_path / fmt / "out.jsonl"
        export_runs([run, tools], out, ExportOptions(format=fmt, tokenizer="usage", val_fraction=0.3))
        files = list(out.parent.iterdir())
        assert len(files) >= 3 and all(SECRET not in f.read_text() for f in files)
    import sqlite3
    with sqlite3.connect(tools / "attempts.sqlite") as db:  # the store holds it, so the check above can fail
        assert db.execute("SELECT COUNT(*) FROM attempts WHERE grading LIKE ?", (f"%{SECRET}%",)).fetchone()[0] > 0


def test_trl_trains_on_an_agent_export_with_a_tools_column(tmp_path, monkeypatch):
    """One SFTTrainer step on the tools-protocol export and one DPOTrainer step on its pairs, as
    written (tools as a JSON string column; both trainers json-load it for the chat template),
    with a chat template that renders tools, tool calls and tool results. Offline, seconds on a CPU."""
    from datasets import load_dataset
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vocab = {c: i for i, c in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    vocab |= {"<pad>": len(vocab), "<eos>": len(vocab) + 1}
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    raw.pre_tokenizer, raw.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>")
    tok.chat_template = (
        "{% if tools %}tools: {% for t in tools %}{{ t['function']['name'] }} {% endfor %}<eos>{% endif %}"
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] or '' }}"
        "{% if m['tool_calls'] %}{% for c in m['tool_calls'] %}<call {{ c['function']['name'] }} "
        "{{ c['function']['arguments'] }}>{% endfor %}{% endif %}<eos>{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}")
    out = tmp_path / "sft.jsonl"
    run = tools_run(tmp_path / "run")
    export_runs([run], out, ExportOptions(tokenizer="usage"))
    ds = load_dataset("json", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert set(ds.column_names) == {"messages", "tools", "metadata"} and len(ds) == 2
    rendered = tok.apply_chat_template(ds[0]["messages"], tools=json.loads(ds[0]["tools"]), tokenize=False)
    assert rendered.startswith("tools: bash submit <eos>") and "<call submit {}>" in rendered

    def model() -> LlamaForCausalLM:
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id))

    common = {"max_steps": 1, "per_device_train_batch_size": 2, "report_to": [], "use_cpu": True,
              "save_strategy": "no", "max_length": 4096}
    sft = SFTTrainer(model=model(), processing_class=tok, train_dataset=ds,
                     args=SFTConfig(output_dir=str(tmp_path / "sft"), **common))
    assert sft.train().training_loss > 0
    export_runs([run], tmp_path / "dpo.jsonl", ExportOptions(format="dpo", tokenizer="usage"))
    pairs = load_dataset("json", data_files=str(tmp_path / "dpo.jsonl"), split="train", cache_dir=str(tmp_path / "hf"))
    assert set(pairs.column_names) == {"prompt", "chosen", "rejected", "tools", "metadata"} and len(pairs) == 1
    dpo = DPOTrainer(model=model(), ref_model=model(), processing_class=tok, train_dataset=pairs,
                     args=DPOConfig(output_dir=str(tmp_path / "dpo"), **common))
    assert dpo.train().training_loss > 0
