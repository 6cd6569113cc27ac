"""Several strategies in one `agentloop run` (real Docker sandbox, real SQLite), driven by a scripted
model that only writes correct code after it has seen a failing feedback test. Revision must beat
parallel sampling at equal generations, feedback must reach the model, grading tests must not, and
an interrupted chain must go on from its last completed turn; `agentloop export` of such a run
yields trajectories with the feedback turn."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from agentloop.cli import main
from agentloop.model.scripted import ScriptedReply, ScriptedRequest, scripted_server_in_thread
from agentloop.report import build_report
from agentloop.tasks.suites import load_suite

pytestmark = pytest.mark.usefixtures("docker_ready")

SMOKE = {t.entry_point: t for t in load_suite("smoke")[1]}
TASKS = "smoke/0,smoke/1,smoke/2"


def task_of(request: ScriptedRequest):
    first_user = next(m["content"] for m in request.messages if m["role"] == "user")
    return SMOKE[re.search(r"def (\w+)\(", first_user).group(1)]


def learner(request: ScriptedRequest) -> ScriptedReply:
    """Wrong code until a user turn carries this task's failing feedback assertion."""
    task = task_of(request)
    clue = task.feedback_tests.strip().splitlines()[1].strip()  # "assert candidate(...) == ..."
    seen = any(m["role"] == "user" and f"Failing test: {clue}" in m["content"] for m in request.messages[1:])
    body = task.reference if seen else "    return None\n"
    return ScriptedReply(texts=[f"```python\n{task.prompt}{body}```"] * request.n)


def grading_only_lines(task) -> list[str]:
    shown = set(task.feedback_tests.splitlines()) | set(task.prompt.splitlines())
    return [line.strip() for line in task.grading_tests.splitlines()
            if line.strip().startswith("assert") and line not in shown]


@pytest.fixture
def server():
    requests: list[ScriptedRequest] = []
    state = {"fail_from_turn": None}

    def script(request: ScriptedRequest) -> ScriptedReply:
        requests.append(request)
        turn = sum(1 for m in request.messages if m["role"] == "assistant")
        if state["fail_from_turn"] is not None and turn >= state["fail_from_turn"]:
            return ScriptedReply.http_error(500, "scripted outage")
        return learner(request)

    with scripted_server_in_thread(script) as s:
        yield s.base_url, requests, state


def run_args(base_url: str, tmp_path: Path, *extra: str) -> list[str]:
    config = tmp_path / "fast.toml"
    config.write_text("[model]\nmax_retries = 0\noutage_wait_s = 0\n")
    return ["run", "--config", str(config), "--suite", "smoke", "--tasks", TASKS, "--base-url", base_url,
            "--model", "scripted", "--runs-dir", str(tmp_path / "runs"), "--pool-size", "2", "--seed", "3", *extra]


def attempts(run_dir: Path) -> list[tuple]:
    with sqlite3.connect(run_dir / "attempts.sqlite") as db:
        return db.execute("SELECT strategy, task_id, chain, turn, kind, verdict, feedback_verdict, extra "
                          "FROM attempts ORDER BY id").fetchall()


def test_revision_beats_parallel_and_no_grading_test_reaches_a_prompt(server, tmp_path, monkeypatch):
    base_url, requests, _ = server
    monkeypatch.setenv("AGENTLOOP_CACHE", str(tmp_path / "cache"))
    assert main(run_args(base_url, tmp_path, "--splits", "4:1,2:2,1:4", "--budget", "4")) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    report = build_report(run_dir)
    by = {s.strategy: s for s in report.strategies}
    assert {k: v.success for k, v in by.items()} == {"4:1": 0.0, "2:2": 1.0, "1:4": 1.0}
    # generations: 4:1 = 4 per task; 2:2 = 2 chains × 2 turns; 1:4 stops once the feedback passes
    assert {k: v.generations for k, v in by.items()} == {"4:1": 12, "2:2": 12, "1:4": 6}
    assert report.missing == 0 and report.infra_errors == 0
    assert by["1:4"].prompt_tokens > 0 and by["1:4"].cached_prompt_tokens > 0  # turn 2 re-sends turn 1
    rows = attempts(run_dir)
    assert {(s, turn, verdict) for s, _, _, turn, _, verdict, _, _ in rows if s == "1:4"} == {
        ("1:4", 0, "failed"), ("1:4", 1, "passed")}
    # feedback reached the model, each revision prompt extends the previous one unchanged, and no
    # grading-only assertion was ever in a prompt
    revisions = [r for r in requests if len(r.messages) > 2]
    assert revisions and all("Failing test: assert candidate(" in r.messages[-1]["content"] for r in revisions)
    firsts = {task_of(r).id: r.messages for r in requests if len(r.messages) == 2}
    assert all(r.messages[:2] == firsts[task_of(r).id] for r in revisions)
    lines = {t.id: grading_only_lines(t) for t in SMOKE.values()}
    assert all(lines[t] for t in TASKS.split(","))  # the scan below can fail
    leaked = [line for r in requests for m in r.messages for line in lines[task_of(r).id] if line in m["content"]]
    assert leaked == []


def test_interrupted_chains_go_on_from_their_last_completed_turn(server, tmp_path, monkeypatch):
    base_url, requests, state = server
    monkeypatch.setenv("AGENTLOOP_CACHE", str(tmp_path / "cache"))
    state["fail_from_turn"] = 1  # every revision request fails: chains end after turn 0
    args = run_args(base_url, tmp_path, "--splits", "1:3", "--budget", "3")
    assert main(args) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    first = build_report(run_dir)
    assert (first.infra_errors, first.missing) == (3, 3)
    state["fail_from_turn"] = None
    requests.clear()
    assert main(["run", "--resume", str(run_dir), "--base-url", base_url]) == 0
    rows = attempts(run_dir)
    completed = [(t, c, turn) for s, t, c, turn, kind, *_ in rows if kind == "completed"]
    assert sorted(completed) == sorted({(t, 0, turn) for t in TASKS.split(",") for turn in (0, 1)})
    # the resumed turn 1 extends the stored turn 0 (no chain was restarted: no request at turn 0)
    assert requests and all(len(r.messages) == 4 for r in requests)
    assert build_report(run_dir).missing == 0 and build_report(run_dir).strategies[0].success == 1.0


def test_token_budget_caps_each_chain(server, tmp_path, monkeypatch):
    base_url, _, _ = server
    monkeypatch.setenv("AGENTLOOP_CACHE", str(tmp_path / "cache"))
    # never stop on feedback passes: only the token share (budget / N) ends a chain early
    config = tmp_path / "tokens.toml"
    config.write_text("splits = ['1:8']\nbudget_unit = 'tokens'\nbudget = 300\n[revision]\nstop_on_feedback_pass = false\n")
    assert main([*run_args(base_url, tmp_path), "--config", str(config)]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    with sqlite3.connect(run_dir / "attempts.sqlite") as db:
        chains = db.execute("SELECT task_id, GROUP_CONCAT(prompt_tokens + completion_tokens) FROM attempts "
                            "GROUP BY task_id").fetchall()
    for _, costs in chains:
        costs = [int(c) for c in costs.split(",")]
        assert 1 < len(costs) < 8  # the share ran out before 8 turns
        assert sum(costs[:-1]) < 300 <= sum(costs)  # a new turn starts only while under the share


def test_adaptive_follows_the_table_for_the_probed_bin(server, tmp_path, monkeypatch):
    base_url, _, _ = server
    monkeypatch.setenv("AGENTLOOP_CACHE", str(tmp_path / "cache"))
    table = tmp_path / "compare.json"
    # probe score 0 (no probe sample passes the feedback tests) → bin 0 → one long chain
    table.write_text(json.dumps({"adaptive": {"budget": 4, "probe": 2, "edges": [0.5], "best": {"0": "1:4", "1": "4:1"}}}))
    assert main(run_args(base_url, tmp_path, "--adaptive", "--adaptive-table", str(table), "--budget", "4",
                         "--splits", "4:1")) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    rows = [r for r in attempts(run_dir) if r[0] == "adaptive"]
    # probe: chains 0 and 1 at turn 0; then chain 0 goes on (allocate(2, 4, 4) = [3, 1]) and is fixed at turn 1
    assert sorted((t, c, turn) for _, t, c, turn, *_ in rows) == sorted(
        (t, c, turn) for t in TASKS.split(",") for c, turn in ((0, 0), (1, 0), (0, 1)))
    decided = [json.loads(r[7])["adaptive"] for r in rows if r[3] == 1]
    assert decided and all(d == {"probe_score": 0.0, "split": "1:4"} for d in decided)
    by = {s.strategy: s for s in build_report(run_dir).strategies}
    assert (by["adaptive"].success, by["4:1"].success) == (1.0, 0.0)
    assert build_report(run_dir).missing == 0
    # a resumed run decides from the table stored in the run dir, not from the file it came from
    table.unlink()
    before = len(attempts(run_dir))
    assert main(["run", "--resume", str(run_dir), "--base-url", base_url]) == 0
    assert len(attempts(run_dir)) == before


def test_adaptive_without_a_table_learns_it_on_the_first_fold_then_compare(server, tmp_path, monkeypatch, capsys):
    base_url, _, _ = server
    monkeypatch.setenv("AGENTLOOP_CACHE", str(tmp_path / "cache"))
    args = run_args(base_url, tmp_path, "--splits", "4:1,1:4", "--budget", "4", "--adaptive")
    args[args.index("--tasks") + 1] = "smoke/0,smoke/1,smoke/2,smoke/3,smoke/5"
    assert main(args) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    with sqlite3.connect(run_dir / "attempts.sqlite") as db:
        meta = json.loads(db.execute("SELECT value FROM meta WHERE key = 'adaptive'").fetchone()[0])
    # folds = 5: one task builds the table (there 1:4 beats 4:1), adaptive runs on the other four
    assert len(meta["tasks"]) == 4 and set(meta["table"]["best"].values()) == {"1:4"}
    adaptive_tasks = {t for s, t, *_ in attempts(run_dir) if s == "adaptive"}
    assert adaptive_tasks == set(meta["tasks"])
    capsys.readouterr()
    assert main(["compare", str(run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # compared on the tasks every strategy ran: adaptive's four, not the fold its table came from
    assert out["tasks"] == 4
    full = {c["strategy"]: c["points"][-1]["mean"] for c in out["success"]["generations"]}
    assert full == {"4:1": 0.0, "1:4": 1.0, "adaptive": 1.0}


def test_allocate_and_fixed_splits():
    from agentloop.schedule import allocate
    from agentloop.strategy import Split, fixed_splits

    assert allocate(2, 4, 4) == [3, 1]  # the probe chains go on first
    assert allocate(2, 1, 8) == [1] * 8  # parallel: new one-turn chains fill the budget
    assert allocate(2, 2, 8) == [2, 2, 2, 2]
    assert allocate(3, 8, 8) == [6, 1, 1]
    assert sum(allocate(2, 3, 11)) == 11
    assert fixed_splits(None, 5) == [Split("parallel", 5, 1)]
    assert fixed_splits(None, 5, adaptive=True) == []  # adaptive with a table and no splits runs alone
    assert [s.name for s in fixed_splits(["4x1", "2:2"], 5)] == ["4:1", "2:2"]


def test_export_of_a_revision_run(tmp_path, capsys):
    """`agentloop export` of such a run (more in test_export.py): revision chains
    become trajectories with the feedback turn, and DPO pairs the fix with the wrong first try."""
    with scripted_server_in_thread(learner) as server:
        assert main(run_args(server.base_url, tmp_path, "--splits", "2:1,1:2", "--budget", "2")) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    out = tmp_path / "data" / "traj.jsonl"
    assert main(["export", str(run_dir), "--out", str(out), "--shape", "trajectory", "--tokenizer", "usage"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["metadata"]["task_id"] for r in records) == ["smoke/0", "smoke/1", "smoke/2"]
    for r in records:
        task = SMOKE[re.search(r"def (\w+)\(", r["messages"][1]["content"]).group(1)]
        roles = [m["role"] for m in r["messages"]]
        assert roles == ["system", "user", "assistant", "user", "assistant"] and r["metadata"]["strategy"] == "1:2"
        assert "Failing test: " in r["messages"][3]["content"] and "return None" in r["messages"][2]["content"]
        assert task.reference in r["messages"][-1]["content"] and r["metadata"]["verdicts"]["grading"] == "passed"
        assert r["metadata"]["tokens"]["cached_prompt"] is not None and r["metadata"]["sampling"]["seed"] is not None
    pairs = tmp_path / "data" / "dpo.jsonl"
    assert main(["export", str(run_dir), "--out", str(pairs), "--format", "dpo", "--tokenizer", "usage"]) == 0
    for p in map(json.loads, pairs.read_text().splitlines()):
        assert "return None" in p["rejected"][0]["content"] and "return None" not in p["chosen"][0]["content"]
        assert p["prompt"] == records[0]["messages"][:2] or p["metadata"]["task_id"] != records[0]["metadata"]["task_id"]
    everything = "".join(f.read_text() for f in out.parent.iterdir())
    for t in TASKS.split(","):
        task = next(x for x in SMOKE.values() if x.id == t)
        assert all(line not in everything for line in grading_only_lines(task))
    capsys.readouterr()
