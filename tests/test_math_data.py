"""Math data: the MATH-500 / GSM8K / generic JSONL loaders, the default math prompt, and final-answer
extraction (last \\boxed{}, fallbacks, GSM8K's `#### N`), including hostile model output."""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from agentloop.errors import DataError
from agentloop.math.data import (
    MATH_SYSTEM_PROMPT, MATH_USER_TEMPLATE, MathProblem, detect_format, load_gsm8k, load_math, load_math500,
)
from agentloop.math.extract import extract_answer, gsm8k_answer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MATH500 = DATA / "math500.jsonl"
GSM8K = DATA / "gsm8k-test.jsonl"
needs_data = pytest.mark.skipif(not (MATH500.is_file() and GSM8K.is_file()), reason="../shared/data not present")

MATH_ROW = {"problem": "What is $1+1$?", "solution": "Clearly $\\boxed{2}$.", "answer": "2",
            "subject": "Prealgebra", "level": 1}
GSM_ROW = {"question": "How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"}
GENERIC_ROW = {"problem": "Compute $2^{10}$.", "answer": "1024"}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# --- the published files -------------------------------------------------------------------

@needs_data
def test_math500_loads_all_rows_with_levels_and_subjects():
    problems = load_math(MATH500)
    assert len(problems) == 500 and problems == load_math500(MATH500)
    assert len({p.id for p in problems}) == 500
    assert {p.metadata["level"] for p in problems} == {1, 2, 3, 4, 5}
    assert {p.metadata["subject"] for p in problems} == {
        "Algebra", "Intermediate Algebra", "Prealgebra", "Number Theory", "Precalculus", "Geometry",
        "Counting & Probability"}
    assert Counter(p.metadata["level"] for p in problems) == {5: 134, 4: 128, 3: 105, 2: 90, 1: 43}
    assert all(p.problem and p.answer and p.solution for p in problems)


@needs_data
def test_math500_solution_boxes_match_the_answer_field():
    problems = load_math(MATH500)
    assert all("\\boxed" in p.solution or "\\fbox" in p.solution for p in problems)
    matches = [p.id for p in problems if extract_answer(p.solution) == p.answer]
    # measured: 500 of 500 match exactly (after stripping the box content's outer whitespace)
    assert len(matches) >= 0.95 * len(problems)
    squashed = [p.id for p in problems if (extract_answer(p.solution) or "").replace(" ", "") == p.answer.replace(" ", "")]
    assert len(squashed) == 500


@needs_data
def test_gsm8k_loads_all_rows_and_the_answer_round_trips():
    problems = load_math(GSM8K)
    assert len(problems) == 1319 and problems == load_gsm8k(GSM8K)
    assert problems[0].id == "gsm8k/0" and problems[-1].id == "gsm8k/1318"
    assert problems[0].answer == "18" and "####" not in problems[0].solution
    assert all("," not in p.answer and p.answer.lstrip("-").replace(".", "").isdigit() for p in problems)
    assert any(p.answer == "1450000" for p in problems)  # "#### 1,450,000" upstream
    for p in problems:
        assert extract_answer(p.solution + "\n#### " + p.answer) == p.answer, p.id


# --- loaders on small files ----------------------------------------------------------------

def test_formats_are_detected_from_the_first_row(tmp_path):
    m = load_math(write_jsonl(tmp_path / "m.jsonl", [MATH_ROW, {**MATH_ROW, "level": "Level 4"}]))
    assert [p.metadata for p in m] == [{"subject": "Prealgebra", "level": 1}, {"subject": "Prealgebra", "level": 4}]
    assert [p.id for p in m] == ["math500/0", "math500/1"] and m[0].solution == MATH_ROW["solution"]
    m = load_math(write_jsonl(tmp_path / "u.jsonl", [{**MATH_ROW, "unique_id": "test/prealgebra/1.json", "level": "Level ?"}]))
    assert m[0].id == "test/prealgebra/1.json" and m[0].metadata["level"] == "Level ?"
    g = load_math(write_jsonl(tmp_path / "g.jsonl", [GSM_ROW, {**GSM_ROW, "answer": "so\n#### 1,234.\n"}]))
    assert [(p.id, p.answer, p.solution) for p in g] == [("gsm8k/0", "7", "3 + 4 = <<3+4=7>>7"), ("gsm8k/1", "1234", "so")]
    j = load_math(write_jsonl(tmp_path / "j.jsonl", [GENERIC_ROW, {"id": "x", "problem": "p", "answer": 0.5, "metadata": {"k": 1}}]))
    assert j == [MathProblem("problem/0", GENERIC_ROW["problem"], "1024"), MathProblem("x", "p", "0.5", None, {"k": 1})]
    assert MathProblem.from_json(j[1].to_json()) == j[1]
    assert detect_format(GSM_ROW, "f:1") == "gsm8k"


def test_gzip_and_explicit_format(tmp_path):
    plain = write_jsonl(tmp_path / "a.jsonl", [GENERIC_ROW])
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert load_math(gz) == load_math(plain) == load_math(plain, "jsonl")
    # a MATH-500 file read as generic JSONL keeps its rows but not subject/level
    assert load_math(write_jsonl(tmp_path / "m.jsonl", [MATH_ROW]), "jsonl")[0].metadata == {}


@pytest.mark.parametrize("fmt, rows, message", [
    ("math500", [MATH_ROW, {k: v for k, v in MATH_ROW.items() if k != "answer"}], "a.jsonl:2: missing field 'answer'"),
    ("math500", [{**MATH_ROW, "problem": 7}], "a.jsonl:1: field 'problem' must be a non-empty string"),
    ("math500", [{**MATH_ROW, "level": [3]}], "a.jsonl:1: field 'level' must be an integer"),
    ("math500", [{**MATH_ROW, "subject": 3}], "a.jsonl:1: field 'subject' must be a non-empty string"),
    ("math500", [{**MATH_ROW, "unique_id": "u"}, {**MATH_ROW, "unique_id": "u"}], "a.jsonl:2: duplicate id 'u'"),
    ("gsm8k", [GSM_ROW, {"question": "q", "answer": "the answer is 7"}], "a.jsonl:2: field 'answer' has no '#### N'"),
    ("gsm8k", [{"question": "q", "answer": "7\n####  \n"}], "a.jsonl:1: field 'answer' has nothing after '####'"),
    ("gsm8k", [{"answer": "#### 7"}], "a.jsonl:1: missing field 'question'"),
    ("gsm8k", [{"question": "q", "answer": 7}], "a.jsonl:1: field 'answer' must be a non-empty string"),
    ("jsonl", [GENERIC_ROW, {"problem": "p"}], "a.jsonl:2: missing field 'answer'"),
    ("jsonl", [{**GENERIC_ROW, "answer": True}], "a.jsonl:1: field 'answer' must be a non-empty string"),
    ("jsonl", [{**GENERIC_ROW, "metadata": "x"}], "a.jsonl:1: field 'metadata' must be an object"),
    ("jsonl", [{**GENERIC_ROW, "id": "a"}, {**GENERIC_ROW, "id": "a"}], "a.jsonl:2: duplicate id 'a'"),
    ("jsonl", [{**GENERIC_ROW, "id": ["a"]}], "a.jsonl:1: field 'id' must be a non-empty string"),
    (None, [{"prompt": "p", "answer": "1"}], "a.jsonl:1: cannot tell the math format"),
    (None, ["{not json"], "a.jsonl:1: invalid JSON"),
    (None, ["[1, 2]"], "a.jsonl:1: expected a JSON object"),
    (None, [""], "a.jsonl: no problems (empty dataset)"),
    ("csv", [GENERIC_ROW], "a.jsonl: unknown math format 'csv'"),
])
def test_bad_input_is_a_one_line_data_error(tmp_path, fmt, rows, message):
    with pytest.raises(DataError) as e:
        load_math(write_jsonl(tmp_path / "a.jsonl", rows), fmt)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_binary_and_missing_files_are_data_errors(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(DataError) as e:
        load_math(path)
    assert "a.jsonl:1: not UTF-8 text" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "b.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="b.jsonl.gz"):
        load_math(tmp_path / "b.jsonl.gz")
    with pytest.raises(DataError, match="no such file"):
        load_math(tmp_path / "missing.jsonl")


def test_prompt_constants():
    assert "\\boxed{answer}" in MATH_SYSTEM_PROMPT and "step-by-step" in MATH_SYSTEM_PROMPT
    assert "Therefore, the final answer is: $\\boxed{answer}$. I hope it is correct." in MATH_SYSTEM_PROMPT
    assert MATH_USER_TEMPLATE.format(problem="What is $1+1$?") == "What is $1+1$?"


# --- extraction ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("so $\\boxed{\\frac{1}{\\sqrt{3}}}$.", "\\frac{1}{\\sqrt{3}}"),
    ("\\boxed{1} and later \\boxed{2}", "2"),
    ("\\boxed{1} and later \\fbox{x^{2}}", "x^{2}"),
    ("\\fbox{7}", "7"),
    ("$\\boxed 5$.", "5"),
    ("\\boxed 12, done", "12"),
    ("\\boxed {  7 }", "7"),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("\\boxed{\\boxed{3}}", "\\boxed{3}"),
    ("\\boxed{\\text{(C)}}", "\\text{(C)}"),
    ("a stray } then \\boxed{4}", "4"),
    ("\\boxed{1} then a truncated \\boxed{2", "1"),
    ("Therefore, the final answer is: $\\boxed{42}$. I hope it is correct.", "42"),
    ("The final answer is $42$. I hope it is correct.", "42"),
    ("Final Answer: 3.5.", "3.5"),
    ("**Final answer:** 7", "7"),
    ("so the answer is x = 2.", "x = 2"),
    ("The answer is 5\nmore text", "5"),
    ("work\n#### 1,234", "1,234"),
    ("nothing to see", None),
    ("", None),
    ("\\boxed{5", None),
    ("\\boxedx{3}", None),
    ("the answer is", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_gsm8k_answer():
    assert gsm8k_answer("x\n#### 1,450,000") == "1450000"
    assert gsm8k_answer("#### -3") == "-3"
    with pytest.raises(ValueError):
        gsm8k_answer("7")


@pytest.mark.parametrize("text", [
    "\\boxed{" + "{" * 100_000,
    "\\boxed{" * 20_000,
    "\\boxed{1}" + "\\fbox{" * 20_000,
    "}" * 100_000,
    "\\" * 100_001,
    "\\boxed" * 20_000,
    "\\boxed " + "x" * 100_000,
    "answer is " * 10_000,
    "the final answer is " + "$." * 50_000,
    "#### " * 20_000,
])
def test_adversarial_inputs_return(text):
    extract_answer(text)  # linear scans: returns at once (a backtracking regex would not)


def test_random_latex_soup_never_hangs_or_raises():
    rng = random.Random(5)
    pieces = ["\\boxed", "\\fbox", "{", "}", "\\{", "\\}", "\\\\", " ", "$", ".", "1", "x", "\n", "####",
              "answer is ", "Final Answer:"]
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        result = extract_answer(text)
        assert result is None or isinstance(result, str)
