"""HumanEval+ (the `humanevalplus` suite: evalplus's v0.1.10 "OriginFmt" file) graded in the
sandbox, checked against evalplus 0.3.1's own verdicts.

The fixture tests/fixtures/humanevalplus_mutants.jsonl.gz holds one deterministic mutant per task
(the reference program, `prompt + canonical_solution`, with one comparison flipped, an int
literal plus one, an arithmetic operator swapped or `return None`) and evalplus's verdicts (base,
plus) on the reference and on the mutant, each graded as an evalplus `solution`. It was made with

    python3 -m venv /tmp/evalplus-venv && /tmp/evalplus-venv/bin/pip install evalplus==0.3.1
    /tmp/evalplus-venv/bin/python scripts/evalplus_mutants.py --dataset humaneval \\
        --data ../shared/data/humanevalplus-v0.1.10-native.jsonl.gz --runs 2 --parallel 2 \\
        --out tests/fixtures/humanevalplus_mutants.jsonl.gz

(evalplus reads the native file through HUMANEVAL_OVERRIDE_PATH, which the script sets; the
mutation rules are in its docstring). evalplus passes a sample when both base and plus pass:
agentloop's grading tests (the OriginFmt `test`: base + plus inputs) must say `passed` exactly
then. The suite's feedback tests are the original HumanEval tests (`feedback = "humaneval"`), the
tests evalplus's base inputs come from: they must pass exactly when evalplus's base status is
pass. Samples are graded as is (`solution` rows, no prompt above them), as evalplus grades them.
Tasks whose evalplus verdicts changed between the two runs (`stable: false`, timing) are not
compared. The one disagreement, HumanEval/32, is evalplus 0.3.1's (KNOWN_DISAGREEMENTS).

The fast test grades 20 tasks (HumanEval/32, which evalplus grades by its own oracle, and the
`atol` tasks among them); `-m slow` grades all 164, and the mutants once more through
`agentloop grade`.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import platform
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentloop.cli import main
from agentloop.sandbox import DockerPool, ExecResult, SandboxConfig, Verdict
from agentloop.sandbox.config import DEFAULT_IMAGE
from agentloop.store import DB_NAME
from agentloop.tasks.model import Task
from agentloop.tasks.suites import load_suite
from agentloop.verify import calibrate_time_limits, grade

ROOT = Path(__file__).resolve().parents[1]
# conftest.py points AGENTLOOP_DATA_DIR at ../shared/data when that folder exists
SHARED_DATA = Path(os.environ.get("AGENTLOOP_DATA_DIR") or ROOT.parent / "shared" / "data")
NATIVE = SHARED_DATA / "humanevalplus-v0.1.10-native.jsonl.gz"
FIXTURE = Path(__file__).parent / "fixtures" / "humanevalplus_mutants.jsonl.gz"
MBPP_NATIVE = SHARED_DATA / "mbppplus-v0.2.0.jsonl.gz"
MBPP_FIXTURE = Path(__file__).parent / "fixtures" / "mbppplus_mutants.jsonl.gz"

# References that do not pass in the sandbox, and why (none: HumanEval/32's OriginFmt test is broken
# upstream, and the loader grades it by evalplus's oracle, so its reference passes).
UPSTREAM_BROKEN: dict[str, str] = {}
# Tasks where agentloop's verdict on the mutant (grading and feedback tests) differs from
# evalplus's, and why.
KNOWN_DISAGREEMENTS = {
    "HumanEval/32": "evalplus 0.3.1 fails every find_zero sample, the reference included: its oracle "
                    "branch (`assert abs(_poly(*inp, out)) <= atol; continue`) skips the line that counts "
                    "the input as done, so untrusted_check sees 0 of N inputs passed. agentloop checks "
                    "that oracle on every input: the reference and this mutant (`<` -> `<=` in the "
                    "stopping test, equivalent) pass, a wrong root fails",
}
# The fast sample: find_zero (evalplus's own oracle), the atol tasks (2, 4), the mutants evalplus
# passes on base only (0, 20, 105, 109) or on both (90, 129, 137, 158), a mutant in a helper the
# prompt defines (38's encode_cyclic), and quick tasks.
FAST = ["HumanEval/32", "HumanEval/2", "HumanEval/4", "HumanEval/0", "HumanEval/20", "HumanEval/105",
        "HumanEval/109", "HumanEval/90", "HumanEval/129", "HumanEval/137", "HumanEval/158", "HumanEval/38",
        "HumanEval/6", "HumanEval/1", "HumanEval/60", "HumanEval/7", "HumanEval/75", "HumanEval/5",
        "HumanEval/19", "HumanEval/11"]


def rows_of(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def fixture() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    rows = rows_of(FIXTURE)
    return rows[0]["meta"], {r["task_id"]: r for r in rows[1:]}


def passes(statuses: list[str]) -> bool:
    return statuses[0] == statuses[1] == "pass"


def whole_program(task: Task) -> str:
    """The reference as evalplus grades it: `prompt + canonical_solution`, one module."""
    return task.prompt + (task.reference or "")


# --- the fixture (no Docker) ------------------------------------------------------------------


def test_fixture_matches_the_data() -> None:
    meta, rows = fixture()
    assert meta["dataset"] == "humaneval" and meta["evalplus"] == "0.3.1" and meta["runs"] >= 2
    assert meta["data_sha256"] == hashlib.sha256(NATIVE.read_bytes()).hexdigest() == \
        "272720b90ac375502c8ed23cd791c2a93dfb22a911641a494da74a426c09f101"
    _, tasks = load_suite("humanevalplus")
    native = rows_of(NATIVE)
    assert list(rows) == [t.id for t in tasks] == [r["task_id"] for r in native]
    for task, row in zip(tasks, native, strict=True):  # OriginFmt and native: the same programs
        assert task.prompt == row["prompt"] and task.reference == row["canonical_solution"]


@pytest.mark.skipif(platform.python_version() != "3.11.7", reason="ast.unparse output may differ by Python version")
@pytest.mark.parametrize("dataset, data, fixture_path", [
    ("humaneval", NATIVE, FIXTURE), ("mbpp", MBPP_NATIVE, MBPP_FIXTURE)], ids=["humanevalplus", "mbppplus"])
def test_the_script_makes_the_fixtures_mutants(dataset: str, data: Path, fixture_path: Path) -> None:
    """scripts/evalplus_mutants.py (stdlib only) rebuilds every mutant of both fixtures."""
    spec = importlib.util.spec_from_file_location("evalplus_mutants", ROOT / "scripts" / "evalplus_mutants.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    fixed = rows_of(fixture_path)[1:]
    for position, row in enumerate(rows_of(data)):
        with warnings.catch_warnings():  # some MBPP+ references have invalid escapes ('\\.' in a regex)
            warnings.simplefilter("ignore", DeprecationWarning)
            code, what = script.mutate(row["task_id"], position, script.reference(dataset, row), row["entry_point"])
        assert (row["task_id"], code, what) == (fixed[position]["task_id"], fixed[position]["mutant"],
                                                fixed[position]["mutation"])


# --- grading against evalplus's verdicts (Docker) ---------------------------------------------


def grade_against_evalplus(tasks: list[Task], rows: dict[str, dict[str, Any]]) -> dict[tuple[str, str, str], ExecResult]:
    """Reference and mutant of every task, graded as is, through the grading and the feedback
    tests, with time limits calibrated as a run does.
    -> {(task id, "reference" | "mutant", "grading" | "feedback"): result}."""
    results: dict[tuple[str, str, str], ExecResult] = {}

    async def run() -> None:
        async with DockerPool.start(SandboxConfig(pool_size=2)) as pool:
            suite, _ = load_suite("humanevalplus")
            limits = await calibrate_time_limits(pool, tasks, suite, DEFAULT_IMAGE)

            async def one(task: Task, which: str, code: str, kind: str) -> None:
                tests = task.grading_tests if kind == "grading" else task.feedback_tests
                results[task.id, which, kind] = await grade(pool, task, code, limits[task.id], tests=tests, as_is=True)

            async with anyio.create_task_group() as tg:
                for task in tasks:
                    for which, code in (("reference", whole_program(task)), ("mutant", rows[task.id]["mutant"])):
                        for kind in ("grading", "feedback"):
                            tg.start_soon(one, task, which, code, kind)

    anyio.run(run)
    return results


def disagreements(tasks: list[Task], rows: dict[str, dict[str, Any]], results: dict) -> dict[str, Any]:
    """Everything that differs from expectations: references that do not pass (grading or
    feedback) and mutant verdicts that differ from evalplus's (grading vs base+plus, feedback
    vs base), leaving out tasks whose evalplus verdicts were not stable."""
    found: dict[str, Any] = {}
    for task in tasks:
        row = rows[task.id]
        for kind in ("grading", "feedback"):
            r = results[task.id, "reference", kind]
            if r.verdict is not Verdict.PASSED:
                found[f"{task.id} reference {kind}"] = (r.verdict.value, r.detail[:200])
        if not row["stable"]:
            continue
        want = {"grading": passes(row["mutant_status"]), "feedback": row["mutant_status"][0] == "pass"}
        for kind in ("grading", "feedback"):
            r = results[task.id, "mutant", kind]
            if (r.verdict is Verdict.PASSED) != want[kind]:
                found[f"{task.id} mutant {kind}"] = (f"evalplus {row['mutant_status']}", r.verdict.value, r.detail[:200])
    return found


def expected(key: str) -> bool:
    """A disagreement that is listed above, with its reason."""
    task_id, which, _ = key.split()
    return task_id in (UPSTREAM_BROKEN if which == "reference" else KNOWN_DISAGREEMENTS)


@pytest.mark.usefixtures("docker_ready")
def test_sample_agrees_with_evalplus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """20 tasks: references pass, mutants get evalplus's verdict (grading: base + plus; feedback:
    base)."""
    monkeypatch.setenv("AGENTLOOP_CACHE", str(tmp_path / "cache"))
    _, rows = fixture()
    _, tasks = load_suite("humanevalplus")
    by_id = {t.id: t for t in tasks}
    picked = [by_id[i] for i in FAST]
    assert len(picked) == 20
    results = grade_against_evalplus(picked, rows)
    found = disagreements(picked, rows, results)
    assert {k for k in found if not expected(k)} == set(), found
    assert set(found) == {"HumanEval/32 mutant grading", "HumanEval/32 mutant feedback"}
    # evalplus 0.3.1 fails every HumanEval/32 sample; agentloop grades by its oracle
    assert rows["HumanEval/32"]["reference"] == ["fail", "fail"]
    assert results["HumanEval/32", "reference", "grading"].verdict is Verdict.PASSED
    wrong = rows["HumanEval/32"]["mutant"].replace("    return x\n", "    return x + 1\n")
    assert wrong != rows["HumanEval/32"]["mutant"]

    async def wrong_root() -> ExecResult:
        async with DockerPool.start(SandboxConfig(pool_size=1)) as pool:
            return await grade(pool, by_id["HumanEval/32"], wrong, 10.0, as_is=True)

    assert anyio.run(wrong_root).verdict is Verdict.FAILED


@pytest.mark.slow
@pytest.mark.usefixtures("docker_ready")
def test_every_task_agrees_with_evalplus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """All 164: every reference passes but the upstream-broken ones, every mutant agrees with
    evalplus but the listed differences (each with its reason above); then the references and
    mutants once more as `solution` rows through `agentloop grade`, which must give the same
    verdicts."""
    monkeypatch.setenv("AGENTLOOP_CACHE", str(tmp_path / "cache"))
    _, rows = fixture()
    _, tasks = load_suite("humanevalplus")
    results = grade_against_evalplus(tasks, rows)
    found = disagreements(tasks, rows, results)
    summary = {
        "references passed": sum(results[t.id, "reference", "grading"].verdict is Verdict.PASSED for t in tasks),
        "references passing the feedback tests":
            sum(results[t.id, "reference", "feedback"].verdict is Verdict.PASSED for t in tasks),
        "mutants compared": sum(rows[t.id]["stable"] for t in tasks),
        "mutants agreeing": sum(rows[t.id]["stable"] and f"{t.id} mutant grading" not in found for t in tasks),
        "mutants agreeing on base (feedback tests)":
            sum(rows[t.id]["stable"] and f"{t.id} mutant feedback" not in found for t in tasks),
        "unstable in evalplus": {t.id: (rows[t.id]["reference"], rows[t.id]["mutant_status"],
                                        results[t.id, "mutant", "grading"].verdict.value)
                                 for t in tasks if not rows[t.id]["stable"]},
        "evalplus fails the reference": {t.id: (rows[t.id]["reference"], results[t.id, "reference", "grading"].verdict.value)
                                         for t in tasks if not passes(rows[t.id]["reference"])},
        "disagreements": found,
    }
    print(summary)
    unexpected = {k: v for k, v in found.items() if not expected(k)}
    assert unexpected == {}, summary

    # the same programs as `solution` rows of a samples file: chain 0 the reference, chain 1 the mutant
    samples = tmp_path / "samples.jsonl"
    with open(samples, "w") as f:
        for task in tasks:
            f.write(json.dumps({"task_id": task.id, "solution": whole_program(task)}) + "\n")
            f.write(json.dumps({"task_id": task.id, "solution": rows[task.id]["mutant"]}) + "\n")
    assert main(["grade", str(samples), "--suite", "humanevalplus", "--runs-dir", str(tmp_path / "runs"),
                 "--pool-size", "2"]) == 0
    (run_dir,) = list((tmp_path / "runs").iterdir())
    with sqlite3.connect(run_dir / DB_NAME) as db:
        graded = {(t, c): v for t, c, v in db.execute("SELECT task_id, chain, verdict FROM attempts")}
    db.close()
    assert len(graded) == 2 * len(tasks)
    differ = {(t.id, which): (graded[t.id, chain], results[t.id, which, "grading"].verdict.value)
              for t in tasks for chain, which in ((0, "reference"), (1, "mutant"))
              if (graded[t.id, chain] == "passed") != (results[t.id, which, "grading"].verdict is Verdict.PASSED)}
    print({"agentloop grade: passed": sum(v == "passed" for v in graded.values()), "differ from direct grading": differ})
    assert differ == {}
