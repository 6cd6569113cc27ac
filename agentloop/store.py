"""The attempt store: one SQLite file (WAL) per run directory.

Attempts are queued and written in batches by one background task through a worker thread, so
the event loop never blocks on disk; a batch is committed within `flush_s` of its first attempt,
so killing the process loses at most the attempts in flight. A partial unique index makes a
completed (task, chain, turn) impossible to record twice, which is what makes `--resume` safe.

Prompts are content-addressed: an attempt keeps the hash of its full message list (sha256 of its
compact JSON). Schema version 2 stores each list as a delta: the messages after the longest list
already stored that is a proper prefix of it (its `parent`), so a chain or an episode whose prompt
grows step by step stores each message once, not once per step. Version 1 stored every list in
full (parent NULL); such run dirs read as they are and become version 2 when a writer resumes them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio

from agentloop.attempt import Attempt, AttemptKind
from agentloop.errors import RunDirError
from agentloop.sandbox.types import ExecResult, Verdict
from agentloop.tasks.model import Task

DB_NAME = "attempts.sqlite"
SCHEMA_VERSION = 2
"""2: messages rows are deltas against a parent (a stored proper prefix). 1: full lists only."""
_READABLE_VERSIONS = (1, 2)
_SQLITE_HEADER = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
  id TEXT PRIMARY KEY, position INTEGER NOT NULL, data TEXT NOT NULL, time_limit_s REAL);
CREATE TABLE IF NOT EXISTS messages (hash TEXT PRIMARY KEY, json TEXT NOT NULL, parent TEXT);
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


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""json.dumps with these options, without building an encoder per call (a prompt is encoded one
message at a time)."""


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _messages_key(messages: list[dict[str, Any]]) -> tuple[str, str]:
    text = _dumps(messages)
    return hashlib.sha256(text.encode()).hexdigest()[:32], text


_EMPTY_KEY = _messages_key([])[0]
_IN_CHUNK = 500
"""Hashes per `IN (...)` query (SQLite's oldest variable limit is 999)."""
_CACHE_CHARS = 8_000_000
"""Full message texts a reader keeps while it rebuilds lists from their deltas (each chain's last
turn read; a bigger cache made reading slower, not faster)."""
_TAIL_CHARS = 32_000_000
"""Full message texts a writer keeps: each chain's last prompt (its next turn extends it)."""


Chain = tuple[str, str, int]
"""(strategy, task id, chain): whose prompts extend each other turn by turn."""


class _Prompt:
    """A message list as the store keys it: its compact JSON `text` and `key` (the hash of the
    text, as version 1 keyed it), the chains that sent it, and on demand the hash of every prefix."""

    __slots__ = ("_keys", "_pieces", "chains", "key", "messages", "text")

    def __init__(self, messages: list[dict[str, Any]]):
        self.messages = messages
        self.key, self.text = _messages_key(messages)
        self.chains: list[Chain] = []
        self._pieces: list[str] = []
        self._keys: list[str] = []

    def prefix_keys(self) -> list[str]:
        """`keys[i]` is the hash of the first i + 1 messages (the last one is `key`)."""
        if self.messages and not self._keys:
            # The compact JSON of a list is "[" + ",".join(items) + "]": one running sha256 gives
            # the hash of every prefix (copy, add "]") in one pass over the text.
            self._pieces = [_dumps(m) for m in self.messages]
            h = hashlib.sha256()
            for i, piece in enumerate(self._pieces):
                h.update((("," if i else "[") + piece).encode())
                prefix = h.copy()
                prefix.update(b"]")
                self._keys.append(prefix.hexdigest()[:32])
        return self._keys

    def extends(self, text: str) -> bool:
        """Whether the list whose JSON is `text` is a proper prefix of this one: its items (each a
        whole JSON value) then a comma at depth 1 begin this text. No per-message work."""
        return len(text) > 2 and len(self.text) > len(text) and self.text.startswith(text[:-1] + ",")

    def delta(self, known: set[str], tails: Iterable[tuple[str, str] | None]) -> tuple[str, str, str | None]:
        """The row (hash, json, parent) storing the messages after a proper prefix in `known`: a
        chain's last prompt when this list extends it (a revision turn, an agent step: the longest
        stored prefix, found without per-message work), else the longest one found by hash."""
        for tail in tails:
            if tail is not None and tail[0] in known and self.extends(tail[1]):
                return self.key, "[" + self.text[len(tail[1]):], tail[0]
        keys = self.prefix_keys()
        for i in range(len(keys) - 2, -1, -1):
            if keys[i] in known:
                return self.key, "[" + ",".join(self._pieces[i + 1:]) + "]", keys[i]
        return self.key, self.text, None


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

    def __init__(self, path: Path, conn: sqlite3.Connection, version: int = SCHEMA_VERSION):
        self.path = path
        self._conn = conn
        self._version = version
        self._tails: OrderedDict[Chain, tuple[str, str]] = OrderedDict()  # chain → (hash, JSON)
        self._tail_chars = 0
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
            if isinstance(version, int) and version > SCHEMA_VERSION:
                raise RunDirError(f"{path}: schema version {version}, newer than this agentloop reads "
                                  f"(up to {SCHEMA_VERSION}): upgrade agentloop")
            if type(version) is not int or version not in _READABLE_VERSIONS:
                raise RunDirError(f"{path}: schema version {version!r}, expected {SCHEMA_VERSION} "
                                  "(made by another agentloop version)")
            store._version = version  # 1 reads as is; a writer upgrades it (`_upgrade`)
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

    # -- schema upgrade --------------------------------------------------------------------
    def _upgrade(self) -> None:
        """Make a version 1 store version 2 in place before it is written to (one column, no
        rewrite: its full lists are valid version 2 rows without a parent). Reads never call it."""
        if self._version >= SCHEMA_VERSION:
            return
        with self._transaction():
            columns = {r[1] for r in self._conn.execute("PRAGMA table_info(messages)")}
            if "parent" not in columns:
                self._conn.execute("ALTER TABLE messages ADD COLUMN parent TEXT")
            self.set_meta("schema_version", SCHEMA_VERSION)
        self._version = SCHEMA_VERSION

    def _current_version(self) -> int:
        """The version to read with: a version 1 store may have been upgraded by a resumed run
        since it was opened (its new rows are deltas), so it is looked up again."""
        if self._version < SCHEMA_VERSION and self.get_meta("schema_version") == SCHEMA_VERSION:
            self._version = SCHEMA_VERSION
        return self._version

    # -- attempts --------------------------------------------------------------------------
    def write_batch(self, attempts: list[Attempt]) -> None:
        self._upgrade()
        # Siblings of one request share one messages list: hash each list once.
        prompts: dict[int, _Prompt] = {}
        for a in attempts:
            if id(a.messages) not in prompts:
                prompts[id(a.messages)] = _Prompt(a.messages)
            prompts[id(a.messages)].chains.append((a.strategy, a.task_id, a.chain))
        with self._transaction():
            rows, tails = self._message_rows(prompts.values())
            self._conn.executemany("INSERT OR IGNORE INTO messages (hash, json, parent) VALUES (?, ?, ?)", rows)
            before = self._conn.total_changes
            self._conn.executemany(
                f"INSERT OR IGNORE INTO attempts ({_COLUMNS}) VALUES ({', '.join('?' * 21)})",
                [_row(a, prompts[id(a.messages)].key) for a in attempts],
            )
            self.duplicates_ignored += len(attempts) - (self._conn.total_changes - before)
        self._keep_tails(tails)  # committed: later batches may write deltas against them

    def _message_rows(self, prompts: Iterable[_Prompt]
                      ) -> tuple[list[tuple[str, str, str | None]], dict[Chain, tuple[str, str]]]:
        """Rows for the lists not stored yet, each a delta against a stored proper prefix: one in
        the file (committed, or in this transaction) or one earlier in this batch (shorter lists
        first), so a parent is never written after its child. Also each chain's new last prompt."""
        merged: dict[str, _Prompt] = {}
        for p in prompts:  # equal lists sent by different chains (e.g. a task's turn-0 prompt)
            if p.key in merged:
                merged[p.key].chains.extend(p.chains)
            else:
                merged[p.key] = p
        todo = sorted(merged.values(), key=lambda p: len(p.text))
        wanted = {p.key for p in todo}
        for p in todo:
            old = [t for c in p.chains if (t := self._tails.get(c))]
            wanted.update(t[0] for t in old)
            if not any(p.extends(t[1]) for t in old):
                wanted.update(p.prefix_keys())  # one query for the batch's first turns
        known = self._stored(wanted)
        tails: dict[Chain, tuple[str, str]] = {}
        rows = []
        for p in todo:
            if p.key not in known:
                candidates = [t for c in p.chains for t in (tails.get(c), self._tails.get(c))]
                if not any(t and t[0] in known and p.extends(t[1]) for t in candidates):
                    unchecked = set(p.prefix_keys()) - wanted
                    wanted |= unchecked
                    known |= self._stored(unchecked)
                rows.append(p.delta(known, candidates))
                known.add(p.key)
            for c in p.chains:
                tails[c] = (p.key, p.text)
        return rows, tails

    def _stored(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` the messages table holds."""
        keys = list(keys)
        found: set[str] = set()
        for i in range(0, len(keys), _IN_CHUNK):
            chunk = keys[i:i + _IN_CHUNK]
            found.update(r[0] for r in self._conn.execute(
                f"SELECT hash FROM messages WHERE hash IN ({', '.join('?' * len(chunk))})", chunk))
        return found

    def _keep_tails(self, tails: dict[Chain, tuple[str, str]]) -> None:
        """Remember each chain's last stored prompt (bounded): its next turn is stored against it."""
        for chain, tail in tails.items():
            if (old := self._tails.pop(chain, None)) is not None:
                self._tail_chars -= len(old[1])
            self._tails[chain] = tail
            self._tail_chars += len(tail[1])
        while self._tail_chars > _TAIL_CHARS and self._tails:
            self._tail_chars -= len(self._tails.popitem(last=False)[1][1])

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
            SELECT {_select('m.json')}, spent.tokens, a.messages_hash, {self._parent()} FROM attempts a
            JOIN spent ON spent.task_id = a.task_id AND spent.chain = a.chain AND spent.last = a.turn
            LEFT JOIN messages m ON m.hash = a.messages_hash
            WHERE a.kind = 'completed' AND a.strategy = ?1"""
        texts = _Texts(self)
        with self._reading():
            rows = self._conn.execute(query, (strategy,)).fetchall()
            return {(r[1], r[2]): (_attempt(texts.resolve(r, 22)), r[21]) for r in rows}

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
        if not with_messages:
            with self._reading():  # a corrupt page can surface mid-stream
                for r in self._conn.execute(f"SELECT {_select(repr('[]'))} FROM attempts a ORDER BY a.id"):
                    yield _attempt(r)
            return
        texts = _Texts(self)
        with self._reading():
            cur = self._conn.execute(
                f"SELECT {_select('m.json')}, a.messages_hash, {self._parent()} FROM attempts a "
                "LEFT JOIN messages m ON m.hash = a.messages_hash ORDER BY a.id"
            )
            for r in cur:
                yield _attempt(texts.resolve(r, 21))

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
            result: list[dict[str, Any]] = json.loads(_Texts(self).full(messages_hash))
        return result

    def _parent(self) -> str:
        """The messages' parent column as a read query selects it (version 1 has none)."""
        return "m.parent" if self._current_version() >= 2 else "NULL"

    def _message_path(self, messages_hash: str) -> dict[str, tuple[str, str | None]]:
        """hash → (json, parent) for the row under `messages_hash` and its ancestors, in one query
        (UNION stops at a row already seen, so a corrupt cycle ends)."""
        if self._current_version() < 2:
            query = "SELECT hash, json, NULL FROM messages WHERE hash = ?"
        else:
            query = """WITH RECURSIVE path(hash, json, parent) AS (
                           SELECT hash, json, parent FROM messages WHERE hash = ?
                           UNION SELECT m.hash, m.json, m.parent FROM messages m JOIN path ON m.hash = path.parent)
                       SELECT hash, json, parent FROM path"""
        return {h: (text, parent) for h, text, parent in self._conn.execute(query, (messages_hash,))}

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

            await anyio.to_thread.run_sync(self._upgrade)  # a resumed version 1 run dir
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


class _Texts:
    """Rebuilds full message lists (their compact JSON, byte for byte as version 1 stored it) from
    version 2 deltas for one read call. A chain read in order costs one concatenation per turn:
    the last text read is kept until its next turn extends it; any other list is rebuilt from its
    ancestors, fetched in one query. Every list is parsed afresh: callers get their own objects."""

    def __init__(self, store: AttemptStore):
        self._store = store
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._chars = 0

    def resolve(self, r: tuple[Any, ...], at: int) -> tuple[Any, ...]:
        """A row of _COLUMNS whose messages column holds a stored row's json, with the attempt's
        hash and the row's parent at `at` and `at + 1`: the same row with the full list's JSON."""
        delta, key, parent = r[5], r[at], r[at + 1]
        if parent is None or delta is None:  # a full list (or a missing row: read as [] as before)
            return r
        text = self._cache.get(key)
        if text is None:
            prefix = self._cache.pop(parent, None)  # its chain has moved on: not needed again
            if prefix is not None:
                self._chars -= len(prefix)
            else:
                prefix = self.full(parent, of=key, keep=False)
            text = _join([delta, prefix])
        self._keep(key, text)
        return (*r[:5], text, *r[6:at])

    def full(self, key: str, of: str | None = None, keep: bool = True) -> str:
        """The full JSON text of the list stored under `key` (the start of `of`'s list); a missing
        row is a one-line error."""
        if (text := self._cache.get(key)) is not None:
            return text
        rows = self._store._message_path(key)
        pieces: list[str] = []  # deltas, from `key` back to a full list
        at: str | None = key
        seen: set[str] = set()
        while at is not None:
            if at in seen:
                raise RunDirError(f"{self._store.path}: messages {key} extend themselves (corrupt attempt store)")
            seen.add(at)
            if at != key and (text := self._cache.get(at)) is not None:
                pieces.append(text)
                break
            row = rows.get(at)
            if row is None:
                whole = key if at != key else of
                part = f", the start of messages {whole}," if whole else ""
                raise RunDirError(f"{self._store.path}: messages {at}{part} are missing (corrupt attempt store)")
            pieces.append(row[0])
            at = row[1]
        text = _join(pieces)
        if keep:
            self._keep(key, text)
        return text

    def _keep(self, key: str, text: str) -> None:
        if key in self._cache:
            self._cache.move_to_end(key)
            return
        self._cache[key] = text
        self._chars += len(text)
        while self._chars > _CACHE_CHARS and len(self._cache) > 1:
            self._chars -= len(self._cache.popitem(last=False)[1])


def _join(pieces: list[str]) -> str:
    """The JSON of a list from its parts' JSON lists, last part first."""
    return "[" + ",".join(p[1:-1] for p in reversed(pieces) if p != "[]") + "]"
