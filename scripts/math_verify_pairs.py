"""Score agentloop's math checker on Math-Verify 0.9.0's own 276 labelled test pairs.

    python scripts/math_verify_pairs.py [--data PATH] [--defaults] [--show all|wrong] [--category SUBSTR]

Each pair is (gold text, pred text, expected 1/0, options). We grade ``pred`` as a model reply
against ``gold`` with `agentloop.math.grade.grade_answer`, with the pair's options mapped to our
settings where we have an equivalent (see ``settings``), or with our defaults (``--defaults``).
Prints the wrong pairs and, last, ``score RIGHT/TOTAL PCT``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from agentloop.math.grade import grade_answer

ROOT = Path(__file__).resolve().parents[1]
FILE = "math-verify-0.9.0-tests.jsonl"


def default_data() -> Path:
    base = os.environ.get("AGENTLOOP_DATA_DIR")
    return Path(base) / FILE if base else ROOT.parent / "shared" / "data" / FILE


def load_pairs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def settings(options: dict[str, Any]) -> dict[str, Any]:
    """math-verify options → grade_answer keyword arguments (only those we have an equivalent for).

    ``precision`` (math-verify's float rounding: decimal places non-integers are compared at),
    ``strict`` (False: variable names may differ) and ``allow_set_relation_comp`` (False: an
    inequality in the prediction does not match a set in the gold) map one to one; ``mode`` and
    ``match_types`` choose math-verify's extraction targets and have no equivalent (we always
    extract the same way). ``{"mode": "default"}`` means math-verify's defaults, which are ours.
    """
    out: dict[str, Any] = {}
    for key in ("precision", "strict", "allow_set_relation_comp"):
        if key in options:
            out[key] = options[key]
    return out


def grade_pair(pair: dict[str, Any], *, defaults: bool = False) -> tuple[bool, Any]:
    """(whether our verdict matches the label, our verdict)."""
    kwargs = {} if defaults else settings(pair.get("options") or {})
    verdict = grade_answer(pair["pred"], pair["gold"], **kwargs)
    return verdict.passed == bool(pair["expected"]), verdict


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--defaults", action="store_true", help="ignore each pair's options")
    ap.add_argument("--show", choices=("all", "wrong", "none"), default="wrong")
    ap.add_argument("--category", default="")
    args = ap.parse_args()
    pairs = [p for p in load_pairs(args.data or default_data()) if args.category in p["category"]]
    right, by_cat, wrong_cat = 0, Counter(), Counter()
    for p in pairs:
        ok, verdict = grade_pair(p, defaults=args.defaults)
        right += ok
        by_cat[p["category"]] += 1
        wrong_cat[p["category"]] += not ok
        if args.show == "all" or (args.show == "wrong" and not ok):
            print(f"{'ok ' if ok else 'BAD'} expected={p['expected']} got={int(verdict.passed)} {p['id']}\n"
                  f"    gold={p['gold'][-160:]!r}\n    pred={p['pred'][-160:]!r}\n"
                  f"    answer={verdict.answer!r:.160} detail={verdict.detail!r:.160}")
    for cat, n in sorted(by_cat.items()):
        print(f"  {cat:55s} {n - wrong_cat[cat]:3d}/{n}")
    print(f"score {right}/{len(pairs)} {100 * right / max(1, len(pairs)):.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
