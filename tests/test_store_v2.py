"""Attempt store schema version 2 (real SQLite files): prompts stored as deltas against their longest
stored prefix, version 1 run dirs read as they are and are upgraded in place by a resumed run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentloop.attempt import Attempt, AttemptKind
from agentloop.errors import RunDirError
from agentloop.sandbox.types import ExecResult, Verdict
from agentloop.store import _COLUMNS, DB_NAME, SCHEMA_VERSION, AttemptStore, _messages_key, _Prompt, _row

Messages = list[dict[str, Any]]

# The schema agentloop wrote before version 2, kept verbatim: run dirs made with it must still read.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
  id TEXT PRIMARY KEY, position INTEGER NOT NULL, data TEXT NOT NULL, time_limit_s REAL);
CREATE TABLE IF NOT EXISTS messages (hash TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (
  id INTEGER PRIMARY KEY, strategy TEXT NOT NULL, task_id TEXT NOT NULL, chain INTEGER NOT NULL,
  turn INTEGER NOT NULL, kind TEXT NOT NULL, messages_hash TEXT NOT NULL, request_id TEXT,
  completion TEXT, code TEXT, prompt_tokens INTEGER, cached_prompt_tokens INTEGER,
  completion_tokens INTEGER, latency_s REAL, verdict TEXT, grading TEXT, feedback TEXT,
  feedback_verdict TEXT, error TEXT, started_at REAL NOT NULL, finished_at REAL NOT NULL,
  extra TEXT NOT NULL DEFAULT '{}');
CREATE UNIQUE INDEX IF NOT EXISTS one_completed_per_slot
  ON attempts(strategy, task_id, chain, turn) WHERE kind = 'completed';
CREATE INDEX IF NOT EXISTS attempts_by_task ON attempts(task_id);
"""


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def episode(task: str, steps: int, size: int = 1000) -> list[Messages]:
    """The prompt of each step of a tool-calling episode: the previous prompt + the assistant's
    tool call (content None) + the tool's observation, about `size` characters per step."""
    prompt: Messages = [{"role": "system", "content": "You act in a sandbox. Submit when done."},
                        {"role": "user", "content": f"Solve {task}. " + "d" * (size - 40)}]
    prompts = [prompt]
    for s in range(steps - 1):
        call = {"id": f"call_{task}_{s}", "type": "function",
                "function": {"name": "bash", "arguments": dumps({"command": f"python -m pytest -q  # {s}"})}}
        observation = f"exit code 1 (step {s}, é ✓ 😀)\n" + "F" * (size // 2 - 150)
        prompt = [*prompt, {"role": "assistant", "content": None, "tool_calls": [call]},
                  {"role": "tool", "tool_call_id": call["id"], "content": observation},
                  ]
        prompts.append(prompt)
    return prompts


def attempt(messages: Messages, task: str = "t", chain: int = 0, turn: int = 0, strategy: str = "agent",
            request_id: str | None = None) -> Attempt:
    return Attempt(strategy=strategy, task_id=task, chain=chain, turn=turn, kind=AttemptKind.COMPLETED,
                   messages=messages, started_at=1.0, finished_at=2.0, request_id=request_id, completion="c",
                   code="c", prompt_tokens=10, completion_tokens=5, verdict=Verdict.FAILED,
                   grading=ExecResult(Verdict.FAILED, 0.1))


def stored_json_bytes(run_dir: Path) -> int:
    with sqlite3.connect(run_dir / DB_NAME) as db:
        return int(db.execute("SELECT SUM(LENGTH(CAST(json AS BLOB))) FROM messages").fetchone()[0])


def make_v1(run_dir: Path, attempts: list[Attempt]) -> None:
    """A run dir as agentloop wrote it before version 2: full lists, no parent column."""
    run_dir.mkdir(parents=True)
    db = sqlite3.connect(run_dir / DB_NAME, isolation_level=None)
    db.executescript(V1_SCHEMA)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    for a in attempts:
        key, text = _messages_key(a.messages)
        db.execute("INSERT OR IGNORE INTO messages VALUES (?, ?)", (key, text))
        db.execute(f"INSERT INTO attempts ({_COLUMNS}) VALUES ({', '.join('?' * 21)})", _row(a, key))
    db.close()


def messages_by_slot(store: AttemptStore) -> dict[tuple[str, str, int, int], Messages]:
    return {(a.strategy, a.task_id, a.chain, a.turn): a.messages for a in store.iter_attempts(with_messages=True)}


def assert_reads_back(store: AttemptStore, attempts: list[Attempt]) -> None:
    """Every report-facing read gives each attempt the exact list it was written with."""
    expected = {(a.strategy, a.task_id, a.chain, a.turn): a.messages for a in attempts}
    assert messages_by_slot(store) == expected
    hashes = dict(sqlite3.connect(store.path).execute(
        "SELECT strategy || '/' || task_id || '/' || chain || '/' || turn, messages_hash FROM attempts"))
    for (strategy, task, chain, turn), messages in expected.items():
        key = hashes[f"{strategy}/{task}/{chain}/{turn}"]
        assert key == _messages_key(messages)[0]  # the hash of the full list, as in version 1
        assert store.messages(key) == messages
    for strategy in {a.strategy for a in attempts}:
        for (task, chain), (last, _) in store.chain_tails(strategy).items():
            turn = max(t for s, k, c, t in expected if (s, k, c) == (strategy, task, chain))
            assert last.turn == turn and last.messages == expected[(strategy, task, chain, turn)]


def test_prefix_hashes_equal_the_hash_of_each_prefix() -> None:
    messages = episode("p", 4)[-1] + [{"role": "user", "content": ["nested", {"a": 1.5, "b": None}]}]
    keys = _Prompt(messages).prefix_keys()
    assert keys == [_messages_key(messages[:i + 1])[0] for i in range(len(messages))]
    assert _Prompt(messages).key == _messages_key(messages)[0] and _Prompt([]).key == _messages_key([])[0]
    assert _Prompt([]).prefix_keys() == []


def test_steps_batched_together_and_a_chain_that_does_not_extend_its_last_turn(tmp_path: Path) -> None:
    steps = episode("b", 20)
    final = len(dumps(steps[-1]).encode())
    store = AttemptStore.create(tmp_path / "run")
    agent = [attempt(p, "b", turn=s) for s, p in enumerate(steps)]
    store.write_batch(agent[:10])  # several steps of one episode in one batch
    store.write_batch(agent[10:])
    # A chain whose turn 2 restarts from turn 0 (not an extension of turn 1), and whose turn 3
    # repeats a list stored by another chain.
    base = [{"role": "user", "content": "write h"}]
    turn1 = [*base, {"role": "assistant", "content": "a"}, {"role": "user", "content": "no"}]
    turn2 = [*base, {"role": "user", "content": "again, from scratch"}]
    chain = [attempt(base, "h", strategy="revision"), attempt(turn1, "h", turn=1, strategy="revision"),
             attempt(turn2, "h", turn=2, strategy="revision"), attempt(steps[5], "h", turn=3, strategy="revision")]
    for a in chain:
        store.write_batch([a])
    assert_reads_back(store, agent + chain)
    parents = dict(sqlite3.connect(store.path).execute("SELECT hash, parent FROM messages"))
    assert [parents[_messages_key(p)[0]] for p in steps] == [None] + [_messages_key(p)[0] for p in steps[:-1]]
    assert parents[_messages_key(turn2)[0]] == _messages_key(base)[0] and len(parents) == 20 + 3
    with sqlite3.connect(store.path) as db:
        stored = db.execute("SELECT SUM(LENGTH(CAST(json AS BLOB))) FROM messages WHERE hash IN "
                            f"({', '.join('?' * 20)})", [_messages_key(p)[0] for p in steps]).fetchone()[0]
    assert stored < 1.1 * final


def test_a_50_step_episode_stores_each_message_once(tmp_path: Path) -> None:
    prompts = episode("e", 50)
    final = len(dumps(prompts[-1]).encode())
    store = AttemptStore.create(tmp_path / "v2")
    for step, prompt in enumerate(prompts):  # one batch per step, as a slow episode is written
        store.write_batch([attempt(prompt, turn=step)])
    v2 = stored_json_bytes(tmp_path / "v2")
    make_v1(tmp_path / "v1", [attempt(p, turn=s) for s, p in enumerate(prompts)])
    v1 = stored_json_bytes(tmp_path / "v1")
    assert v2 < 3 * final
    assert v1 > 20 * final  # what version 1 stored: one growing copy per step
    assert_reads_back(store, [attempt(p, turn=s) for s, p in enumerate(prompts)])
    rows = sqlite3.connect(store.path).execute("SELECT hash, parent FROM messages").fetchall()
    assert sum(parent is None for _, parent in rows) == 1 and len(rows) == 50


def test_round_trip_of_siblings_chains_and_unrelated_prompts(tmp_path: Path) -> None:
    store = AttemptStore.create(tmp_path / "run")
    shared = [{"role": "user", "content": "write f"}]
    siblings = [attempt(shared, "p", chain=i, strategy="parallel", request_id="r0") for i in range(4)]
    # Two revision chains: equal turn-0 prompts (separate objects), turns that diverge after it.
    chains = []
    for chain in range(2):
        prompt = [{"role": "system", "content": "sys"}, {"role": "user", "content": "write g"}]
        for turn in range(4):
            chains.append(attempt(prompt, "r", chain=chain, turn=turn, strategy="revision"))
            prompt = [*prompt, {"role": "assistant", "content": f"try {chain}.{turn}"},
                      {"role": "user", "content": f"failed: {chain}.{turn} ✗"}]
    steps = episode("a", 6)
    agent = [attempt(p, "a", turn=s) for s, p in enumerate(steps)]
    other = [attempt([{"role": "user", "content": None, "name": "odd"}], "o", strategy="other"),
             attempt([], "g", strategy="grade")]  # a graded run stores no prompt
    # A shorter list written after its extension, in a later batch (its own prefix is not stored).
    late = attempt(steps[3][:-1], "a", chain=1)
    store.write_batch(siblings + chains[:3] + chains[4:6])
    store.write_batch(chains[3:4] + chains[6:] + list(reversed(agent[:4])))  # an extension before its prefix
    store.write_batch(agent[4:] + other)
    store.write_batch([late])
    everything = siblings + chains + agent + other + [late]
    assert_reads_back(store, everything)
    parents = dict(sqlite3.connect(store.path).execute("SELECT hash, parent FROM messages"))
    key = {id(a): _messages_key(a.messages)[0] for a in everything}
    assert parents[key[id(agent[3])]] == key[id(agent[2])]  # found in the same batch
    assert key[id(chains[4])] == key[id(chains[0])]  # equal turn-0 prompts: one row
    assert parents[key[id(chains[5])]] == key[id(chains[0])] and parents[key[id(chains[1])]] == key[id(chains[0])]
    assert parents[key[id(late)]] == key[id(agent[2])]
    assert parents[key[id(siblings[0])]] is None and len(parents) == 1 + 7 + 6 + 2 + 1
    # Each read returns lists of its own: changing one changes no other.
    first, second = store.iter_attempts(with_messages=True), store.iter_attempts(with_messages=True)
    a, b = next(first), next(second)
    a.messages[0]["content"] = "changed"
    assert b.messages == shared and store.messages(key[id(siblings[0])]) == shared
    store.close()
    assert_reads_back(AttemptStore.open(tmp_path / "run"), everything)


def test_episodes_that_branch_read_back(tmp_path: Path) -> None:
    """Episode 1 repeats episode 0's first steps, then diverges: its later steps extend a list that
    a reader has already moved past (rebuilt from the store, not from the reader's cache)."""
    steps = episode("x", 8)
    other = [*steps[4], {"role": "assistant", "content": "another way"}, {"role": "user", "content": "ok"}]
    branch = [*steps[:5], other, [*other, {"role": "assistant", "content": "done"}, {"role": "user", "content": "."}]]
    store = AttemptStore.create(tmp_path / "run")
    first = [attempt(p, "x", chain=0, turn=s) for s, p in enumerate(steps)]
    second = [attempt(p, "x", chain=1, turn=s) for s, p in enumerate(branch)]
    store.write_batch(first)
    store.write_batch(second[:3])
    store.write_batch(second[3:])
    assert_reads_back(store, first + second)
    parents = dict(sqlite3.connect(store.path).execute("SELECT hash, parent FROM messages"))
    assert parents[_messages_key(other)[0]] == _messages_key(steps[4])[0] and len(parents) == 8 + 2


def test_version_1_run_dir_reads_and_a_resumed_run_upgrades_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    steps = episode("a", 5)
    old = [attempt(p, "a", turn=s) for s, p in enumerate(steps[:3])]
    old += [attempt([{"role": "user", "content": "write f"}], "p", chain=i, strategy="parallel") for i in range(2)]
    make_v1(run, old)
    reader = AttemptStore.open(run)
    assert_reads_back(reader, old)
    with sqlite3.connect(run / DB_NAME) as db:  # reading wrote nothing
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
        assert "parent" not in {r[1] for r in db.execute("PRAGMA table_info(messages)")}

    resumed = AttemptStore.open(run)
    new = [attempt(p, "a", turn=s) for s, p in enumerate(steps) if s >= 3]

    async def resume() -> None:
        async with resumed.writer() as w:
            for a in new:
                await w.add(a)

    anyio.run(resume)
    with sqlite3.connect(run / DB_NAME) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        parents = dict(db.execute("SELECT hash, parent FROM messages"))
    assert parents[_messages_key(steps[3])[0]] == _messages_key(steps[2])[0]  # a delta on a version 1 row
    assert parents[_messages_key(steps[2])[0]] is None
    assert_reads_back(resumed, old + new)
    assert_reads_back(reader, old + new)  # opened as version 1 before the upgrade: reads the deltas too
    resumed.close()
    assert_reads_back(AttemptStore.open(run), old + new)


def test_newer_version_and_missing_parent_are_one_line_errors(tmp_path: Path) -> None:
    steps = episode("a", 3)
    store = AttemptStore.create(tmp_path / "run")
    store.write_batch([attempt(p, turn=s) for s, p in enumerate(steps)])
    store.close()
    db = sqlite3.connect(tmp_path / "run" / DB_NAME, isolation_level=None)
    db.execute("DELETE FROM messages WHERE hash = ?", (_messages_key(steps[1])[0],))
    store = AttemptStore.open(tmp_path / "run")
    path = tmp_path / "run" / DB_NAME
    expected = (f"{path}: messages {_messages_key(steps[1])[0]}, the start of messages {_messages_key(steps[2])[0]}, "
                "are missing (corrupt attempt store)")
    with pytest.raises(RunDirError) as e:
        store.messages(_messages_key(steps[2])[0])
    assert str(e.value) == expected
    with pytest.raises(RunDirError) as e:
        list(store.iter_attempts(with_messages=True))
    assert str(e.value) == expected
    keys = [_messages_key(p)[0] for p in steps]
    db.execute("INSERT INTO messages VALUES (?, '[]', ?)", (keys[1], keys[2]))  # 2 → 1 → 2
    with pytest.raises(RunDirError) as e:
        store.messages(_messages_key(steps[2])[0])
    assert str(e.value) == f"{path}: messages {_messages_key(steps[2])[0]} extend themselves (corrupt attempt store)"
    store.close()
    db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    db.close()
    with pytest.raises(RunDirError) as e:
        AttemptStore.open(tmp_path / "run")
    assert str(e.value) == f"{path}: schema version 3, newer than this agentloop reads (up to 2): upgrade agentloop"


CHILD = """
import sys
from pathlib import Path
import anyio
sys.path.insert(0, sys.argv[2])
from test_store_v2 import attempt, episode
from agentloop.store import AttemptStore

store = AttemptStore.create(Path(sys.argv[1]))

async def main():
    async with store.writer(flush_s=0.001) as w:
        for round in range(10**6):  # until killed
            episodes = {f"r{round}t{i}": episode(f"r{round}t{i}", 40, size=300) for i in range(10)}
            for step in range(40):
                for task, prompts in episodes.items():
                    await w.add(attempt(prompts[step], task, turn=step))
                    await anyio.sleep(0)

anyio.run(main)
"""


def test_kill_between_batches_leaves_every_stored_prompt_readable(tmp_path: Path) -> None:
    run = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(run), str(Path(__file__).parent)],
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    written = 0
    while written < 600 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            with sqlite3.connect(run / DB_NAME, timeout=5) as db:
                written = db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
        except sqlite3.OperationalError:
            pass  # not created yet
    assert child.poll() is None, child.communicate()[1].decode()[-2000:]
    os.kill(child.pid, signal.SIGKILL)
    child.communicate()
    assert written >= 600
    with sqlite3.connect(run / DB_NAME) as db:
        orphans = db.execute("SELECT COUNT(*) FROM messages m LEFT JOIN messages p ON p.hash = m.parent "
                             "WHERE m.parent IS NOT NULL AND p.hash IS NULL").fetchone()[0]
    assert orphans == 0
    store = AttemptStore.open(run)
    got = messages_by_slot(store)
    assert len(got) >= 600
    assert all(messages == episode(task, 40, size=300)[turn] for (_, task, _, turn), messages in got.items())
