"""Majority vote over canonical forms (the selection rule that needs no scorer)."""

from __future__ import annotations

from agentloop.math.canonical import Canon, canonicals, close_enough


def group_answers(answers: list[str]) -> list[tuple[Canon, int]]:
    """Groups of equal answers in first-seen order; empty answers (nothing extracted) are dropped.

    Grouping is by canonical text, then numeric groups within tolerance merge; a merged group is
    named by its most common member (``11/36`` rather than the decimal some samples wrote).
    """
    groups: dict[str, list] = {}
    for canon in canonicals(answers):
        if canon.text:
            groups.setdefault(canon.text, [canon, 0])[1] += 1
    merged: list[list] = []  # [name, total, count of the name's own text]
    for canon, count in groups.values():
        for g in merged:
            if canon.value is not None and close_enough(g[0], canon):
                g[1] += count
                if count > g[2]:
                    g[0], g[2] = canon, count
                break
        else:
            merged.append([canon, count, count])
    return [(c, n) for c, n, _ in merged]


def majority_vote(answers: list[str]) -> tuple[str, int]:
    """The most common canonical answer and its count; ties go to the first seen; ("", 0) if none."""
    best: tuple[str, int] = ("", 0)
    for canon, count in group_answers(answers):
        if count > best[1]:
            best = (canon.text, count)
    return best
