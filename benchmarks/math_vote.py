"""math_vote: canonicalize and majority-vote 256 answers x 500 MATH-500 problems on 2 workers.

Answers are realistic strings: each problem's ground truth, equivalent rewrites of it (``\\dfrac``
swaps, ``\\left``/``\\right``, decimal forms, ``x =`` prefixes, spacing, trailing dots, ``\\text``)
and wrong answers (other problems' truths, off-by-one integers), drawn with a fixed seed. Target:
the whole vote under 60 s, pool start-up and a cold cache included.

Baseline: naive pairwise voting, as in a plain sympy script: parse every answer with latex2sympy2
and compare it to each group's first answer by ``simplify(a - b) == 0`` (string equality when a
parse fails). It is far too slow to run in full, so it runs on a few problems' (spread over the set) first answers, and
its per-parse and per-comparison costs are extrapolated to the whole run, using the number of
comparisons the naive loop would make given the groups our vote found. The line says so.

    python benchmarks/math_vote.py [--data ../shared/data/math500.jsonl] [--naive-problems 10]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

import sympy
from latex2sympy2 import latex2sympy

from agentloop.math import configure, majority_vote
from agentloop.math.canonical import canonicals
from agentloop.math.vote import group_answers

TARGET_S = 60.0


def rewrites(answer: str, value: float | None) -> list[str]:
    """Equivalent spellings a model might produce for one ground truth."""
    out = [answer, answer + ".", f" {answer} ", answer.replace("\\frac", "\\dfrac")]
    if answer.startswith("(") and answer.endswith(")"):
        out.append("\\left(" + answer[1:-1] + "\\right)")
    if "=" not in answer and "\\text" not in answer:
        out += [f"x = {answer}", f"\\text{{{answer}}}" if re.fullmatch(r"[\w ]+", answer) else answer]
    if value is not None and not re.fullmatch(r"-?\d+", answer):
        out.append(f"{value:.10g}")
    if re.fullmatch(r"\d{4,}", answer):
        out.append(f"{int(answer):,}")
    return out


def wrong_answers(answer: str, others: list[str], rng: random.Random) -> list[str]:
    wrong = rng.sample(others, 6)
    if re.fullmatch(r"-?\d+", answer):
        wrong += [str(int(answer) + 1), str(int(answer) - 1)]
    return wrong


def make_problems(truths: list[str], n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    values = [c.value for c in canonicals(truths)]
    problems = []
    for truth, value in zip(truths, values):
        good, bad = rewrites(truth, value), wrong_answers(truth, truths, rng)
        problems.append([rng.choice(good) if rng.random() < 0.55 else rng.choice(bad) for _ in range(n)])
    return problems


def naive_costs(problems: list[list[str]], k: int, per_problem: int) -> tuple[float, float]:
    """Seconds per latex2sympy parse and per ``simplify(a - b) == 0`` comparison, measured."""
    parse_s = compare_s = 0.0
    parses = compares = 0
    for answers in problems[:: max(1, len(problems) // k)][:k]:  # spread over subjects and levels
        reps: list[tuple[object, str]] = []
        for a in answers[:per_problem]:
            t0 = time.perf_counter()
            try:
                e = latex2sympy(a)
            except Exception:
                e = None
            parse_s, parses = parse_s + time.perf_counter() - t0, parses + 1
            for r, rs in reps:
                t0 = time.perf_counter()
                try:
                    same = sympy.simplify(e - r) == 0 if e is not None and r is not None else a == rs
                except Exception:
                    same = a == rs
                compare_s, compares = compare_s + time.perf_counter() - t0, compares + 1
                if same:
                    break
            else:
                reps.append((e, a))
    return parse_s / max(1, parses), compare_s / max(1, compares)


def naive_comparisons(answers: list[str]) -> int:
    """How many comparisons the naive loop makes, with our groups standing in for its groups."""
    canon = [c.text for c in canonicals(answers)]
    order: list[str] = []
    total = 0
    for c in canon:
        total += order.index(c) + 1 if c in order else len(order)
        if c not in order:
            order.append(c)
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "math500.jsonl"))
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--naive-problems", type=int, default=10)
    ap.add_argument("--naive-answers", type=int, default=64)
    args = ap.parse_args()
    truths = [json.loads(line)["answer"] for line in open(args.data)]
    problems = make_problems(truths, args.samples, seed=0)
    configure(workers=args.workers, timeout_s=2.0)  # fresh pool, and a cold cache below
    from agentloop.math.canonical import _STATE
    _STATE.cache.clear()
    t0 = time.perf_counter()
    winners = [majority_vote(answers) for answers in problems]
    ours = time.perf_counter() - t0
    correct = sum(w[0] == c.text for w, c in zip(winners, canonicals(truths)))
    groups = sum(len(group_answers(a)) for a in problems) / len(problems)
    print(f"ours: {len(problems)} problems x {args.samples} answers in {ours:.1f} s on {args.workers} workers;"
          f" winner = truth's canonical form for {correct}/{len(problems)}; {groups:.1f} groups/problem")
    parse_s, compare_s = naive_costs(problems, args.naive_problems, args.naive_answers)
    comparisons = sum(naive_comparisons(a) for a in problems)
    naive = parse_s * len(problems) * args.samples + compare_s * comparisons
    print(f"naive (extrapolated, 1 process): {parse_s * 1e3:.1f} ms/parse, {compare_s * 1e3:.1f} ms/comparison"
          f" measured on {args.naive_problems} problems x {args.naive_answers} answers; {comparisons} comparisons"
          f" -> {naive:.0f} s for the full run")
    print(f"target math_vote < {TARGET_S:.0f} s: {'PASS' if ours < TARGET_S else 'FAIL'} ({ours:.1f} s)")
    print(f"ratio math_vote {naive / ours:.1f}")


if __name__ == "__main__":
    main()
