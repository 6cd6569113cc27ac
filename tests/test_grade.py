"""`agentloop grade`: samples made elsewhere, graded in the real sandbox into a normal run dir."""

from __future__ import annotations

import json

import pytest

from agentloop.cli import main
from agentloop.report import build_report
from agentloop.tasks.suites import load_suite

pytestmark = pytest.mark.usefixtures("docker_ready")


def test_grade_completions_and_solutions(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AGENTLOOP_CACHE", str(tmp_path / "cache"))
    smoke = {t.id: t for t in load_suite("smoke")[1]}
    add, square = smoke["smoke/0"], smoke["smoke/7"]
    rows = [
        {"task_id": "smoke/0", "completion": add.reference},  # body, HumanEval style
        {"task_id": "smoke/0", "solution": f"{add.prompt}    return a - b\n"},  # full program, wrong
        {"task_id": "smoke/7", "solution": "def square(x):\n    return x ** 2\n"},
        {"task_id": "smoke/7", "completion": "    import os\n    os._exit(0)\n"},  # early exit is no pass
    ]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["grade", str(samples), "--suite", "smoke", "--runs-dir", str(tmp_path / "runs"), "--pool-size", "2"]) == 0
    (run_dir,) = list((tmp_path / "runs").iterdir())
    report = build_report(run_dir)
    per_task = {r["task_id"]: (r["n"], r["passed"]) for r in report.per_task}
    assert per_task == {"smoke/0": (2, 1), "smoke/7": (2, 1)} and report.missing == 0
    assert square.entry_point == "square"
    capsys.readouterr()
    assert main(["run", "--resume", str(run_dir)]) == 2
    assert "grade the file again" in capsys.readouterr().err


@pytest.mark.parametrize("line, message", [
    ('{"task_id": "smoke/0"}', "samples.jsonl:1: expected a string field 'completion' or 'solution'"),
    ('{"task_id": "nope/1", "completion": "x"}', "samples.jsonl:1: task_id 'nope/1' is not in the suite"),
    ("[1]", "samples.jsonl:1: expected a JSON object"),
    ("{oops", "samples.jsonl:1: invalid JSON"),
])
def test_grade_bad_samples_are_one_line_errors(tmp_path, capsys, line, message):
    samples = tmp_path / "samples.jsonl"
    samples.write_text(line + "\n")
    assert main(["grade", str(samples), "--suite", "smoke", "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()
