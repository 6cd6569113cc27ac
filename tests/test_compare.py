"""`agentloop compare` on synthetic stores: the budget walk, selection, bins, the cross-validated
compute-optimal curve, pass@k's power law, the adaptive table and the CLI. No Docker, no server."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from agentloop.attempt import Attempt, AttemptKind
from agentloop.cli import main
from agentloop.compare import (
    JSON_NAME, adaptive_table, bin_of, build_comparison, fold_table, strategy_for,
)
from agentloop.compare.data import to_candidate
from agentloop.compare.stats import fit_power_law
from agentloop.compare.walk import UNITS, chain_orders, walk_group, walk_once
from agentloop.errors import ConfigError
from agentloop.sandbox.types import Verdict
from agentloop.selection import Candidate
from agentloop.store import AttemptStore
from agentloop.tasks.model import Task

PNGS = {"compare_generations.png", "compare_total_tokens.png", "compare_completion_tokens.png",
        "compare_bins.png", "compare_pass_at_k.png"}


def att(strategy: str, task: str, chain: int, turn: int = 0, *, passed: bool = False, fb: bool | None = None,
        code: str | None = None, request_id: str | None = None, prompt: int = 10, completion: int = 5,
        infra: bool = False) -> Attempt:
    """One attempt; `fb` None = the feedback tests did not run; `code` defaults to one of its own."""
    return Attempt(
        strategy=strategy, task_id=task, chain=chain, turn=turn,
        kind=AttemptKind.INFRA_ERROR if infra else AttemptKind.COMPLETED,
        messages=[{"role": "user", "content": task}], started_at=1.0, finished_at=2.0,
        request_id=request_id, completion="x",
        code=code if code is not None else f"def f():\n    return {chain * 100 + turn}\n",
        prompt_tokens=prompt, completion_tokens=None if infra else completion,
        verdict=None if infra else (Verdict.PASSED if passed else Verdict.FAILED),
        feedback_verdict=None if fb is None else (Verdict.PASSED if fb else Verdict.FAILED),
        error="server said no" if infra else None,
    )


def make_run(path: Path, attempts: list[Attempt], **config) -> Path:
    store = AttemptStore.create(path)
    cfg = {"samples": 4, "splits": None, "budget": None, "budget_unit": None, "suite": "synthetic",
           "model": {"model": "synthetic"}, **config}
    store.set_meta("config", cfg)
    task_ids = list(dict.fromkeys(a.task_id for a in attempts))
    store.put_tasks([Task(t, "def f():\n", "f", "def check(c): pass\n") for t in task_ids], {})
    store.write_batch(attempts)
    store.close()
    return path


def point(c, unit: str, strategy: str, budget: float, curves: str = "success"):
    curve = next(cv for cv in getattr(c, curves)[unit] if cv.strategy == strategy)
    return next(p for p in curve.points if p.budget == budget)


# -- (a) the walk by hand ---------------------------------------------------------------------------

def two_chain_run(tmp_path: Path) -> Path:
    """Strategy 2:2 on one task: chain 0 fails, then is fixed at turn 1 (feedback passes, chain ends);
    chain 1 fails twice."""
    return make_run(tmp_path / "run", [
        att("2:2", "t", 0, 0, fb=False), att("2:2", "t", 0, 1, passed=True, fb=True),
        att("2:2", "t", 1, 0, fb=False), att("2:2", "t", 1, 1, fb=False),
    ])


def test_walk_matches_hand_computation(tmp_path):
    # Orders [0, 1] and [1, 0] are both enumerated (2! <= permutations), so the means are exact.
    # b=1: one turn 0, both fail -> 0. b=2: [0,1] reaches the fix (1), [1,0] does not (0) -> 0.5.
    # b=3: [1,0] adds chain 0's failing turn 0; no feedback pass, select's tie-break (turn 0, chain 0)
    # picks a failure -> 0.5. b=4: everything, the feedback-passing fix is selected -> 1.
    c = build_comparison(two_chain_run(tmp_path))
    assert c.grids["generations"].budgets == [1.0, 2.0, 4.0]
    assert [p.mean for p in c.success["generations"][0].points] == [0.0, 0.5, 1.0]
    assert [p.mean for p in c.oracle["generations"][0].points] == [0.0, 0.5, 1.0]
    chains = [[to_candidate(a, 1) for a in two_chain_attempts()[:2]], [to_candidate(a, 1) for a in two_chain_attempts()[2:]]]
    assert [walk_once(chains, o, 3, "generations") for o in ([0, 1], [1, 0])] == [(True, True), (False, False)]


def two_chain_attempts() -> list[Attempt]:
    return [att("2:2", "t", 0, 0, fb=False), att("2:2", "t", 0, 1, passed=True, fb=True),
            att("2:2", "t", 1, 0, fb=False), att("2:2", "t", 1, 1, fb=False)]


def random_candidates(rng: random.Random) -> list[Candidate]:
    cands, codes = [], rng.choice([1, 3, 50])  # one shared code, a few, or mostly distinct codes
    for chain in range(rng.randint(1, 7)):
        for turn in range(rng.randint(1, 4)):
            cands.append(Candidate(chain, turn, f"code{rng.randrange(codes)}", rng.random() < 0.3, rng.random() < 0.4,
                                   prompt_tokens=rng.choice([0.0, 12.5, 40.0]), completion_tokens=rng.randint(0, 30)))
    return cands


def test_vectorized_walk_equals_select_on_the_same_orders():
    """walk_group against walk_once (the specification, built on selection.select) on random
    groups: all orders for up to 4 chains (5! > 50), 50 random ones beyond."""
    rng = random.Random(7)
    budgets = {u: np.array([0.0, 1.0, 2.0, 3.0, 7.0, 30.0, 45.0, 100.0, 1e9]) for u in UNITS}
    for _ in range(80):
        cands = random_candidates(rng)
        chains = [[c for c in cands if c.chain == i] for i in sorted({c.chain for c in cands})]
        orders = chain_orders(len(chains), 50, np.random.default_rng(0))
        assert len(orders) == (math.factorial(len(chains)) if len(chains) <= 4 else 50)
        got = walk_group(cands, budgets, 50, np.random.default_rng(0))
        for unit, bs in budgets.items():
            want = np.array([[walk_once(chains, list(o), b, unit) for b in bs] for o in orders], dtype=float).mean(axis=0)
            assert got[unit][0] == pytest.approx(want[:, 0]) and got[unit][1] == pytest.approx(want[:, 1])


# -- (b) revision wins on some bins, parallel on others; the compute-optimal curve ---------------------

def easy_hard_run(path: Path, n_each: int = 30, seed: int = 3) -> Path:
    """Easy tasks: 1:4 fixes its code at turn 1; 4:1 samples pass with p=0.1. Hard tasks: revision
    never helps; every turn-0 sample passes with p=0.3. Feedback agrees with grading."""
    rng = random.Random(seed)
    attempts = []
    for i in range(2 * n_each):
        task, easy = f"{'easy' if i < n_each else 'hard'}/{i}", i < n_each
        p = 0.1 if easy else 0.3
        for chain in range(4):
            ok = rng.random() < p
            attempts.append(att("4:1", task, chain, passed=ok, fb=ok, code="good" if ok else None))
        first = not easy and rng.random() < p
        attempts.append(att("1:4", task, 0, 0, passed=first, fb=first, code="good" if first else None))
        for turn in range(1, 1 if first else 4):
            fixed = easy and turn == 1
            attempts.append(att("1:4", task, 0, turn, passed=fixed, fb=fixed, code="good" if fixed else None))
            if fixed:
                break
    return make_run(path, attempts, splits=["4:1", "1:4"])


def test_revision_wins_easy_bins_parallel_wins_hard_bins(tmp_path):
    c = build_comparison(easy_hard_run(tmp_path / "run"), folds=5)
    full = c.full_budget()
    assert full == 4.0 and c.fixed == ["4:1", "1:4"]  # fewer turns first: the tie-break order
    col = c.grids["generations"].budgets.index(full)
    easy_share = [t.startswith("easy") for t in c.per_task.task_ids]
    which = [bin_of(s, c.bins["oracle"].edges) for s in c.per_task.oracle_score]
    for row in c.bins["oracle"].rows:
        members = [e for e, b in zip(easy_share, which) if b == row.bin]
        if np.mean(members) >= 0.75:
            assert row.best["generations"][col] == "1:4", row
        elif np.mean(members) <= 0.25:
            assert row.best["generations"][col] == "4:1", row
    assert {"1:4", "4:1"} <= {row.best["generations"][col] for row in c.bins["oracle"].rows}
    for kind in ("oracle", "predicted"):
        opt = c.compute_optimal[kind]["generations"].points[-1]
        assert opt.budget == full
        for s in c.fixed:
            assert opt.mean >= point(c, "generations", s, full).mean - 0.05, (kind, s)
    assert c.compute_optimal["oracle"]["generations"].points[-1].mean > max(
        point(c, "generations", s, full).mean for s in c.fixed)


def test_cross_validation_never_chooses_on_scored_tasks(tmp_path):
    """One bin, leave-one-out: 2:1 solves t0 and t1, 1:2 solves only t2. Held out, t2 gets the
    choice of t0 and t1 (2:1) and fails; t0 and t1 see a tie (0.5 each) that goes to fewer turns.
    Choosing on the scored task would give 1.0."""
    attempts = []
    for t, twelve_wins in (("t0", False), ("t1", False), ("t2", True)):
        attempts += [att("2:1", t, ch, passed=not twelve_wins and ch == 0, fb=not twelve_wins and ch == 0) for ch in (0, 1)]
        attempts += [att("1:2", t, 0, 0, fb=False), att("1:2", t, 0, 1, passed=twelve_wins, fb=twelve_wins)]
    c = build_comparison(make_run(tmp_path / "run", attempts), bins=1, folds=3)
    opt = c.compute_optimal["oracle"]["generations"]
    assert opt.points[-1].budget == 2 and opt.points[-1].mean == pytest.approx(2 / 3)
    assert opt.choices[-1] == {"2:1": 3, "1:2": 0}
    assert c.compute_optimal["predicted"]["generations"].points[-1].mean == pytest.approx(2 / 3)


def test_difficulty_scores_and_token_curves_stop_at_their_spend(tmp_path):
    attempts = [att("4:1", "t", ch, passed=ch == 3, fb=ch in (0, 2)) for ch in range(4)]
    attempts += [att("parallel", "t", ch, passed=ch == 0) for ch in range(4)]  # feedback tests not run
    c = build_comparison(make_run(tmp_path / "one", attempts), probe=2)
    assert c.per_task.oracle_score.tolist() == [2 / 8]  # grading pass@1 of all turn-0 attempts
    assert c.per_task.predicted_score.tolist() == [1 / 2]  # 4:1 chains 0 and 1; parallel never checked
    assert any("parallel: no attempt ran the feedback tests" in n for n in c.notes)
    c = build_comparison(easy_hard_run(tmp_path / "run"))
    for unit in ("total_tokens", "completion_tokens"):
        grid = c.grids[unit]
        for cv in c.success[unit]:
            assert cv.points and all(p.budget <= grid.limits[cv.strategy] for p in cv.points)
        assert grid.budgets[-1] == pytest.approx(max(grid.limits.values()), abs=1)


# -- (c) selection uses the feedback tests only -------------------------------------------------------

def test_selection_ignores_grading_results(tmp_path):
    run = make_run(tmp_path / "run", [
        att("parallel", "t", 0, passed=False, fb=True, code="def f():\n    return 1\n"),
        att("parallel", "t", 1, passed=True, fb=False, code="def f():\n    return 2\n"),
    ], samples=2)
    c = build_comparison(run)
    assert point(c, "generations", "parallel", 2).mean == 0.0
    assert point(c, "generations", "parallel", 2, "oracle").mean == 1.0


def test_majority_vote_when_no_feedback_passes(tmp_path):
    same = "def f():\n    return 7  # a comment\n"
    run = make_run(tmp_path / "run", [
        att("parallel", "t", 0, passed=False, fb=False),
        att("parallel", "t", 1, passed=True, fb=False, code=same),
        att("parallel", "t", 2, passed=True, fb=False, code="def f():\n    return 7\n"),
    ], samples=3)
    assert point(build_comparison(run), "generations", "parallel", 3).mean == 1.0


# -- (d) the fail@k power law -------------------------------------------------------------------------

def test_power_law_recovers_a_and_b():
    ks = [1, 2, 4, 8, 16, 32, 64]
    fit = fit_power_law(ks, [math.exp(-1.7 * k ** -0.6) for k in ks])
    assert fit.a == pytest.approx(1.7) and fit.b == pytest.approx(0.6) and fit.points == 7
    assert fit.fitted[0] == (1, pytest.approx(math.exp(-1.7)))
    assert fit_power_law([1, 2], [0.0, 1.0]).a is None  # no usable point


def test_pass_at_k_rows_and_fit_in_comparison(tmp_path):
    c = build_comparison(easy_hard_run(tmp_path / "run"))
    assert [r.k for r in c.pass_at_k] == [1, 2, 4, 5]
    assert c.pass_at_k[0].mean == pytest.approx(float(np.mean(c.per_task.oracle_score)))
    assert c.power_law.a is not None and c.power_law.b is not None


# -- (e) CIs and determinism ---------------------------------------------------------------------------

def test_cis_contain_the_mean_shrink_with_tasks_and_are_deterministic(tmp_path):
    small = build_comparison(easy_hard_run(tmp_path / "small", n_each=8))
    big = build_comparison(easy_hard_run(tmp_path / "big", n_each=80))
    for c in (small, big):
        for curves in (*c.success.values(), *c.oracle.values()):
            for cv in curves:
                assert all(p.ci_low <= p.mean <= p.ci_high for p in cv.points)
    width = {id(c): point(c, "generations", "4:1", 4).ci_high - point(c, "generations", "4:1", 4).ci_low
             for c in (small, big)}
    assert width[id(big)] < width[id(small)]
    again = build_comparison(easy_hard_run(tmp_path / "small2", n_each=8))
    first, second = small.to_json(), again.to_json()
    first.pop("run_dir"), second.pop("run_dir")
    assert first == second


# -- (f) the CLI ---------------------------------------------------------------------------------------

def test_cli_writes_json_and_pngs(tmp_path, capsys):
    run = easy_hard_run(tmp_path / "run", n_each=6)
    assert main(["compare", str(run), "--seed", "1"]) == 0
    out = capsys.readouterr()
    assert "compute-optimal" in out.out and "fail@k power law" in out.out
    assert {p.name for p in run.iterdir()} >= PNGS | {JSON_NAME}
    assert all((run / p).stat().st_size > 1000 for p in PNGS)
    data = json.loads((run / JSON_NAME).read_text())
    assert data["settings"]["seed"] == 1 and data["adaptive"]["unit"] == "generations"
    assert main(["compare", str(run), "--json", "--bins", "2", "--folds", "3", "--probe", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["settings"] == {"bins": 2, "folds": 3, "probe": 1, "permutations": 50, "resamples": 1000, "seed": 0}
    assert set(printed) >= {"success", "oracle", "compute_optimal", "bins", "pass_at_k", "power_law", "adaptive",
                            "per_task", "grids", "strategies"}


def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    empty = make_run(tmp_path / "empty", [])
    only_infra = make_run(tmp_path / "infra", [att("parallel", "t", 0, infra=True)])
    for target, message in ((tmp_path / "plain", "not a run directory"), (empty, "no completed attempts to compare"),
                            (only_infra, "no completed attempts to compare"), (tmp_path / "nope", "no such run directory")):
        assert main(["compare", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("agentloop: error: ") and message in err, err
    assert main(["compare", str(empty), "--bins", "0"]) == 2
    assert "--bins must be an integer >= 1" in capsys.readouterr().err


# -- (g) infra errors ----------------------------------------------------------------------------------

def test_infra_errors_are_neither_generations_nor_failures(tmp_path):
    good = [att("parallel", "t", 0, passed=False, fb=False), att("parallel", "t", 1, passed=True, fb=True)]
    infra = [att("parallel", "t", 2, infra=True), att("parallel", "t", 3, infra=True)]
    with_infra = build_comparison(make_run(tmp_path / "a", good + infra, samples=4))
    without = build_comparison(make_run(tmp_path / "b", good, samples=4))
    for c in (with_infra, without):
        assert [p.mean for p in c.success["generations"][0].points] == [0.5, 1.0, 1.0]  # budgets 1, 2, 4
        assert c.pass_at_k[0].mean == 0.5
    s = with_infra.strategies[0]
    assert (s.attempts, s.infra_errors) == (2, 2)


# -- (h) the adaptive table ----------------------------------------------------------------------------

def test_adaptive_table_shape_and_fold_table(tmp_path):
    c = build_comparison(easy_hard_run(tmp_path / "run"), bins=3)
    table = adaptive_table(c)
    assert set(table) == {"unit", "budget", "probe", "edges", "best", "strategies", "tasks"}
    assert (table["unit"], table["budget"], table["probe"], table["strategies"]) == ("generations", 4, 2, ["4:1", "1:4"])
    assert table["edges"] == sorted(table["edges"]) and len(table["edges"]) <= 2
    assert set(table["best"]) == {str(i) for i in range(len(table["edges"]) + 1)}
    assert set(table["best"].values()) <= {"4:1", "1:4"}
    assert strategy_for(table, 0.0) == table["best"]["0"] and strategy_for(table, 1.0) == table["best"][str(len(table["edges"]))]
    assert json.loads(json.dumps(c.to_json()))["adaptive"] == json.loads(json.dumps(table))
    first_fold = c.per_task.task_ids[::5]
    sub = fold_table(c, first_fold)
    assert sub["tasks"] == len(first_fold) and set(sub) == set(table)
    # as the runner calls it, on a run dir: same defaults, same table
    assert fold_table(tmp_path / "run", first_fold, probe=2, budget=4) == sub
    assert fold_table(c, [*first_fold, "no/such/task"]) == sub  # tasks the run lacks are left out
    with pytest.raises(ConfigError, match="not every fixed split reaches 3 generations"):
        fold_table(c, first_fold, budget=3)
    with pytest.raises(ConfigError, match="probe of 2 chains, not 1"):
        fold_table(c, first_fold, probe=1)


def test_adaptive_strategy_is_a_curve_not_a_choice(tmp_path):
    attempts = [att("4:1", "t", ch, passed=ch == 3, fb=ch == 3) for ch in range(4)]
    attempts += [att("adaptive", "t", 0, 0, fb=False), att("adaptive", "t", 0, 1, passed=True, fb=True)]
    c = build_comparison(make_run(tmp_path / "run", attempts, budget=4, budget_unit="generations"))
    info = {s.name: s for s in c.strategies}
    assert info["adaptive"].adaptive and info["adaptive"].nominal == 4 and c.fixed == ["4:1"]
    assert point(c, "generations", "adaptive", 2).mean == 1.0
    assert adaptive_table(c)["strategies"] == ["4:1"]


# -- (i) token units -----------------------------------------------------------------------------------

def test_total_tokens_count_a_shared_prompt_once(tmp_path):
    # One request with n=4: 100 prompt tokens for the whole request, 10 completion tokens each, so each
    # attempt costs 25 + 10 = 35 total tokens. Chain order does not matter: only chain 3 passes.
    attempts = [att("parallel", "t", ch, passed=ch == 3, fb=ch == 3, request_id="r", prompt=100, completion=10)
                for ch in range(4)]
    run = make_run(tmp_path / "run", attempts)
    budgets = {"total_tokens": np.array([34.9, 35.0, 69.9, 70.0, 140.0]), "completion_tokens": np.array([10.0, 40.0])}
    cands = [to_candidate(a, 4) for a in attempts]
    assert cands[0].prompt_tokens == 25.0
    got = walk_group(cands, budgets, 50, np.random.default_rng(0))
    assert got["total_tokens"][0] == pytest.approx([0.0, 0.25, 0.25, 0.5, 1.0])
    assert got["completion_tokens"][0] == pytest.approx([0.25, 1.0])
    c = build_comparison(run)
    spend = c.grids["total_tokens"].limits["parallel"]
    assert spend == pytest.approx(140.0)  # not 4 × 110: the prompt is prefilled once per request


def test_chain_orders_exact_for_few_chains_random_for_many():
    assert len(chain_orders(3, 50, np.random.default_rng(0))) == 6
    many = chain_orders(10, 50, np.random.default_rng(0))
    assert many.shape == (50, 10) and all(sorted(r) == list(range(10)) for r in many.tolist())
    assert list(itertools.chain(*chain_orders(1, 50, np.random.default_rng(0)))) == [0]
