"""`agentloop run` end to end with the real Docker sandbox, driven by the scripted server.

The scripted "model" is deterministic, so verdicts, pass@k, infra-error accounting and resume can
be checked exactly. The same flow against the real vLLM-CPU server is in test_run_vllm.py.
"""

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
WRONG = "```python\ndef {name}(*args):\n    return None\n```"


def reference_reply(name: str) -> str:
    t = SMOKE[name]
    return f"Sure!\n```python\n{t.prompt}{t.reference}```\n"


def smoke_script(request: ScriptedRequest) -> ScriptedReply:
    """Right for add and square; half right for factorial; wrong elsewhere; 500 for is_even."""
    name = re.search(r"def (\w+)\(", request.messages[-1]["content"]).group(1)
    if name == "is_even":
        return ScriptedReply.http_error(500, "scripted outage")
    if name in ("add", "square"):
        return ScriptedReply(texts=[reference_reply(name)])
    if name == "factorial":
        return ScriptedReply(texts=[reference_reply(name), WRONG.format(name=name)])
    return ScriptedReply(texts=[WRONG.format(name=name)])


def run_cli(*args: str) -> int:
    return main(["run", *args])


@pytest.fixture
def scripted():
    requests: list[ScriptedRequest] = []

    def script(request: ScriptedRequest) -> ScriptedReply:
        requests.append(request)
        return smoke_script(request)

    with scripted_server_in_thread(script) as server:
        yield server.base_url, requests


def common(base_url: str, tmp_path: Path) -> list[str]:
    config = tmp_path / "fast-retries.toml"
    config.write_text("[model]\nmax_retries = 2\nretry_max_wait_s = 0.05\n")
    return ["--config", str(config), "--suite", "smoke", "--base-url", base_url, "--model", "scripted",
            "--runs-dir", str(tmp_path / "runs"), "--pool-size", "2", "--request-timeout", "5", "--seed", "1"]


def recorded_attempts(db: Path) -> int:
    """Attempts in a store another process is writing (0 while its schema is being created)."""
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def only_run_dir(tmp_path: Path) -> Path:
    (run_dir,) = list((tmp_path / "runs").iterdir())
    return run_dir


def test_run_report_and_infra_errors(scripted, tmp_path, capsys, monkeypatch):
    base_url, requests = scripted
    monkeypatch.setenv("AGENTLOOP_CACHE", str(tmp_path / "cache"))
    assert run_cli(*common(base_url, tmp_path), "-n", "4", "--tasks", "smoke/0,smoke/3,smoke/4,smoke/1",
                   "--samples-per-request", "2") == 0
    run_dir = only_run_dir(tmp_path)
    report = build_report(run_dir)
    per_task = {r["task_id"]: r for r in report.per_task}
    assert (per_task["smoke/0"]["n"], per_task["smoke/0"]["passed"]) == (4, 4)  # add
    assert (per_task["smoke/3"]["n"], per_task["smoke/3"]["passed"]) == (4, 2)  # factorial
    assert (per_task["smoke/1"]["n"], per_task["smoke/1"]["passed"]) == (4, 0)  # reverse_string
    assert (per_task["smoke/4"]["n"], per_task["smoke/4"]["infra_errors"]) == (0, 4)  # is_even: server 500s
    assert report.verdicts == {"failed": 6, "infra_error": 4, "passed": 6}
    pass1 = {r.k: r.mean for r in report.pass_at_k}[1]
    assert pass1 == pytest.approx((1 + 0.5 + 0) / 3)  # infra errors are excluded, not wrong
    # every request carried the exact sampling params; the 500s were retried before giving up
    assert {r.n for r in requests} == {2} and all(r.params.get("seed") is not None for r in requests)
    assert sum(1 for r in requests if "is_even" in r.messages[-1]["content"]) > 2
    # the attempt rows keep everything
    with sqlite3.connect(run_dir / "attempts.sqlite") as db:
        row = db.execute("SELECT completion, code, verdict, grading, prompt_tokens, completion_tokens "
                         "FROM attempts WHERE task_id='smoke/1' LIMIT 1").fetchone()
        assert "return None" in row[1] and row[2] == "failed" and row[4] > 0 and row[5] > 0
        assert json.loads(row[3])["verdict"] == "failed"
        error = db.execute("SELECT error FROM attempts WHERE kind='infra_error' LIMIT 1").fetchone()[0]
        assert "500" in error and "scripted outage" in error
    assert (run_dir / "pass_at_k.png").is_file() and (run_dir / "log.jsonl").stat().st_size > 0
    capsys.readouterr()
    assert main(["report", str(run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["infra_errors"] == 4 and out["pass_at_k"][0]["k"] == 1


def test_resume_does_only_what_is_missing(scripted, tmp_path, monkeypatch):
    base_url, requests = scripted
    monkeypatch.setenv("AGENTLOOP_CACHE", str(tmp_path / "cache"))
    assert run_cli(*common(base_url, tmp_path), "-n", "3", "--tasks", "smoke/0,smoke/7,smoke/3",
                   "--samples-per-request", "1") == 0
    run_dir = only_run_dir(tmp_path)
    db = sqlite3.connect(run_dir / "attempts.sqlite")
    with db:  # as if the process died with these attempts in flight
        db.execute("DELETE FROM attempts WHERE (task_id='smoke/0' AND chain=2) OR task_id='smoke/7'")
    before = len(requests)
    assert main(["run", "--resume", str(run_dir), "--base-url", base_url]) == 0
    assert len(requests) - before == 4  # smoke/0 chain 2 and the three chains of smoke/7
    rows = db.execute("SELECT task_id, chain, COUNT(*) FROM attempts GROUP BY task_id, chain").fetchall()
    assert sorted(rows) == [(t, c, 1) for t in ("smoke/0", "smoke/3", "smoke/7") for c in range(3)]
    report = build_report(run_dir)
    assert report.attempts == 9 and report.missing == 0
    # a second resume has nothing left to do
    before = len(requests)
    assert main(["run", "--resume", str(run_dir), "--base-url", base_url]) == 0
    assert len(requests) == before


def test_one_line_errors(scripted, tmp_path, capsys):
    base_url, _ = scripted
    cases = [
        (["--base-url", "http://127.0.0.1:9/v1"], "http://127.0.0.1:9/v1"),
        (["--base-url", base_url, "--model", "no-such-model"], "does not serve 'no-such-model'"),
        (["--base-url", base_url, "--model", "scripted", "--image", "agentloop-missing:none"], "agentloop sandbox build"),
        (["--base-url", base_url, "--suite", "no-such-suite"], "unknown suite 'no-such-suite'"),
        (["--base-url", base_url, "--data", str(tmp_path / "missing.jsonl")], "missing.jsonl: no such file"),
    ]
    for args, expected in cases:
        capsys.readouterr()
        assert run_cli("--runs-dir", str(tmp_path / "runs"), *args) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()  # nothing is created before the checks pass


def test_no_docker_engine_is_one_line(scripted, tmp_path, capsys, monkeypatch):
    base_url, _ = scripted
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert run_cli(*common(base_url, tmp_path), "-n", "1", "--limit", "1") == 2
    err = capsys.readouterr().err.strip()
    assert "no Docker engine answers at unix:///nonexistent/docker.sock" in err and "setup-engine.sh" in err
    assert len(err.splitlines()) == 1


def test_sandbox_exec_cli(tmp_path, capsys):
    prog = tmp_path / "p.py"
    prog.write_text("import sys\nprint('hi')\nsys.exit(3)\n")
    assert main(["sandbox", "exec", str(prog), "--timeout", "5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verdict"] == "failed" and result["exit_code"] == 3 and "hi" in result["stdout"]


def test_ctrl_c_removes_containers_and_keeps_attempts(tmp_path):
    """SIGINT mid-run: exit code 130, no container of the run left, finished attempts kept."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import docker

    def slow_after_first_two(request: ScriptedRequest) -> ScriptedReply:
        return ScriptedReply(texts=[reference_reply("add")], delay_s=0 if request.index < 2 else 60)

    with scripted_server_in_thread(slow_after_first_two) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentloop.cli", "run", *common(server.base_url, tmp_path),
             "--tasks", "smoke/0", "-n", "6", "--samples-per-request", "1", "--concurrency", "6"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "AGENTLOOP_CACHE": str(tmp_path / "cache")},
        )
        client = docker.from_env()
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                runs = list((tmp_path / "runs").glob("*/attempts.sqlite"))
                if runs and recorded_attempts(runs[0]) == 2:
                    break
                time.sleep(0.2)
            else:
                pytest.fail("the run did not record its first two attempts")
            (run_dir,) = [p.parent for p in runs]
            run_id = sqlite3.connect(runs[0]).execute("SELECT value FROM meta WHERE key='run_id'").fetchone()[0]
            label = f"agentloop.run={json.loads(run_id)}"
            assert client.containers.list(all=True, filters={"label": label})
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 130, err
            assert client.containers.list(all=True, filters={"label": label}) == []
        finally:
            proc.kill()
            client.close()
    report = build_report(run_dir)
    assert report.attempts == 2 and report.missing == 4


def test_sigkill_then_resume_is_exact(tmp_path):
    """SIGKILL with many attempts in flight; --resume ends with exactly the requested attempts,
    no duplicates, the dead run's containers reaped, and the same report as an uninterrupted run."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    import docker

    def jittery(request: ScriptedRequest) -> ScriptedReply:
        reply = smoke_script(request)
        return ScriptedReply(texts=reply.texts, delay_s=random.uniform(0.05, 0.4)) if reply.status == 200 else reply

    with scripted_server_in_thread(jittery) as server:
        args = [*common(server.base_url, tmp_path), "--tasks", "smoke/0,smoke/3,smoke/1", "-n", "12",
                "--samples-per-request", "1", "--concurrency", "12"]
        env = {**os.environ, "AGENTLOOP_CACHE": str(tmp_path / "cache")}
        proc = subprocess.Popen([sys.executable, "-m", "agentloop.cli", "run", *args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                dbs = list((tmp_path / "runs").glob("*/attempts.sqlite"))
                if dbs and recorded_attempts(dbs[0]) >= 6:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the run did not get going")
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            proc.kill()
        run_dir = dbs[0].parent
        run_id = json.loads(sqlite3.connect(dbs[0]).execute("SELECT value FROM meta WHERE key='run_id'").fetchone()[0])
        assert recorded_attempts(dbs[0]) < 36  # killed mid-run
        assert main(["run", "--resume", str(run_dir), "--base-url", server.base_url]) == 0
        assert main(["run", *args, "--runs-dir", str(tmp_path / "uninterrupted")]) == 0
    (whole_dir,) = list((tmp_path / "uninterrupted").iterdir())
    rows = sqlite3.connect(dbs[0]).execute(
        "SELECT task_id, chain, COUNT(*) FROM attempts WHERE kind='completed' GROUP BY task_id, chain").fetchall()
    assert sorted(rows) == [(t, c, 1) for t in ("smoke/0", "smoke/1", "smoke/3") for c in range(12)]
    report = build_report(run_dir)
    assert report.attempts == 36 and report.missing == 0 and report.infra_errors == 0
    assert [r.k for r in report.pass_at_k] == [1, 2, 5, 10, 12]
    # The scripted model answers each task the same way every time, so the numbers must agree too.
    resumed, whole = (json.loads((d / "report.json").read_text()) for d in (run_dir, whole_dir))
    assert shape(resumed) == shape(whole)
    assert (resumed["pass_at_k"], resumed["per_task"], resumed["verdicts"]) == (whole["pass_at_k"], whole["per_task"], whole["verdicts"])
    client = docker.from_env()
    try:
        assert client.containers.list(all=True, filters={"label": f"agentloop.run={run_id}"}) == []
    finally:
        client.close()


def shape(value):
    """The structure of a JSON value: keys and types, not the numbers."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__
