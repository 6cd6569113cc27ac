"""The budget walk: what one strategy achieves on one task with a budget b, from its logged attempts.

Draw an order of the task's chains (resampling chains without replacement), then include attempts
chain by chain, turn by turn, while the spend stays <= b; a chain cut part-way keeps its included
prefix, and the walk stops at the first attempt that does not fit. Success is the selected
attempt (selection.select: feedback tests, then majority vote) passing the grading tests; oracle
coverage is any included attempt passing them. Averaged over chain orders, one big run yields the
whole success-vs-budget curve, not only first-n prefixes.

Agent episodes (`episodes=True`): a chain is an episode and its turns are steps, each step's
attempt being the workspace's state after it. An episode's candidate at a cut is its LAST included
step (its current state); its earlier steps are superseded, not separate answers. Selection and
oracle coverage run over the episodes' current states only. (Revision turns each stay candidates.)

`walk_group` is the vectorized version (all orders and budgets at once); `walk_once` is the
readable specification built on `select`, which the tests hold the fast one to.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from agentloop.selection import Candidate, select

UNITS = ("generations", "total_tokens", "completion_tokens")
_EPS = 1e-9
_MAX_CELLS = 2_000_000  # orders × attempts × distinct codes handled per vote chunk


def cost(c: Candidate, unit: str) -> float:
    """What one attempt spends: a generation, its tokens (prompt share + completion), or completion tokens."""
    if unit == "generations":
        return 1.0
    if unit == "total_tokens":
        return c.prompt_tokens + c.completion_tokens
    if unit == "completion_tokens":
        return float(c.completion_tokens)
    raise ValueError(f"unknown budget unit {unit!r}; expected one of {UNITS}")


def fits(spent: float, budget: float) -> bool:
    return spent <= budget + _EPS * max(1.0, budget)


def walk_once(chains: Sequence[Sequence[Candidate]], order: Sequence[int], budget: float,
              unit: str, episodes: bool = False) -> tuple[bool, bool]:
    """(success, oracle) of one walk: chains taken in `order`, each in turn order. With `episodes`,
    only each chain's last included attempt (its current state) is a candidate."""
    included: list[Candidate] = []
    spent = 0.0
    for attempt in (a for i in order for a in chains[i]):
        spent += cost(attempt, unit)
        if not fits(spent, budget):
            break
        included.append(attempt)
    if episodes:
        current: dict[int, Candidate] = {}
        for a in included:
            current[a.chain] = a  # a later step of the same episode supersedes it
        included = list(current.values())
    selected = select(included)
    return bool(selected and selected.passed), any(a.passed for a in included)


@dataclass(frozen=True)
class _Arrays:
    """One (strategy, task)'s attempts as arrays, indexed in (chain, turn) order."""

    chain_of: np.ndarray  # index of the attempt's chain (0..C-1)
    within: np.ndarray  # position of the attempt inside its chain
    lengths: np.ndarray  # attempts per chain
    key: np.ndarray  # code key as an int; keys below dup_keys occur more than once
    dup_keys: int
    rank: np.ndarray  # select's tie-break order: (turn, chain)
    fb: np.ndarray  # passes the feedback tests
    passed: np.ndarray  # passes the grading tests
    passed_by_rank: np.ndarray
    last: np.ndarray  # the last attempt of its chain
    costs: dict[str, np.ndarray]

    @classmethod
    def of(cls, cands: Sequence[Candidate]) -> _Arrays:
        chains = sorted({c.chain for c in cands})
        chain_of = np.searchsorted(chains, [c.chain for c in cands])
        lengths = np.bincount(chain_of, minlength=len(chains))
        within = np.arange(len(cands)) - (np.cumsum(lengths) - lengths)[chain_of]
        key, dup_keys = _key_ids([c.code_key for c in cands])
        rank = np.empty(len(cands), dtype=np.int32)
        rank[np.lexsort(([c.chain for c in cands], [c.turn for c in cands]))] = np.arange(len(cands))
        passed = np.array([c.passed for c in cands])
        passed_by_rank = np.empty_like(passed)
        passed_by_rank[rank] = passed
        costs = {u: np.array([cost(c, u) for c in cands], dtype=float) for u in UNITS}
        return cls(chain_of, within, lengths, key, dup_keys, rank, np.array([c.feedback_passed for c in cands]),
                   passed, passed_by_rank, within == lengths[chain_of] - 1, costs)


def _key_ids(keys: list[str]) -> tuple[np.ndarray, int]:
    """Ints for code keys: the D keys that occur more than once get 0..D-1 (only they can win a
    vote with 2 or more), the others D and up."""
    counts = Counter(keys)
    ids = {k: i for i, k in enumerate(sorted(counts, key=lambda k: counts[k] < 2))}
    return np.array([ids[k] for k in keys], dtype=np.int32), sum(n > 1 for n in counts.values())


def chain_orders(n_chains: int, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """Orders of the chains, one per row: all of them when there are at most `permutations`
    (the expectation is then exact), else `permutations` random ones."""
    if n_chains <= 8 and math.factorial(n_chains) <= permutations:
        return np.array(list(itertools.permutations(range(n_chains))), dtype=np.int64)
    return np.argsort(rng.random((permutations, n_chains)), axis=1)


def _attempt_orders(g: _Arrays, perms: np.ndarray) -> np.ndarray:
    """Row p: attempt indices in walk order when the chains come in order perms[p]."""
    lens = g.lengths[perms]
    start = np.empty_like(perms)
    np.put_along_axis(start, perms, np.cumsum(lens, axis=1) - lens, axis=1)
    pos = start[:, g.chain_of] + g.within
    orders = np.empty_like(pos)
    np.put_along_axis(orders, pos, np.broadcast_to(np.arange(pos.shape[1]), pos.shape), axis=1)
    return orders


def _vote(key: np.ndarray, rank: np.ndarray, kept: np.ndarray, now: np.ndarray | None, dup_keys: int) -> np.ndarray:
    """Rank of select's pick in every prefix, among the attempts `kept` up to that prefix plus the
    prefix's own last attempt where `now` (an episode's current step, candidate only while it is
    the last one included; None: no such attempt): the code with most votes, ties to the earliest
    (turn, chain); the pick is that code's earliest attempt. While no code has 2 votes every code
    ties, so the pick is the earliest candidate: only the codes that occur more than once need a
    vote count (one column each)."""
    n = key.shape[1]
    big = np.int32(n)
    earliest = np.minimum.accumulate(np.where(kept, rank, n), axis=1)
    if now is not None:
        earliest = np.minimum(earliest, np.where(now, rank, n))
    if dup_keys == 0:
        return earliest
    same = key[..., None] == np.arange(dup_keys, dtype=np.int32)
    hit = same & kept[..., None]
    votes = np.cumsum(hit, axis=1, dtype=np.int32)
    first = np.minimum.accumulate(np.where(hit, rank[..., None], big), axis=1)
    if now is not None:
        cur = same & now[..., None]
        votes += cur
        first = np.minimum(first, np.where(cur, rank[..., None], big))
    win = np.argmax(votes * np.int32(n + 1) - first, axis=2)[..., None]
    top = np.take_along_axis(votes, win, axis=2)[..., 0]
    return np.where(top >= 2, np.take_along_axis(first, win, axis=2)[..., 0], earliest)


def _current(passing: np.ndarray, kept: np.ndarray, now: np.ndarray | None) -> np.ndarray:
    """Whether some candidate of each prefix (kept so far, or the prefix's own current step) is set."""
    seen = np.logical_or.accumulate(passing & kept, axis=1)
    return seen if now is None else seen | (passing & now)


def _prefix_outcomes(g: _Arrays, orders: np.ndarray, episodes: bool) -> tuple[np.ndarray, np.ndarray]:
    """(success, oracle) after each prefix of each walk order, as 0/1 floats. Revision: every
    included attempt stays a candidate. Episodes: chains come whole and in step order, so in a
    prefix the candidates are the last steps of the episodes finished before it, plus its own
    last attempt (the current step of the episode being walked)."""
    kept_all = g.last[orders] if episodes else np.ones(orders.shape, dtype=bool)
    now_all = ~kept_all if episodes else None
    chunk = max(1, _MAX_CELLS // max(1, orders.shape[1] * g.dup_keys))
    parts = []
    for lo in range(0, len(orders), chunk):
        o = orders[lo : lo + chunk]
        kept = kept_all[lo : lo + chunk]
        now = None if now_all is None else now_all[lo : lo + chunk]
        key, rank, fb = g.key[o], g.rank[o], g.fb[o]
        pick = np.where(_current(fb, kept, now), _vote(key, rank, fb & kept, None if now is None else fb & now,
                                                       g.dup_keys),
                        _vote(key, rank, kept, now, g.dup_keys))
        parts.append(g.passed_by_rank[pick])
    success = np.concatenate(parts).astype(float)
    oracle = _current(g.passed[orders], kept_all, now_all).astype(float)
    return success, oracle


def _at_budgets(cum: np.ndarray, success: np.ndarray, oracle: np.ndarray,
                budgets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tol = _EPS * np.maximum(1.0, budgets)
    included = (cum[:, None, :] <= (budgets + tol)[None, :, None]).sum(axis=2)  # cum is nondecreasing
    last = np.maximum(included - 1, 0)
    some = included > 0
    s = np.take_along_axis(success, last, axis=1) * some
    o = np.take_along_axis(oracle, last, axis=1) * some
    return s.mean(axis=0), o.mean(axis=0)


def walk_group(
    cands: Sequence[Candidate], budgets: Mapping[str, np.ndarray], permutations: int, rng: np.random.Generator,
    episodes: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Expected (success, oracle) at each budget of each unit, over chain orders. `cands` are one
    strategy's completed attempts on one task, sorted by (chain, turn); `episodes`: the chains are
    agent episodes (only each one's last included step is a candidate)."""
    if not cands:
        return {u: (np.zeros(len(b)), np.zeros(len(b))) for u, b in budgets.items()}
    g = _Arrays.of(cands)
    orders = _attempt_orders(g, chain_orders(len(g.lengths), permutations, rng))
    success, oracle = _prefix_outcomes(g, orders, episodes)
    return {u: _at_budgets(np.cumsum(g.costs[u][orders], axis=1), success, oracle, np.asarray(b, dtype=float))
            for u, b in budgets.items()}
