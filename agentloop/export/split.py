"""Train/validation split by task id: every record of a task lands on the same side."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def val_tasks(task_ids: Iterable[str], fraction: float, seed: int) -> frozenset[str]:
    """round(fraction × tasks) tasks (at least one, and never all) chosen by a seeded hash of the
    id: the same task ids, fraction and seed always give the same split."""
    ids = sorted(set(task_ids))
    if fraction <= 0 or len(ids) < 2:
        return frozenset()
    n = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    order = sorted(ids, key=lambda t: hashlib.blake2b(f"{seed}\0{t}".encode(), digest_size=8).digest())
    return frozenset(order[:n])
