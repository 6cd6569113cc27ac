"""Votes over canonical forms: majority (needs no scorer), weighted and best-of-N (need scores,
see `agentloop.math.scorers`). Equal answers (``0.5`` and ``\\frac12``) always share a group."""

from __future__ import annotations

from agentloop.math.canonical import Canon, canonicals, close_enough


def group_answers(answers: list[str]) -> list[tuple[Canon, int]]:
    """Groups of equal answers in first-seen order; empty answers (nothing extracted) are dropped.

    Grouping is by canonical text (labels dropped: ``x = 5`` votes with ``5``), then groups whose
    numbers agree under `agentloop.math.canonical.close` (the rule `answers_equal` uses: integers
    exactly, decimals to the default precision, ``28\\%`` with ``0.28``) merge; a merged group is
    named by its most common member (``11/36`` rather than the decimal some samples wrote).
    """
    return _group(canonicals(answers))[0]


def _group(canons: list[Canon]) -> tuple[list[tuple[Canon, int]], dict[str, int]]:
    """`group_answers` on canonical forms, plus the group index of each canonical text."""
    groups: dict[str, list] = {}
    for canon in canons:
        if canon.text:
            groups.setdefault(canon.text, [canon, 0])[1] += 1
    merged: list[list] = []  # [name, total, count of the name's own text]
    where: dict[str, int] = {}
    for text, (canon, count) in groups.items():
        for i, g in enumerate(merged):
            if (canon.nums or canon.percent) and close_enough(g[0], canon):
                g[1] += count
                if count > g[2]:
                    g[0], g[2] = canon, count
                where[text] = i
                break
        else:
            where[text] = len(merged)
            merged.append([canon, count, count])
    return [(c, n) for c, n, _ in merged], where


def majority_vote(answers: list[str]) -> tuple[str, int]:
    """The most common canonical answer and its count; ties go to the first seen; ("", 0) if none."""
    best: tuple[str, int] = ("", 0)
    for canon, count in group_answers(answers):
        if count > best[1]:
            best = (canon.text, count)
    return best


def _scored(answers: list[str], scores: list[float | None]) -> tuple[list[tuple[Canon, int]], list[tuple[int, float]]]:
    """The groups of `group_answers` and, per extracted answer in order, (its group, its score);
    None scores count as 0."""
    if len(answers) != len(scores):
        raise ValueError(f"{len(answers)} answers but {len(scores)} scores")
    canons = canonicals(answers)
    groups, where = _group(canons)
    members = [(where[c.text], 0.0 if s is None else float(s)) for c, s in zip(canons, scores, strict=True) if c.text]
    return groups, members


def weighted_vote(answers: list[str], scores: list[float | None]) -> tuple[str, float]:
    """The canonical answer with the largest sum of scores (equal answers grouped as in
    `majority_vote`) and that sum; ties go to the first seen; ("", 0.0) if none was extracted."""
    groups, members = _scored(answers, scores)
    totals = [0.0] * len(groups)
    for group, score in members:
        totals[group] += score
    best: tuple[str, float] = ("", 0.0)
    for (canon, _), total in zip(groups, totals, strict=True):
        if not best[0] or total > best[1]:
            best = (canon.text, total)
    return best


def best_of_n(answers: list[str], scores: list[float | None]) -> tuple[str, float]:
    """The canonical answer of the highest-scored sample (named as its vote group) and that score;
    ties go to the first seen; ("", 0.0) if no answer was extracted."""
    groups, members = _scored(answers, scores)
    best: tuple[int, float] | None = None
    for group, score in members:
        if best is None or score > best[1]:
            best = (group, score)
    return (groups[best[0]][0].text, best[1]) if best is not None else ("", 0.0)
