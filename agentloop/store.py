"""The attempt store: one SQLite file (WAL) per run directory.

Attempts are queued and written in batches by one background task through a worker thread, so
the event loop never blocks on disk; a batch is committed within `flush_s` of its first attempt,
so killing the process loses at most the attempts in flight. A partial unique index makes a
completed (task, chain, turn) impossible to record twice, which is what makes `--resume` safe.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio

from agentloop.attempt import Attempt, AttemptKind
from agentloop.errors import RunDirError
from agentloop.sandbox.types import ExecResult, Verdict
from agentloop.tasks.model import Task

DB_NAME = "attempts.sqlite"
SCHEMA_VERSION = 1
_SQLITE_HEADER = b"SQLite format 3\x00"

_SCHEMA = """
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

_COLUMNS = (
    "strategy, task_id, chain, turn, kind, messages_hash, request_id, completion, code, "
    "prompt_tokens, cached_prompt_tokens, completion_tokens, latency_s, verdict, grading, "
    "feedback, feedback_verdict, error, started_at, finished_at, extra"
)

EXPORT_COLUMNS = (
    "id, strategy, task_id, chain, turn, messages_hash, completion, code, prompt_tokens, "
    "cached_prompt_tokens, completion_tokens, verdict, feedback_verdict, extra"
)
"""What `export` reads per attempt (see agentloop/export/source.py's Row)."""


def _select(messages: str) -> str:
    """The attempt columns of table `a`, with the messages hash replaced by `messages`."""
    return ", ".join(messages if c == "messages_hash" else f"a.{c}" for c in _COLUMNS.split(", "))


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _messages_key(messages: list[dict[str, Any]]) -> tuple[str, str]:
    text = _dumps(messages)
    return hashlib.sha256(text.encode()).hexdigest()[:32], text


def _row(a: Attempt, messages_hash: str) -> tuple[Any, ...]:
    return (
        a.strategy, a.task_id, a.chain, a.turn, a.kind.value, messages_hash,
        a.request_id, a.completion, a.code, a.prompt_tokens, a.cached_prompt_tokens,
        a.completion_tokens, a.latency_s, a.verdict.value if a.verdict else None,
        _dumps(a.grading.to_json()) if a.grading else None, a.feedback,
        a.feedback_verdict.value if a.feedback_verdict else None, a.error, a.started_at,
        a.finished_at, _dumps(a.extra),
    )


def _attempt(r: tuple[Any, ...]) -> Attempt:
    """An Attempt from a row of _COLUMNS (messages_hash replaced by the messages' JSON)."""
    return Attempt(
        strategy=r[0], task_id=r[1], chain=r[2], turn=r[3], kind=AttemptKind(r[4]),
        messages=json.loads(r[5] or "[]"), request_id=r[6], completion=r[7], code=r[8],
        prompt_tokens=r[9], cached_prompt_tokens=r[10], completion_tokens=r[11],
        latency_s=r[12], verdict=Verdict(r[13]) if r[13] else None,
        grading=ExecResult.from_json(json.loads(r[14])) if r[14] else None,
        feedback=r[15], feedback_verdict=Verdict(r[16]) if r[16] else None,
        error=r[17], started_at=r[18], finished_at=r[19], extra=json.loads(r[20]),
    )


class AttemptStore:
    """Synchronous core (used from one worker thread at a time) plus an async batched writer."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self._conn = conn
        self.duplicates_ignored = 0

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def create(cls, run_dir: Path) -> AttemptStore:
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / DB_NAME
        if path.exists():
            raise RunDirError(f"{run_dir}: already holds a run; use --resume {run_dir} to continue it")
        store = cls(path, cls._connect(path))
        store._conn.executescript(_SCHEMA)
        store.set_meta("schema_version", SCHEMA_VERSION)
        return store

    @classmethod
    def open(cls, run_dir: Path) -> AttemptStore:
        """Open an existing store; nothing is written to a file that is not a valid store."""
        path = run_dir / DB_NAME
        if not run_dir.is_dir():
            raise RunDirError(f"{run_dir}: no such run directory")
        if not path.is_file():
            raise RunDirError(f"{run_dir}: not a run directory (no {DB_NAME})")
        # Check the header before SQLite touches the file: it would turn an empty file into a
        # fresh database (and set WAL mode on any database), writing to what it should report.
        try:
            with open(path, "rb") as f:
                header = f.read(len(_SQLITE_HEADER))
        except OSError as e:
            raise RunDirError(f"{path}: cannot read ({e.strerror or e})") from None
        if not header:
            raise RunDirError(f"{path}: empty file, no schema version (half-written run dir); start a new run")
        if header != _SQLITE_HEADER:
            raise RunDirError(f"{path}: unreadable attempt store (not an SQLite database: corrupt or overwritten)")
        try:
            store = cls(path, cls._connect(path, pragmas=False))  # WAL mode is set once it is ours
        except sqlite3.DatabaseError as e:
            raise RunDirError(f"{path}: unreadable attempt store ({e})") from None
        try:
            version = store.get_meta("schema_version")
            if version is None:
                raise RunDirError(f"{path}: no schema version recorded (half-written run dir); start a new run")
            if version != SCHEMA_VERSION:
                raise RunDirError(f"{path}: schema version {version!r}, expected {SCHEMA_VERSION} "
                                  "(made by another agentloop version)")
            with store._reading():
                cls._pragmas(store._conn)
        except BaseException:
            store.close()
            raise
        return store

    @staticmethod
    def _connect(path: Path, pragmas: bool = True) -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        if pragmas:
            AttemptStore._pragmas(conn)
        return conn

    @staticmethod
    def _pragmas(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        self._conn.close()

    # -- meta and tasks --------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, _dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        with self._reading():
            try:
                row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            except sqlite3.OperationalError as e:
                if "no such table" not in str(e):
                    raise
                return default
        return json.loads(row[0]) if row else default

    def put_tasks(self, tasks: list[Task], time_limits: dict[str, float]) -> None:
        with self._transaction():
            self._conn.executemany(
                "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?)",
                [(t.id, i, _dumps(t.to_json()), time_limits.get(t.id)) for i, t in enumerate(tasks)],
            )

    def tasks(self) -> list[tuple[Task, float | None]]:
        with self._reading():
            rows = self._conn.execute("SELECT data, time_limit_s FROM tasks ORDER BY position").fetchall()
        return [(Task.from_json(json.loads(d)), limit) for d, limit in rows]

    # -- attempts --------------------------------------------------------------------------
    def write_batch(self, attempts: list[Attempt]) -> None:
        # Siblings of one request share one messages list: hash each list once.
        keys: dict[int, tuple[str, str]] = {}
        for a in attempts:
            if id(a.messages) not in keys:
                keys[id(a.messages)] = _messages_key(a.messages)
        with self._transaction():
            self._conn.executemany("INSERT OR IGNORE INTO messages VALUES (?, ?)", set(keys.values()))
            before = self._conn.total_changes
            self._conn.executemany(
                f"INSERT OR IGNORE INTO attempts ({_COLUMNS}) VALUES ({', '.join('?' * 21)})",
                [_row(a, keys[id(a.messages)][0]) for a in attempts],
            )
            self.duplicates_ignored += len(attempts) - (self._conn.total_changes - before)

    def completed_slots(self, strategy: str) -> set[tuple[str, int, int]]:
        with self._reading():
            rows = self._conn.execute(
                "SELECT task_id, chain, turn FROM attempts WHERE kind = 'completed' AND strategy = ?",
                (strategy,),
            ).fetchall()
        return {tuple(r) for r in rows}

    def chain_tails(self, strategy: str) -> dict[tuple[str, int], tuple[Attempt, float]]:
        """Per (task, chain) of `strategy`: its last completed attempt (with messages, so the
        chain can go on) and the tokens the chain spent (prompt shares + completions)."""
        query = f"""
            WITH siblings AS (SELECT request_id, COUNT(*) AS n FROM attempts
                              WHERE strategy = ?1 AND request_id IS NOT NULL GROUP BY request_id),
                 spent AS (SELECT a.task_id, a.chain, MAX(a.turn) AS last,
                                  SUM(COALESCE(a.prompt_tokens, 0) * 1.0 / COALESCE(s.n, 1)
                                      + COALESCE(a.completion_tokens, 0)) AS tokens
                           FROM attempts a LEFT JOIN siblings s ON s.request_id = a.request_id
                           WHERE a.kind = 'completed' AND a.strategy = ?1 GROUP BY a.task_id, a.chain)
            SELECT {_select('m.json')}, spent.tokens FROM attempts a
            JOIN spent ON spent.task_id = a.task_id AND spent.chain = a.chain AND spent.last = a.turn
            LEFT JOIN messages m ON m.hash = a.messages_hash
            WHERE a.kind = 'completed' AND a.strategy = ?1"""
        with self._reading():
            rows = self._conn.execute(query, (strategy,)).fetchall()
        return {(r[1], r[2]): (_attempt(r), r[21]) for r in rows}

    def first_turn_feedback(self, strategy: str) -> dict[tuple[str, int], bool]:
        """(task, chain) → whether its completed turn 0 passed the feedback tests (adaptive's probe)."""
        with self._reading():
            rows = self._conn.execute(
                "SELECT task_id, chain, feedback_verdict FROM attempts "
                "WHERE kind = 'completed' AND turn = 0 AND strategy = ?",
                (strategy,),
            ).fetchall()
        return {(t, c): v == Verdict.PASSED.value for t, c, v in rows}

    def iter_attempts(self, with_messages: bool = False) -> Iterator[Attempt]:
        """Stream attempts in insertion order (memory stays flat for any run size)."""
        msg = "m.json" if with_messages else "'[]'"
        with self._reading():  # a corrupt page can surface mid-stream
            cur = self._conn.execute(
                f"SELECT {_select(msg)} FROM attempts a "
                "LEFT JOIN messages m ON m.hash = a.messages_hash ORDER BY a.id"
            )
            for r in cur:
                yield _attempt(r)

    def iter_completed_by_task(self) -> Iterator[tuple[Any, ...]]:
        """Completed attempts as light rows (EXPORT_COLUMNS, no messages), grouped by task: the
        task index gives the order, so a million attempts stream without a sort or a big buffer."""
        with self._reading():
            cur = self._conn.execute(
                f"SELECT {EXPORT_COLUMNS} FROM attempts WHERE kind = 'completed' ORDER BY task_id, id")
            yield from cur

    def messages(self, messages_hash: str) -> list[dict[str, Any]]:
        """The prompt messages stored under `messages_hash` (attempts keep only the hash)."""
        with self._reading():
            row = self._conn.execute("SELECT json FROM messages WHERE hash = ?", (messages_hash,)).fetchone()
        if row is None:
            raise RunDirError(f"{self.path}: messages {messages_hash} are missing (corrupt attempt store)")
        result: list[dict[str, Any]] = json.loads(row[0])
        return result

    def count(self, kind: AttemptKind | None = None) -> int:
        where, args = ("WHERE kind = ?", (kind.value,)) if kind else ("", ())
        with self._reading():
            return int(self._conn.execute(f"SELECT COUNT(*) FROM attempts {where}", args).fetchone()[0])

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """A corrupt file surfaces as a one-line RunDirError naming it, not an sqlite3 traceback."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            raise RunDirError(f"{self.path}: unreadable attempt store ({e})") from None

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- async batched writer --------------------------------------------------------------
    @asynccontextmanager
    async def writer(self, flush_s: float = 0.05, max_pending: int = 10_000) -> AsyncIterator[Writer]:
        """Yields a `Writer`; on exit (even on cancellation) everything queued is committed."""
        writer = Writer(max_pending)
        async with anyio.create_task_group() as tg:

            async def drain() -> None:
                # Shielded: a Ctrl-C must not drop what is queued; it ends when the writer closes.
                with anyio.CancelScope(shield=True):
                    while not writer.closed or writer.pending:
                        if not writer.pending:
                            with anyio.move_on_after(flush_s):
                                await writer.wake.wait()
                            writer.wake = anyio.Event()
                        batch, writer.pending = writer.pending, []
                        room, writer.room = writer.room, anyio.Event()
                        room.set()
                        if batch:
                            await anyio.to_thread.run_sync(self.write_batch, batch)

            tg.start_soon(drain)
            try:
                yield writer
            finally:
                writer.closed = True
                writer.wake.set()


class Writer:
    """Queues attempts for the store's drain task: an append per attempt, one commit per batch."""

    def __init__(self, max_pending: int):
        self.pending: list[Attempt] = []
        self.closed = False
        self.count = 0
        self.wake = anyio.Event()  # set to flush now (on close)
        self.room = anyio.Event()  # set after each drain (back-pressure)
        self._max_pending = max_pending

    async def add(self, attempt: Attempt) -> None:
        if self.closed:
            raise RuntimeError("attempt store writer is closed")
        while len(self.pending) >= self._max_pending:  # the disk is behind: wait for a drain
            await self.room.wait()
        self.pending.append(attempt)
        self.count += 1
