"""Task loading, suite definitions, code extraction and program assembly (no Docker needed)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from agentloop.errors import ConfigError, DataError
from agentloop.tasks.extract import assemble, extract_code, build_program
from agentloop.tasks.loaders import load_jsonl
from agentloop.tasks.suites import load_suite, select

ROW = {"task_id": "t/0", "prompt": "def f(x):\n    \"\"\"Double x.\"\"\"\n", "entry_point": "f",
       "test": "def check(candidate):\n    assert candidate(2) == 4\n", "canonical_solution": "    return 2 * x\n"}


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_builtin_suites_load():
    assert len(load_suite("smoke")[1]) == 10
    assert len(load_suite("humaneval")[1]) == 164
    suite, tasks = load_suite("humanevalplus")
    assert len(tasks) == 164 and suite.time_floor_s == 2.0
    fixed = next(t for t in tasks if t.id == "HumanEval/32")
    assert "abs(_poly(*inp, candidate(*inp)))" in fixed.grading_tests


def test_gzip_and_plain_jsonl(tmp_path):
    plain = write_jsonl(tmp_path / "a.jsonl", [json.dumps(ROW), ""])
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert load_jsonl(plain) == load_jsonl(gz)
    assert load_jsonl(plain)[0].reference == ROW["canonical_solution"]


@pytest.mark.parametrize("lines, message", [
    (["{not json"], "a.jsonl:1: invalid JSON"),
    ([json.dumps(ROW), json.dumps({k: v for k, v in ROW.items() if k != "entry_point"})], "a.jsonl:2: missing field 'entry_point'"),
    ([json.dumps({**ROW, "prompt": 3})], "a.jsonl:1: field 'prompt' must be a non-empty string"),
    ([json.dumps([1, 2])], "a.jsonl:1: expected a JSON object"),
    ([json.dumps(ROW), json.dumps(ROW)], "a.jsonl:2: duplicate task_id 't/0'"),
    ([""], "a.jsonl: no tasks (empty dataset)"),
    ([json.dumps({**ROW, "metadata": "x"})], "a.jsonl:1: field 'metadata' must be an object"),
])
def test_malformed_jsonl_names_file_line_and_field(tmp_path, lines, message):
    with pytest.raises(DataError) as e:
        load_jsonl(write_jsonl(tmp_path / "a.jsonl", lines))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_binary_garbage_is_a_data_error(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(DataError, match="a.jsonl"):
        load_jsonl(path)
    (tmp_path / "b.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="b.jsonl.gz"):
        load_jsonl(tmp_path / "b.jsonl.gz")


def test_unknown_suite_and_bad_suite_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown suite 'nope'"):
        load_suite("nope")
    bad = tmp_path / "s.toml"
    bad.write_text('format = "jsonl"\npath = "x.jsonl"\ntime_flor_s = 1\n')
    with pytest.raises(ConfigError, match="unknown key 'time_flor_s'"):
        load_suite(str(bad))


def test_select():
    tasks = load_suite("smoke")[1]
    assert [t.id for t in select(tasks, 2, None)] == ["smoke/0", "smoke/1"]
    assert [t.id for t in select(tasks, None, ["smoke/3"])] == ["smoke/3"]
    with pytest.raises(ConfigError, match="unknown task id"):
        select(tasks, None, ["smoke/99"])


@pytest.mark.parametrize("reply, expected", [
    ("```python\ndef f(x):\n    return 2 * x\n```", "def f(x):\n    return 2 * x"),
    ("Here:\n```\ndef g():\n    pass\n```\nand\n```python\ndef f(x):\n    return x\n```", "def f(x):\n    return x"),
    ("```python\ndef f(x):\n    return x +", "def f(x):\n    return x +"),  # cut by max_tokens
    ("    return 2 * x\n", "    return 2 * x"),  # raw body, HumanEval style
])
def test_extract_code(reply, expected):
    assert extract_code(reply, "f") == expected


def test_assemble_full_function_and_body_agree():
    task = load_jsonl(write_jsonl(Path("/tmp") / "agentloop-row.jsonl", [json.dumps(ROW)]))[0]
    for code in ("def f(x):\n    return 2 * x", "    return 2 * x\n"):
        program = build_program(task, assemble(task, code), task.grading_tests)
        namespace: dict = {}
        exec(compile(program, "<test>", "exec"), namespace)  # trusted: our own fixture
    assert program.rstrip().endswith("check(f)")
