"""Attempt store (real SQLite file), pass@k, config validation."""

from __future__ import annotations

import sqlite3
from itertools import combinations

import anyio
import pytest

from agentloop.attempt import Attempt, AttemptKind
from agentloop.config import RunConfig, load_config, validate
from agentloop.errors import ConfigError, RunDirError
from agentloop.metrics import count_by_task, default_ks, pass_at_k, pass_at_ks
from agentloop.report import build_report, write_outputs
from agentloop.sandbox.types import ExecResult, Verdict
from agentloop.store import AttemptStore
from agentloop.tasks.suites import load_suite


def attempt(task: str, chain: int, verdict: Verdict | None, kind=AttemptKind.COMPLETED, turn: int = 0) -> Attempt:
    return Attempt(
        strategy="parallel", task_id=task, chain=chain, turn=turn, kind=kind,
        messages=[{"role": "user", "content": f"solve {task}"}], started_at=1.0, finished_at=2.0,
        request_id=f"r-{task}-{chain // 2}", completion="x", code="x", prompt_tokens=10,
        completion_tokens=5, verdict=verdict,
        grading=ExecResult(verdict, 0.1) if verdict else None,
    )


def test_pass_at_k_matches_brute_force():
    n, c = 7, 3
    for k in range(1, n + 1):
        subsets = list(combinations([1] * c + [0] * (n - c), k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    assert default_ks(12) == [1, 2, 5, 10, 12] and default_ks(10) == [1, 2, 5, 10]


def test_pass_at_ks_skips_infra_errors_and_small_n():
    attempts = [attempt("a", i, Verdict.PASSED if i < 2 else Verdict.FAILED) for i in range(4)]
    attempts += [attempt("b", 0, None, AttemptKind.INFRA_ERROR), attempt("b", 1, Verdict.FAILED)]
    counts = count_by_task(attempts)
    assert (counts["a"].n, counts["a"].c, counts["b"].n, counts["b"].infra_errors) == (4, 2, 1, 1)
    rows = {r.k: r for r in pass_at_ks(counts)}
    assert rows[1].tasks == 2 and rows[1].mean == pytest.approx((0.5 + 0.0) / 2)
    assert rows[2].tasks == 1  # only task a has n >= 2


def test_store_roundtrip_dedup_and_resume_slots(tmp_path):
    store = AttemptStore.create(tmp_path / "run")
    store.set_meta("config", {"samples": 3, "suite": "smoke"})
    tasks = load_suite("smoke")[1][:2]
    store.put_tasks(tasks, {t.id: 2.0 for t in tasks})

    async def write():
        async with store.writer() as w:
            for a in [attempt("smoke/0", 0, Verdict.PASSED), attempt("smoke/0", 1, Verdict.FAILED),
                      attempt("smoke/0", 1, Verdict.PASSED),  # duplicate slot: ignored
                      attempt("smoke/1", 0, None, AttemptKind.INFRA_ERROR)]:
                await w.add(a)

    anyio.run(write)
    assert store.duplicates_ignored == 1
    assert store.completed_slots("parallel") == {("smoke/0", 0, 0), ("smoke/0", 1, 0)}
    got = list(store.iter_attempts(with_messages=True))
    assert [a.kind for a in got] == [AttemptKind.COMPLETED, AttemptKind.COMPLETED, AttemptKind.INFRA_ERROR]
    assert got[0].messages == [{"role": "user", "content": "solve smoke/0"}]
    assert got[0].grading == ExecResult(Verdict.PASSED, 0.1)
    tails = store.chain_tails("parallel")
    assert sorted(tails) == [("smoke/0", 0), ("smoke/0", 1)]
    last, tokens = tails[("smoke/0", 0)]
    assert (last.verdict, last.messages) == (Verdict.PASSED, [{"role": "user", "content": "solve smoke/0"}])
    store.close()
    report = build_report(tmp_path / "run")
    assert (report.attempts, report.infra_errors, report.missing) == (2, 1, 4)
    assert report.prompt_tokens == 10 + 10  # requests r-smoke/0-0 and r-smoke/1-0, once each
    write_outputs(tmp_path / "run")
    assert (tmp_path / "run" / "pass_at_k.png").stat().st_size > 1000
    with pytest.raises(RunDirError, match="already holds a run"):
        AttemptStore.create(tmp_path / "run")


def test_writer_commits_queue_on_cancel(tmp_path):
    store = AttemptStore.create(tmp_path / "run")

    async def write_then_cancel():
        with anyio.CancelScope() as scope:
            async with store.writer(flush_s=10) as w:
                for i in range(50):
                    await w.add(attempt("t", i, Verdict.FAILED))
                scope.cancel()
                await anyio.sleep(1)

    anyio.run(write_then_cancel)
    assert len(store.completed_slots("parallel")) == 50


def test_bad_run_dirs(tmp_path):
    with pytest.raises(RunDirError, match="no such run directory"):
        AttemptStore.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="not a run directory"):
        AttemptStore.open(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "attempts.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(RunDirError, match="unreadable attempt store"):
        AttemptStore.open(tmp_path / "junk")
    sqlite3.connect(tmp_path / "half.sqlite").close()
    (tmp_path / "half").mkdir()
    (tmp_path / "half.sqlite").rename(tmp_path / "half" / "attempts.sqlite")
    with pytest.raises(RunDirError, match="schema version"):
        AttemptStore.open(tmp_path / "half")


def test_config_errors(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('samples = 4\n[model]\nbase_url = "http://x/v1"\nconcurency = 3\n')
    with pytest.raises(ConfigError, match=r"c.toml: unknown key 'model.concurency'"):
        load_config(path)
    path.write_text('samples = "many"\n')
    with pytest.raises(ConfigError, match=r"'samples' = 'many' has the wrong type \(expected int\)"):
        load_config(path)
    path.write_text('samples = 4\n[sampling]\ntemperature = 0\nstop = ["\\n\\n"]\n')
    cfg = load_config(path)
    assert cfg.samples == 4 and cfg.sampling.temperature == 0.0 and cfg.sampling.stop == ["\n\n"]
    path.write_text("samples = [")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="'samples' must be an integer >= 1"):
        validate(RunConfig(samples=0))


def test_writer_back_pressure_loses_nothing(tmp_path):
    store = AttemptStore.create(tmp_path / "run")

    async def write_many():
        async with store.writer(flush_s=0.01, max_pending=7) as w:
            async with anyio.create_task_group() as tg:
                for i in range(300):
                    tg.start_soon(w.add, attempt("t", i, Verdict.PASSED))

    anyio.run(write_many)
    assert len(store.completed_slots("parallel")) == 300
