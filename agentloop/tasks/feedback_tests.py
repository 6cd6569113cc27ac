"""Which tests a revision turn may show the model, chosen per suite (`Suite.feedback`).

Grading tests never reach a prompt, so a suite needs a separate source of feedback tests:

- `field`: the row's `feedback_test` (empty when absent), as loaded.
- `docstring`: one assert per example in the entry point's docstring. The examples are already
  in the prompt, so nothing hidden leaks; a failing one names the exact call in the feedback.
- `humaneval`: the original HumanEval `test` for the same task id (HumanEval+ keeps its plus
  tests hidden and shows the base ones).
- `none`: no feedback tests.

Examples are parsed, never evaluated: both sides must parse with `ast.parse(..., mode="eval")`,
the call must name the entry point with literal arguments and the expected value must be a
literal; anything else is skipped.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from agentloop.tasks.loaders import humaneval_path, load_jsonl
from agentloop.tasks.model import Task

FEEDBACK_MODES = ("field", "docstring", "humaneval", "none")

# HumanEval docstring examples that are wrong upstream (the reference solution and the grading
# tests disagree with them): shown as failures they would push a model away from the right
# answer, so they are dropped. Task id -> {generated assert: why}. Found by running every
# reference solution against each of its examples in the sandbox (tests/test_tasks.py).
WRONG_EXAMPLES: dict[str, dict[str, str]] = {
    "HumanEval/47": {
        "assert candidate([-10, 4, 6, 1000, 10, 20]) == 15.0": "the median of that list is 8.0",
    },
    "HumanEval/116": {
        "assert candidate([1, 5, 2, 3, 4]) == [1, 2, 3, 4, 5]": "sorted by number of ones it is [1, 2, 4, 3, 5]",
        "assert candidate([-2, -3, -4, -5, -6]) == [-6, -5, -4, -3, -2]": "the tests expect [-4, -2, -6, -5, -3]",
    },
    "HumanEval/130": {
        "assert candidate(1) == 3": "a value of the recurrence, not of tri(), which returns a list",
        "assert candidate(4) == 3": "a value of the recurrence, not of tri(), which returns a list",
    },
    "HumanEval/148": {
        "assert candidate('Earth', 'Mercury') == 'Venus'": "(\"Venus\") is a string; bf returns the tuple ('Venus',)",
    },
}

# Builtins an example may wrap the call in, e.g. `round(find_zero([1, 2]), 2)` (HumanEval/32).
_WRAPPERS = frozenset({"round", "sorted", "abs", "len", "set", "list", "tuple"})
_PREFIX = r"(?:[*\-\u2022]\s*|for\s+|assert\s+|(?:for\s+)?examples?\s*\d*\s*:\s*|e\.g\.,?\s*)?"
_SEPARATOR = re.compile(r"==>|#\s*=>|=>|->|\u279e|==|=|\bshould\s+return\b|#\s*returns\b|\breturns\b", re.IGNORECASE)
_FOR_FORM = re.compile(r"for\s+(?P<args>.+?)\s*,?\s+the\s+(?:output|result)\s+should\s+be\s*:?\s*(?P<want>.+)",
                       re.IGNORECASE)
_QUOTED = re.compile(r"[rRuU]?(\"\"\"|'''|\"|')(.*)\1", re.DOTALL)
_MAX_CONTINUATION = 20


@dataclass(frozen=True)
class Example:
    call: ast.expr
    """The call, with the entry point renamed to `candidate`."""
    expected: ast.expr

    def assertion(self) -> str:
        if isinstance(self.expected, ast.Constant) and self.expected.value is None:
            return f"assert {ast.unparse(self.call)} is None"
        return f"assert {ast.unparse(self.call)} == {ast.unparse(self.expected)}"


def with_feedback_tests(tasks: list[Task], mode: str) -> list[Task]:
    """The tasks with `feedback_tests` set as the suite's `feedback` says."""
    if mode == "field":
        return tasks
    if mode == "none":
        return [replace(t, feedback_tests="") for t in tasks]
    if mode == "docstring":
        return [replace(t, feedback_tests=docstring_check(t.prompt, t.entry_point, WRONG_EXAMPLES.get(t.id, {})))
                for t in tasks]
    if mode == "humaneval":
        base = {t.id: t.grading_tests for t in load_jsonl(humaneval_path())}
        return [replace(t, feedback_tests=base.get(t.id, "")) for t in tasks]
    raise ValueError(f"unknown feedback mode {mode!r}")  # load_suite_definition checked it


def docstring_check(prompt: str, entry_point: str, drop: Iterable[str] = ()) -> str:
    """`def check(candidate)` asserting the docstring's examples (minus `drop`); "" if none."""
    dropped = set(drop)
    assertions = dict.fromkeys(e.assertion() for e in docstring_examples(prompt, entry_point))
    lines = [a for a in assertions if a not in dropped]
    if not lines:
        return ""
    return "def check(candidate):\n" + "".join(f"    {line}\n" for line in lines)


def docstring_examples(prompt: str, entry_point: str) -> list[Example]:
    """The examples that parse safely, in docstring order."""
    func = _entry_def(prompt, entry_point)
    text = _docstring_source(prompt, func) if func else None
    if func is None or not text:
        return []
    params = [a.arg for a in func.args.posonlyargs + func.args.args]
    lines = [line.strip() for line in text.splitlines()]
    examples: list[Example] = []
    i = 0
    while i < len(lines):
        example, i = _example_at(lines, i, entry_point, params)
        if example:
            examples.append(example)
    return examples


def _entry_def(prompt: str, entry_point: str) -> ast.FunctionDef | None:
    """The last definition of the entry point (a prompt may end right after the docstring)."""
    for source in (prompt, prompt.rstrip() + "\n    pass\n"):
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        defs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == entry_point]
        return defs[-1] if defs else None
    return None


def _docstring_source(prompt: str, func: ast.FunctionDef) -> str | None:
    """The docstring as written (escapes kept, so `"a\\nb"` in an example stays one line). The
    first string statement counts even after an import (HumanEval/115)."""
    for stmt in func.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            segment = ast.get_source_segment(prompt, stmt.value) or ""
            match = _QUOTED.fullmatch(segment.strip())
            return match.group(2) if match else None
    return None


def _example_at(lines: list[str], i: int, entry_point: str, params: list[str]) -> tuple[Example | None, int]:
    """The example starting at line i (if any) and the index of the next line to look at."""
    line = lines[i]
    if line.startswith(">>>"):
        return _doctest(lines, i, entry_point)
    if (m := re.match(_PREFIX + rf"(?={re.escape(entry_point)}\s*\()", line, re.IGNORECASE)):
        text, end = _balanced(lines, i, line[m.end():])
        example = _inline(text, entry_point)
        return (example, end) if example else (None, i + 1)
    if (m := _FOR_FORM.fullmatch(line)):
        return _io_example(m["args"], m["want"], params), i + 1
    if line.lower().startswith("input:") and i + 1 < len(lines) and lines[i + 1].lower().startswith("output:"):
        return _io_example(line[6:], lines[i + 1][7:], params), i + 2
    return None, i + 1


def _doctest(lines: list[str], i: int, entry_point: str) -> tuple[Example | None, int]:
    """`>>> call` (`...` continues it) then the expected lines up to a blank line or the next
    `>>>`. No expected lines: the call returns None, or the source is `call == expected`. When
    it is no example, scanning goes on after the source lines."""
    source = [lines[i][3:]]
    i += 1
    while i < len(lines) and lines[i].startswith("... "):
        source.append(lines[i][4:])
        i += 1
    end = i
    while end < len(lines) and lines[end] and not lines[end].startswith(">>>"):
        end += 1
    example = _doctest_example(_parse("\n".join(source)), lines[i:end], entry_point)
    return (example, end) if example else (None, i)


def _doctest_example(expr: ast.expr | None, want: list[str], entry_point: str) -> Example | None:
    if expr is None:
        return None
    if want:
        return _example(expr, _parse_expected("\n".join(want)), entry_point)
    if isinstance(expr, ast.Compare) and len(expr.ops) == 1 and isinstance(expr.ops[0], ast.Eq):
        return _example(expr.left, expr.comparators[0], entry_point)
    return _example(expr, ast.Constant(None), entry_point)


def _balanced(lines: list[str], i: int, text: str) -> tuple[str, int]:
    """`text` joined with the following lines while its brackets are open (a call written over
    several lines, HumanEval/87); the index after the last line used."""
    end = i + 1
    while _depth(text) > 0 and end < len(lines) and end - i < _MAX_CONTINUATION:
        text += "\n" + lines[end]
        end += 1
    return text, end


def _depth(text: str) -> int:
    return sum(text.count(c) for c in "([{") - sum(text.count(c) for c in ")]}")


def _inline(text: str, entry_point: str) -> Example | None:
    """`call SEP expected` for SEP in ==>, =>, ->, ➞, ==, =, should return, returns: used only
    when exactly one split makes both sides valid."""
    found: dict[str, Example] = {}
    for sep in _SEPARATOR.finditer(text):
        call = _parse(text[: sep.start()])
        example = _example(call, _parse_expected(text[sep.end():]), entry_point) if call else None
        if example:
            found[example.assertion()] = example
    return next(iter(found.values())) if len(found) == 1 else None


def _io_example(args: str, want: str, params: list[str]) -> Example | None:
    """`For lst = [1, 2] the output should be 3` / `Input: a = 1, b = 2` + `Output: 3`: the
    names must be exactly the parameters (or one bare value for a one-parameter function)."""
    call = _parse(f"f({args.strip().rstrip(',')})")
    expected = _parse_expected(want)
    if not isinstance(call, ast.Call) or expected is None or not all(map(_is_literal, call.args)):
        return None
    if call.keywords and not call.args and sorted(k.arg or "" for k in call.keywords) == sorted(params):
        by_name = {k.arg: k.value for k in call.keywords}
        positional = [by_name[p] for p in params]
    elif len(call.args) == 1 and not call.keywords and len(params) == 1:
        positional = call.args
    else:
        return None
    if not all(map(_is_literal, positional)):
        return None
    return Example(ast.Call(ast.Name("candidate", ast.Load()), positional, []), expected)


def _example(call: ast.expr | None, expected: ast.expr | None, entry_point: str) -> Example | None:
    renamed = _candidate_call(call, entry_point) if call is not None else None
    return Example(renamed, expected) if renamed is not None and expected is not None else None


def _candidate_call(node: ast.expr, entry_point: str) -> ast.expr | None:
    """`entry_point(literals)`, or one wrapped in a builtin such as round, with the entry point
    renamed to `candidate`; None for any other expression."""
    if (direct := _direct_call(node, entry_point)) is not None:
        return direct
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _WRAPPERS
            and node.args and not node.keywords and all(map(_is_literal, node.args[1:]))):
        inner = _direct_call(node.args[0], entry_point)
        return ast.Call(node.func, [inner, *node.args[1:]], []) if inner is not None else None
    return None


def _direct_call(node: ast.expr, entry_point: str) -> ast.expr | None:
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry_point
            and all(map(_is_literal, node.args)) and all(k.arg and _is_literal(k.value) for k in node.keywords)):
        return ast.Call(ast.Name("candidate", ast.Load()), node.args, node.keywords)
    return None


def _parse_expected(text: str) -> ast.expr | None:
    """The expected value: a literal, tolerating a trailing full stop and lower-case true/false."""
    text = text.strip()
    for candidate in (text.rstrip(" .,;"), text):  # `should return 16.`: 16, not 16.0
        if candidate.lower() in ("true", "false"):
            candidate = candidate.capitalize()
        node = _parse(candidate)
        if node is not None and _is_literal(node):
            return node
    return None


def _parse(text: str) -> ast.expr | None:
    try:
        return ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError):
        return None


def _is_literal(node: ast.expr) -> bool:
    """Numbers, strings, bytes, booleans, None and containers of them (no names, no calls)."""
    if isinstance(node, ast.Constant):
        return node.value is not Ellipsis
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float, complex)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return all(map(_is_literal, node.elts))
    if isinstance(node, ast.Dict):
        return all(k is not None and _is_literal(k) for k in node.keys) and all(map(_is_literal, node.values))
    return False
