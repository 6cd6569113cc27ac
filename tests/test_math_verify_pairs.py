"""Agreement with math-verify on its own regression suite: Math-Verify 0.9.0's 276 labelled
(gold, pred, expected) pairs, graded as a run grades (`grade_answer`: extraction from both texts,
then comparison), with each pair's options mapped to our settings (scripts/math_verify_pairs.py).

Issue 13's target is >= 97% right. The pairs we get "wrong" are listed by id with the reason
(README, "Agreement with math-verify"): the test fails when any other pair goes wrong, and when a
listed pair starts agreeing (then the list and the README must change)."""

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("AGENTLOOP_DATA_DIR") or ROOT.parent / "shared" / "data") / "math-verify-0.9.0-tests.jsonl"

DISAGREE = {
    # The gold's \boxed{ never closes: an unclosed box is no answer (a reply cut off inside one must
    # not count). math-verify agrees only by reading the last "= -1" of each side.
    r"tests/test_numina_cases.py::test_numina_cases[\\\\boxed{W(n) = 1 \\\\text{ and } W(n) = -1",
    # (1,3) is an ordered pair or an open interval, not the set {1, 3}.
    r"tests/test_all.py::test_math_extraction_additional_cases[$(1,3)$-${1,3}$-1]",
    # 1 - 1/e is not 1 + 1/e: math-verify cuts both at \frac{1}{ and compares 1 with 1.
    r"tests/test_yujianll.py::test_string_extraction[$1 - \\frac{1}{\\mathrm{e}}$",
    # A gap, not a choice: latex2sympy2 1.9.1 cannot parse the sum, and the factors are swapped.
    r"tests/test_yujianll.py::test_string_extraction[$F_n = \\sum",
}


def _script():
    spec = importlib.util.spec_from_file_location("math_verify_pairs", ROOT / "scripts" / "math_verify_pairs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not DATA.is_file(), reason=f"{DATA} not found (set AGENTLOOP_DATA_DIR)")
def test_math_verify_pairs_agree():
    script = _script()
    pairs = script.load_pairs(DATA)
    assert len(pairs) == 276
    wrong = [p["id"] for p in pairs if not script.grade_pair(p)[0]]
    listed = [w for w in wrong if any(w.startswith(d) for d in DISAGREE)]
    assert sorted(set(wrong) - set(listed)) == []
    assert len(listed) == len(DISAGREE), f"a listed disagreement now agrees: {sorted(DISAGREE)} vs {listed}"
    assert len(pairs) - len(wrong) >= 0.97 * len(pairs)
