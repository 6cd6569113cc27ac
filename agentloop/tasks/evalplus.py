"""MBPP+ (evalplus) as agentloop tasks, graded the way evalplus 0.3.1's evaluator grades them.

Two published formats of MBPP+ v0.2.0 load (one row each, detected per row):

- **native** (`MbppPlus.jsonl.gz`, what `evalplus.evaluate` reads): `task_id` "Mbpp/N", a prose
  `prompt`, `entry_point`, `canonical_solution`, `base_input`, `plus_input`, `atol`. There are no
  expected outputs: evalplus runs the reference on every input. So does the grading program
  built here, in the tests' process (trusted code, deep-copied inputs), and it compares the
  candidate's output with the reference's as `evalplus.eval.unsafe_execute` does: exact equality,
  or `numpy.allclose(rtol=1e-7, atol)` with the same type and length once `atol` is set (or the
  expected output is a float / a list of floats: atol 1e-6), plus evalplus's special oracles
  (set equality for 8 entry points, "is not None" for the three tasks that return `re.Match`,
  and the per-task oracles of Mbpp/558 and 581; those of Mbpp/164 and 295 are kept, though
  v0.2.0 has neither task). Inputs are rebuilt as evalplus rebuilds
  them from JSON (`mbpp_deserialize_inputs`: tuples, sets, complex numbers). Base and plus inputs
  are checked in two passes with their own `atol` state, as evalplus's two `untrusted_check`s do.
- **OriginFmt** (`MbppPlus-OriginFmt`): integer `task_id`, prose `prompt`, `code` (the reference),
  `test_list` (MBPP's own asserts), `test_imports`, and `test`: top-level code (inputs, results
  and an `assertion` loop that calls the entry point by name). The final loop becomes the body of
  `check(candidate)` with the entry point's name bound to the candidate; the rest stays as it is.
  In three tasks (Mbpp/737, 787, 794) that `assertion` computes the comparison but never asserts
  it, so any output passes; the loader adds the assert (evalplus's own evaluator does compare).

Prompt (both formats): evalplus's MBPP prompt (the prose and one example assert in a docstring)
followed by the reference's `def` line, so a model can complete the body or write the function.
Feedback tests for revision turns: the base inputs (native) or MBPP's `test_list` (OriginFmt);
grading: base + plus. The grading programs name nothing but `check` without a leading
underscore, so an entry point named `check` (Mbpp/56) or like a helper cannot collide.
"""

from __future__ import annotations

import ast
import copy
import math
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from agentloop.errors import DataError
from agentloop.tasks.loaders import load_unique
from agentloop.tasks.model import Task

NATIVE_FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input", "atol")
ORIGINFMT_FIELDS = ("task_id", "prompt", "code", "test", "test_list")

# evalplus/eval/_special_oracle.py and unsafe_execute (0.3.1), keyed by entry point as there.
SET_EQ_TASKS = frozenset({"similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly",
                          "larg_nnum", "intersection_array", "find_dissimilar", "Diff"})
NOT_NONE_TASKS = frozenset({"check_str", "text_match_three", "text_starta_endb"})
"""Their references return `re.Match` objects: only "is it None" is compared (evalplus's
MBPP_OUTPUT_NOT_NONE_TASKS: Mbpp/737, 787, 794)."""
_ORACLES = {"are_equivalent": "are_equivalent", "sum_div": "sum_div", "surface_Area": "surface_Area",
            "digit_distance_nums": "digit_distance_nums"}


def oracle(entry_point: str) -> str:
    """How evalplus compares outputs for this entry point."""
    if entry_point in _ORACLES:
        return _ORACLES[entry_point]
    if entry_point in SET_EQ_TASKS:
        return "set_eq"
    if entry_point in NOT_NONE_TASKS:
        return "not_none"
    return "exact"


# --- inputs as evalplus rebuilds them (evalplus/data/mbpp.py, 0.3.1, Apache-2.0) ----------------

_TUPLE_ARGS = {2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726, 740, 744,
               809}
_TUPLES_IN_ARGS = {63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780}
_FIRST_ARG_TUPLES = {75, 413, 444, 753}
_FIRST_ARG_TUPLE = {250, 405, 446, 617, 720, 763, 808}
_NESTED_TUPLES = {259, 401, 445}
_ALL_TUPLES = {580, 615, 791}


def _all_tuples(x: Any) -> Any:
    return tuple(_all_tuples(i) for i in x) if isinstance(x, list) else x


def deserialize_inputs(task_id: str, inputs: list) -> list:
    """`evalplus.data.mbpp.mbpp_deserialize_inputs`: the JSON inputs with the tuples, sets and
    complex numbers the references expect."""
    m = re.fullmatch(r"Mbpp/(\d+)", task_id)
    n = int(m.group(1)) if m else -1
    if n in _TUPLE_ARGS:
        return [[tuple(lst) for lst in inp] for inp in inputs]
    if n in _TUPLES_IN_ARGS:
        return [[[tuple(lst) for lst in lst_lst] for lst_lst in inp] for inp in inputs]
    if n in _FIRST_ARG_TUPLES:
        return [[[tuple(lst) for lst in inp[0]], inp[1]] for inp in inputs]
    if n in (106, 750):
        return [[inp[0], tuple(inp[1])] for inp in inputs]
    if n == 115:  # an empty list becomes {} (a dict), as upstream
        return [[[set(item) if isinstance(item, list) and len(item) else {} for item in inp[0]]] for inp in inputs]
    if n == 124:
        return [(float(inp[0]), complex(inp[1])) for inp in inputs]
    if n in _FIRST_ARG_TUPLE:
        return [[tuple(inp[0]), inp[1]] for inp in inputs]
    if n in _NESTED_TUPLES:
        inputs = [[[tuple(lst) for lst in lst_lst] for lst_lst in inp] for inp in inputs]
        return [[tuple(lst) for lst in inp] for inp in inputs]
    if n == 278:
        inputs = [[[tuple(item) if isinstance(item, list) else item for item in inp[0]]] for inp in inputs]
        return [[tuple(lst) for lst in inp] for inp in inputs]
    if n == 307:
        return [[tuple(inp[0]), inp[1], inp[2]] for inp in inputs]
    if n == 722:
        return [[{key: tuple(value) for key, value in inp[0].items()}, *inp[1:]] for inp in inputs]
    if n == 252:
        return [[complex(inp[0])] for inp in inputs]
    if n in _ALL_TUPLES:
        return [_all_tuples(inp) for inp in inputs]
    return inputs


def literal(x: Any) -> str:
    """Python source that evaluates to `x` (JSON values plus tuples, sets, complex numbers,
    inf and nan)."""
    if x is None or isinstance(x, (bool, int, str, bytes)):
        return repr(x)
    if isinstance(x, float):
        return repr(x) if math.isfinite(x) else f"float({str(x)!r})"
    if isinstance(x, complex):
        return f"complex({literal(x.real)}, {literal(x.imag)})"
    if isinstance(x, list):
        return "[" + ", ".join(map(literal, x)) + "]"
    if isinstance(x, tuple):
        return "(" + ", ".join(map(literal, x)) + ("," if len(x) == 1 else "") + ")"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in x.items()) + "}"
    if isinstance(x, (set, frozenset)):
        body = "[" + ", ".join(map(literal, x)) + "]"
        return f"{type(x).__name__}({body})"
    raise TypeError(f"no literal for {type(x).__name__}")


# --- the grading program (native rows) ----------------------------------------------------------

_NATIVE_CHECK = '''
def _is_floats(x):  # evalplus.eval.is_floats
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    if isinstance(x, _np.ndarray):
        return x.dtype == _np.float64 or x.dtype == _np.float32
    return False


def _surface_Area(base_edge, height):  # evalplus's oracle for Mbpp/581
    slant_height = _math.sqrt((base_edge / 2) ** 2 + height**2)
    base_area = base_edge**2
    lateral_area = 4 * (base_edge * slant_height) / 2
    total_surface_area = base_area + lateral_area
    return round(total_surface_area)


def _digit_distance_nums(num1, num2):  # evalplus's oracle for Mbpp/558
    str_num1, str_num2 = str(num1), str(num2)
    max_length = max(len(str_num1), len(str_num2))
    str_num1, str_num2 = str_num1.zfill(max_length), str_num2.zfill(max_length)
    total_difference = 0
    for digit1, digit2 in zip(str_num1, str_num2):
        difference = abs(int(digit1) - int(digit2))
        total_difference += difference
    return total_difference


_VALUE_TYPES = (bool, int, float, complex, str, bytes, bytearray, tuple, list, dict, set, frozenset, range)


def _crossed_type(x):
    """The type `x` has once it has crossed from the candidate's process (numpy scalars become
    Python scalars, subclasses of value types their base type): what `type(out)` is compared with."""
    if isinstance(x, _np.generic):
        return type(x.item())
    for base in _VALUE_TYPES:
        if isinstance(x, base):
            return base
    return type(x)


def _short(x, limit=150):
    try:
        text = repr(x)
    except Exception:
        text = "<%s>" % type(x).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _same(inp, out, exp, atol):
    """evalplus.eval.unsafe_execute's comparison of one output -> (equal, atol for the next input)."""
    exact_match = out == exp
    if _ORACLE == "are_equivalent":  # Mbpp/164
        exact_match = exact_match or True
    elif _ORACLE == "sum_div":  # Mbpp/295
        exact_match = exact_match or out == 0
    elif _ORACLE == "surface_Area":  # Mbpp/581
        exact_match = exact_match or abs(out - _surface_Area(*inp)) <= atol
    elif _ORACLE == "digit_distance_nums":  # Mbpp/558
        exact_match = exact_match or out == _digit_distance_nums(*inp)
    elif _ORACLE == "set_eq":
        exact_match = set(out) == set(exp)
    elif _ORACLE == "not_none":  # exp is `reference output is not None`
        if isinstance(out, bool):
            exact_match = out == exp
        else:
            exact_match = exp == (out is not None)
    if atol == 0 and _is_floats(exp):
        atol = 1e-6
    if not exact_match and atol != 0:
        equal = (type(out) == _crossed_type(exp)
                 and (not isinstance(exp, (list, tuple)) or len(out) == len(exp))
                 and bool(_np.allclose(out, exp, rtol=1e-07, atol=atol)))
    else:
        equal = bool(exact_match)
    return equal, atol


def _run(candidate, reference, kind, inputs):
    atol = _ATOL  # evalplus checks base and plus inputs separately, each from the task's atol
    for index, inp in enumerate(inputs):
        exp = reference(*_copy.deepcopy(inp))
        if _ORACLE == "not_none":
            exp = exp is not None
        args = _copy.deepcopy(inp)
        call = "%s(%s)" % (_ENTRY_POINT, _short(list(inp), 200)[1:-1])
        try:
            out = candidate(*args)
        except Exception as e:
            if hasattr(e, "add_note"):
                e.add_note("on %s input %d: %s" % (kind, index, call))
            raise
        equal, atol = _same(inp, out, exp, atol)
        if not equal:
            if _ORACLE == "not_none":
                want = "a value that is not None" if exp else "None"
            elif _ORACLE == "set_eq":
                want = "the elements of %s (any order)" % _short(exp)
            else:
                want = _short(exp)
            raise AssertionError("%s returned %s; expected %s (%s input %d)" % (call, _short(out), want, kind, index))


def check(candidate):
    namespace = {"__name__": "__reference__"}
    exec(compile(_REFERENCE, "<reference>", "exec"), namespace)
    reference = namespace[_ENTRY_POINT]
    for kind, inputs in _INPUTS:
        _run(candidate, reference, kind, inputs)
'''


def native_check(task_id: str, entry_point: str, reference: str, atol: float | int,
                 inputs: list[tuple[str, list]]) -> str:
    """A `check(candidate)` program: the reference runs on every input of each (kind, inputs)
    pass and the candidate's output is compared with its output as evalplus does."""
    passes = ",\n".join(f"    ({kind!r}, {literal(values)})" for kind, values in inputs)
    return (
        f"# {task_id} (MBPP+, evalplus): the reference solution runs here on every input and the\n"
        "# candidate's output must match its output the way evalplus 0.3.1's evaluator decides.\n"
        "import copy as _copy\nimport math as _math\n\nimport numpy as _np\n\n"
        f"_ENTRY_POINT = {entry_point!r}\n_ORACLE = {oracle(entry_point)!r}\n_ATOL = {atol!r}\n"
        f"_REFERENCE = {reference!r}\n_INPUTS = (\n{passes},\n)\n"
        + _NATIVE_CHECK
    )


# --- rows -> tasks ----------------------------------------------------------------------------


def _string(row: dict[str, Any], key: str, where: str, what: str = "a non-empty string") -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        got = "missing" if key not in row else f"got {value!r:.60}"
        raise DataError(f"{where}: field '{key}' must be {what}, {got}")
    return value


def _entry_def_line(code: str, entry_point: str, where: str, field: str) -> str:
    """The `def` line of the entry point in the reference (for the prompt)."""
    try:
        with warnings.catch_warnings():  # e.g. invalid escapes in a reference's regex strings
            warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))
            tree = ast.parse(code)
    except SyntaxError as e:
        raise DataError(
            f"{where}: field '{field}' does not parse (line {e.lineno}: {e.msg}); expected Python source") from None
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry_point]
    if not defs:
        raise DataError(f"{where}: field '{field}' defines no top-level function {entry_point!r} (the entry point)")
    node = defs[-1]
    lines = code.splitlines()
    header = lines[node.lineno - 1].rstrip()
    if (node.decorator_list or not header.startswith("def ") or not header.endswith(":")
            or node.body[0].lineno == node.lineno):
        # not a plain one-line header: rebuild it from the AST
        stub = copy.copy(node)
        stub.body, stub.decorator_list = [ast.Pass()], []
        header = ast.unparse(stub).split("\n")[0]
    return header


def _inputs(row: dict[str, Any], key: str, where: str) -> list:
    value = row.get(key)
    if value == {}:  # Mbpp/793's plus_input is an empty object upstream: no inputs
        return []
    if not isinstance(value, list) or not all(isinstance(i, list) for i in value):
        got = "missing" if key not in row else f"got {value!r:.60}"
        raise DataError(f"{where}: field '{key}' must be a list of argument lists, {got}")
    return value


def native_task(row: dict[str, Any], where: str) -> Task:
    task_id = _string(row, "task_id", where)
    prompt = _string(row, "prompt", where)
    entry_point = _string(row, "entry_point", where)
    if not entry_point.isidentifier():
        raise DataError(f"{where}: field 'entry_point' must be a Python name, got {entry_point!r:.60}")
    reference = _string(row, "canonical_solution", where)
    atol = row.get("atol", 0)
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol >= 0:
        raise DataError(f"{where}: field 'atol' must be a number >= 0, got {atol!r:.60}")
    base = deserialize_inputs(task_id, _inputs(row, "base_input", where))
    plus = deserialize_inputs(task_id, _inputs(row, "plus_input", where))
    header = _entry_def_line(reference, entry_point, where, "canonical_solution")
    return Task(
        id=task_id, prompt=prompt.rstrip("\n") + "\n" + header + "\n", entry_point=entry_point,
        grading_tests=native_check(task_id, entry_point, reference, atol, [("base", base), ("plus", plus)]),
        feedback_tests=native_check(task_id, entry_point, reference, atol, [("base", base)]) if base else "",
        reference=reference, metadata={"base_tests": len(base), "plus_tests": len(plus)},
    )


# OriginFmt: the comparison that Mbpp/737, 787 and 794 compute but never assert.
_UNASSERTED = "        exact_match = exp == (out is not None)\n"


def originfmt_task(row: dict[str, Any], where: str) -> Task:
    raw_id = row.get("task_id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (int, str)) or not str(raw_id).strip():
        raise DataError(f"{where}: field 'task_id' must be an integer (OriginFmt) or a string, got {raw_id!r:.60}")
    task_id = f"Mbpp/{raw_id}" if isinstance(raw_id, int) else raw_id
    prose = _string(row, "prompt", where)
    reference = _string(row, "code", where)
    test = _string(row, "test", where)
    test_list = row.get("test_list")
    if (not isinstance(test_list, list) or not test_list
            or not all(isinstance(t, str) and "\n" not in t.strip() for t in test_list)):
        raise DataError(
            f"{where}: field 'test_list' must be a non-empty list of one-line asserts, got {test_list!r:.60}")
    test_imports = row.get("test_imports") or []
    if not isinstance(test_imports, list) or not all(isinstance(t, str) for t in test_imports):
        raise DataError(f"{where}: field 'test_imports' must be a list of import lines, got {test_imports!r:.60}")
    entry_point, prefix, loop = _split_originfmt_test(test, where)
    if "def assertion" in prefix and _UNASSERTED in prefix and "assert exact_match" not in prefix:
        prefix = prefix.replace(_UNASSERTED, _UNASSERTED + "    assert exact_match\n", 1)
    header = _entry_def_line(reference, entry_point, where, "code")
    grading = (f"# {task_id} (MBPP+ OriginFmt): evalplus's test, its final loop run by check(candidate).\n"
               f"{prefix.rstrip()}\n\n\ndef check(candidate):\n    {entry_point} = candidate\n"
               + "".join(f"    {line}\n" for line in loop.splitlines()))
    imports = test_imports + _missing_imports(test_list, test_imports, entry_point)
    feedback = ("".join(f"{line.strip()}\n" for line in imports)
                + f"\n\ndef check(candidate):\n    {entry_point} = candidate\n"
                + "".join(f"    {t.strip()}\n" for t in test_list))
    prompt = f'"""\n{prose.strip()}\n{test_list[0].strip()}\n"""\n{header}\n'
    return Task(id=task_id, prompt=prompt, entry_point=entry_point, grading_tests=grading, feedback_tests=feedback,
                reference=reference, metadata={})


def _missing_imports(asserts: list[str], imports: list[str], entry_point: str) -> list[str]:
    """`import M` for each standard-library module the asserts use as `M.name` but `test_imports`
    does not import (upstream, Mbpp/596's asserts call sys.getsizeof with no imports)."""
    have = " ".join(imports)
    used: dict[str, None] = {}
    for line in asserts:
        try:
            tree = ast.parse(line.strip())
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id != entry_point
                    and node.value.id in sys.stdlib_module_names and not re.search(rf"\b{node.value.id}\b", have)):
                used[node.value.id] = None
    return [f"import {name}" for name in used]


def _split_originfmt_test(test: str, where: str) -> tuple[str, str, str]:
    """(entry point, everything before the final loop, the final loop) of an OriginFmt test, whose
    last statement is `for ...: assertion(ENTRY(*inp), ..., atol)`. Only the loop is parsed here
    (the rest is trusted test code, hundreds of KB of literals, compiled in the sandbox)."""
    expected = "expected evalplus's OriginFmt test ending in `for ...: assertion(ENTRY_POINT(*inp), exp, atol)`"
    starts = [m.start() for m in re.finditer(r"^for\b", test, re.MULTILINE)]
    call = None
    if starts:
        loop = test[starts[-1]:]
        try:
            tree = ast.parse(loop)
        except SyntaxError:
            tree = None
        last = tree.body[0] if tree is not None and len(tree.body) == 1 else None
        if isinstance(last, ast.For) and len(last.body) == 1 and isinstance(last.body[0], ast.Expr):
            outer = last.body[0].value
            if (isinstance(outer, ast.Call) and isinstance(outer.func, ast.Name) and outer.func.id == "assertion"
                    and outer.args and isinstance(outer.args[0], ast.Call)
                    and isinstance(outer.args[0].func, ast.Name)):
                call = outer.args[0].func.id
    if call is None:
        raise DataError(f"{where}: field 'test' has no final assertion loop; {expected}")
    return call, test[: starts[-1]], test[starts[-1]:]


def mbppplus_task(row: dict[str, Any], where: str) -> Task:
    if "base_input" in row or "plus_input" in row:
        return native_task(row, where)
    if "test_list" in row or "code" in row:
        return originfmt_task(row, where)
    raise DataError(
        f"{where}: not an MBPP+ row (fields {', '.join(sorted(row))[:120]}); expected evalplus's native "
        f"MbppPlus fields ({', '.join(NATIVE_FIELDS)}) or OriginFmt ({', '.join(ORIGINFMT_FIELDS)})"
    )


def load_mbppplus(path: Path) -> list[Task]:
    """MBPP+ tasks from evalplus's native `MbppPlus.jsonl(.gz)` or its OriginFmt file."""
    return load_unique(path, lambda row, where, _: mbppplus_task(row, where), "task_id", "tasks")
