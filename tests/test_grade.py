"""`agentloop grade`: samples made elsewhere, graded in the real sandbox into a normal run dir."""

from __future__ import annotations

import json
import sqlite3

import pytest

from agentloop.cli import main
from agentloop.report import build_report
from agentloop.store import DB_NAME
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


def grade(tmp_path, rows, *argv):
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs = tmp_path / "runs"
    assert main(["grade", str(samples), "--runs-dir", str(runs), "--pool-size", "2", *argv]) == 0
    (run_dir,) = list(runs.iterdir())
    return samples, run_dir


def test_solution_rows_are_graded_as_is(tmp_path, monkeypatch):
    """evalplus grades a `solution` as the whole program: HumanEval/28 using `List` without
    `from typing import List` fails there (NameError) and here; as a `completion` (the prompt, with
    its import, goes above it) or with the import it passes."""
    monkeypatch.setenv("AGENTLOOP_CACHE", str(tmp_path / "cache"))
    body = "def concatenate(strings: List[str]) -> str:\n    return ''.join(strings)\n"
    rows = [
        {"task_id": "HumanEval/28", "solution": body},  # no import: NameError at definition
        {"task_id": "HumanEval/28", "completion": body},  # the prompt (and its import) above it
        {"task_id": "HumanEval/28", "solution": "from typing import List\n\n\n" + body},
        {"task_id": "HumanEval/28", "completion": "    return ''.join(strings)\n"},
    ]
    _, run_dir = grade(tmp_path, rows, "--suite", "humaneval")
    with sqlite3.connect(run_dir / DB_NAME) as db:
        got = db.execute("SELECT chain, verdict, code, grading, extra FROM attempts ORDER BY chain").fetchall()
    db.close()
    assert [v for _, v, *_ in got] == ["failed", "passed", "passed", "passed"]
    assert "NameError" in json.dumps(json.loads(got[0][3])) and "List" in json.dumps(json.loads(got[0][3]))
    assert got[0][2] == body  # stored as given
    assert [json.loads(extra)["field"] for *_, extra in got] == ["solution", "completion", "solution", "completion"]


def test_report_of_a_graded_file(tmp_path, capsys, monkeypatch):
    """A graded run reports the file it graded (no model), no resume advice for tasks with fewer
    rows, and how many tasks each pass@k covers, in the text and in report.json."""
    monkeypatch.setenv("AGENTLOOP_CACHE", str(tmp_path / "cache"))
    smoke = {t.id: t for t in load_suite("smoke")[1]}
    right = {"task_id": "smoke/0", "completion": smoke["smoke/0"].reference}
    wrong = {"task_id": "smoke/0", "completion": "    return a - b\n"}
    rows = [right, wrong, right, wrong, right,  # smoke/0: 5 rows
            {"task_id": "smoke/7", "completion": smoke["smoke/7"].reference},  # smoke/7: 1 row
            {"task_id": "smoke/1", "completion": smoke["smoke/1"].reference}, {"task_id": "smoke/1", "completion": "    pass\n"}]
    samples, run_dir = grade(tmp_path, rows, "--suite", "smoke")
    capsys.readouterr()
    assert main(["report", str(run_dir)]) == 0
    text = capsys.readouterr().out
    out = " ".join(text.split())
    assert f"graded={samples}(8rows)tasks=3samples/task=1–5" in "".join(text.split())  # rich wraps long paths
    assert "model=" not in out and "smollm2" not in out and "--resume" not in out and "missing" not in out
    assert "tokens:" not in out
    assert "│ 1 │ 0.700 │" in out and "│ 3 of 3 │" in out  # pass@1 over all three tasks: (3/5 + 1 + 1/2) / 3
    assert "│ 2 │ 0.950 │" in out and "│ 2 of 3 │" in out  # smoke/0 and smoke/1
    assert "│ 5 │ 1.000 │" in out and "│ 1 of 3 │" in out  # smoke/0 only
    assert ("pass@k averages over the tasks with at least k completed samples only: pass@2 over 2 of 3 tasks, "
            "pass@5 over 1 of 3") in out
    report = json.loads((run_dir / "report.json").read_text())
    assert report["model"] is None and report["graded_file"] == str(samples) and report["graded_rows"] == 8
    assert report["missing"] == 0 and report["samples_per_task"] == [1, 5]
    assert [(r["k"], r["tasks"], r["tasks_total"]) for r in report["pass_at_k"]] == [(1, 3, 3), (2, 2, 3), (5, 1, 3)]
    assert main(["report", str(run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pass_at_k"] == report["pass_at_k"]
