"""Durable state in one SQLite file under the data directory: simulation runs, the event log, and the
integration cache (its queries live in ``server/integration/cache.py``).

All SQL runs on one dedicated worker thread that owns the connection, so the event loop never waits on
disk and the connection is never shared between threads. The database uses WAL with
``synchronous=NORMAL`` (durable across process crashes; a power cut may lose the last commits) and a
busy timeout. Payloads (a run's config, result and error; events) are opaque bytes: the services store
serialised protobuf there. The schema is versioned with ``PRAGMA user_version``.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import stat
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from server import page_tokens
from server.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

T = TypeVar("T")
log = logging.getLogger(__name__)

DATABASE_FILE = "equihome.sqlite3"
LOCK_FILE = "server.lock"
PAGE_TOKEN_SECRET_FILE = "page-token.key"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_PAGE_BYTES = 4 * 1024 * 1024  # stored configs and results one page of runs may read


class RunState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    INTERRUPTED = "INTERRUPTED"  # was pending or running when the server stopped

    @property
    def terminal(self) -> bool:
        return self not in {RunState.PENDING, RunState.RUNNING}


UNFINISHED: Final = (RunState.PENDING, RunState.RUNNING)


@dataclass(frozen=True)
class RunRecord:
    name: str
    owner: str  # the creator's token subject; "" for runs stored before owners were recorded
    portfolio_id: str
    state: RunState
    progress_done: int
    progress_total: int
    config: bytes
    result: bytes | None
    error: bytes | None
    request_id: str | None
    request_hash: str | None
    create_time: datetime
    update_time: datetime
    start_time: datetime | None
    end_time: datetime | None


@dataclass(frozen=True)
class RunPage:
    runs: list[RunRecord]
    next_page_token: str  # empty at the end of the results


@dataclass(frozen=True)
class EventRecord:
    cursor: int
    topic: str
    payload: bytes
    create_time: datetime


# --- Schema ------------------------------------------------------------------------------------

_MIGRATIONS: tuple[str, ...] = (
    # 1: runs and events
    """
    CREATE TABLE runs (
        name           TEXT PRIMARY KEY,
        portfolio_id   TEXT NOT NULL DEFAULT '',
        request_id     TEXT UNIQUE,
        request_hash   TEXT,
        state          TEXT NOT NULL,
        progress_done  INTEGER NOT NULL DEFAULT 0,
        progress_total INTEGER NOT NULL DEFAULT 0,
        config         BLOB NOT NULL,
        result         BLOB,
        error          BLOB,
        create_us      INTEGER NOT NULL,
        update_us      INTEGER NOT NULL,
        start_us       INTEGER,
        end_us         INTEGER
    );
    CREATE INDEX runs_by_create_time ON runs (create_us DESC, name);
    CREATE INDEX runs_by_state ON runs (state, create_us DESC, name);
    CREATE TABLE events (
        cursor    INTEGER PRIMARY KEY AUTOINCREMENT,
        topic     TEXT NOT NULL DEFAULT '',
        payload   BLOB NOT NULL,
        create_us INTEGER NOT NULL
    );
    CREATE INDEX events_by_time ON events (create_us);
    """,
    # 2: the last good answer of each upstream read, served (marked stale) while the upstream is down
    """
    CREATE TABLE upstream_cache (
        key      TEXT PRIMARY KEY,
        system   TEXT NOT NULL,
        payload  BLOB NOT NULL,
        fetch_us INTEGER NOT NULL
    );
    CREATE INDEX upstream_cache_by_system ON upstream_cache (system, fetch_us);
    """,
    # 3: the mirror of the upstream systems, its reconciliations, and the outbox of pushes to them
    # (queries in server/integration/mirror.py and outbox.py)
    """
    CREATE TABLE mirror_items (
        kind       TEXT NOT NULL,
        scope      TEXT NOT NULL,
        id         TEXT NOT NULL,
        link       TEXT,
        payload    BLOB NOT NULL,
        updated_us INTEGER NOT NULL,
        PRIMARY KEY (kind, scope, id)
    );
    CREATE INDEX mirror_items_by_link ON mirror_items (kind, link);
    CREATE TABLE mirror_sources (
        kind         TEXT NOT NULL,
        scope        TEXT NOT NULL,
        synced_us    INTEGER,
        attempted_us INTEGER,
        PRIMARY KEY (kind, scope)
    );
    CREATE TABLE reconciliations (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        system   TEXT NOT NULL,
        start_us INTEGER NOT NULL,
        payload  BLOB NOT NULL
    );
    CREATE INDEX reconciliations_by_system ON reconciliations (system, id);
    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        system          TEXT NOT NULL,
        kind            TEXT NOT NULL,
        key             TEXT NOT NULL,
        path            TEXT NOT NULL,
        body            TEXT NOT NULL,
        state           TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_us INTEGER NOT NULL,
        last_attempt_us INTEGER,
        last_error      TEXT NOT NULL DEFAULT '',
        last_status     INTEGER,
        receipt_id      TEXT,
        create_us       INTEGER NOT NULL,
        queued_us       INTEGER NOT NULL,
        deliver_us      INTEGER,
        UNIQUE (kind, key)
    );
    CREATE INDEX outbox_due ON outbox (system, state, next_attempt_us, id);
    """,
    # 4: every run records its owner, and request ids are unique per owner (earlier runs: owner '')
    """
    CREATE TABLE runs_by_owner (
        name           TEXT PRIMARY KEY,
        owner          TEXT NOT NULL DEFAULT '',
        portfolio_id   TEXT NOT NULL DEFAULT '',
        request_id     TEXT,
        request_hash   TEXT,
        state          TEXT NOT NULL,
        progress_done  INTEGER NOT NULL DEFAULT 0,
        progress_total INTEGER NOT NULL DEFAULT 0,
        config         BLOB NOT NULL,
        result         BLOB,
        error          BLOB,
        create_us      INTEGER NOT NULL,
        update_us      INTEGER NOT NULL,
        start_us       INTEGER,
        end_us         INTEGER,
        UNIQUE (owner, request_id)
    );
    INSERT INTO runs_by_owner (name, portfolio_id, request_id, request_hash, state, progress_done,
        progress_total, config, result, error, create_us, update_us, start_us, end_us)
        SELECT name, portfolio_id, request_id, request_hash, state, progress_done, progress_total, config,
        result, error, create_us, update_us, start_us, end_us FROM runs;
    DROP TABLE runs;
    ALTER TABLE runs_by_owner RENAME TO runs;
    CREATE INDEX runs_by_create_time ON runs (create_us DESC, name);
    CREATE INDEX runs_by_state ON runs (state, create_us DESC, name);
    CREATE INDEX runs_of_owner ON runs (owner, create_us DESC, name);
    """,
    # 5: allocation optimisations, by optimization_id (owner '' for automatic re-optimisations)
    """
    CREATE TABLE optimizations (
        optimization_id TEXT PRIMARY KEY,
        owner           TEXT NOT NULL,
        portfolio_id    TEXT NOT NULL DEFAULT '',
        automatic       INTEGER NOT NULL DEFAULT 0,
        sent            INTEGER NOT NULL DEFAULT 0,
        body            BLOB NOT NULL,
        create_us       INTEGER NOT NULL
    );
    CREATE INDEX optimizations_sent_by_portfolio ON optimizations (portfolio_id, sent, create_us DESC);
    """,
    # 6: study jobs (stress tests, sensitivities, optimisations); queries in server/studies/store.py
    """
    CREATE TABLE studies (
        name           TEXT PRIMARY KEY,
        owner          TEXT NOT NULL,
        kind           TEXT NOT NULL,
        request_id     TEXT,
        request_hash   TEXT,
        state          TEXT NOT NULL,
        progress_done  INTEGER NOT NULL DEFAULT 0,
        progress_total INTEGER NOT NULL DEFAULT 0,
        spec           BLOB NOT NULL,
        result         BLOB,
        error          BLOB,
        create_us      INTEGER NOT NULL,
        update_us      INTEGER NOT NULL,
        start_us       INTEGER,
        end_us         INTEGER,
        UNIQUE (owner, request_id)
    );
    CREATE INDEX studies_of_owner ON studies (owner, create_us DESC, name);
    CREATE INDEX studies_by_state ON studies (state, create_us DESC, name);
    """,
    # 7: portfolio impact analyses (queries in ImpactStore; request ids unique per owner) and the event-log
    # cursor of the automatic Underwriting flow (server/integration/underwriting_flow.py)
    """
    CREATE TABLE impact_analyses (
        analysis_id    TEXT PRIMARY KEY,
        owner          TEXT NOT NULL,
        request_id     TEXT,
        request_hash   TEXT,
        loan_id        TEXT NOT NULL,
        portfolio_id   TEXT NOT NULL DEFAULT '',
        analysis       BLOB NOT NULL,
        publish_status BLOB,
        create_us      INTEGER NOT NULL,
        UNIQUE (owner, request_id)
    );
    CREATE INDEX impact_analyses_by_loan ON impact_analyses (loan_id, create_us DESC);
    CREATE TABLE impact_flow_cursor (
        id             INTEGER PRIMARY KEY CHECK (id = 1),
        cursor         INTEGER NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


def migrate(connection: sqlite3.Connection) -> int:
    """Bring the schema up to ``SCHEMA_VERSION``, one transaction per step; returns the version found."""
    found = int(connection.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise RuntimeError(
            f"the database has schema version {found}, newer than this server's {SCHEMA_VERSION}; "
            "upgrade the server"
        )
    for version in range(found, SCHEMA_VERSION):
        with transaction(connection):
            # Statement by statement: executescript() would COMMIT first and break the transaction.
            for statement in _MIGRATIONS[version].split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {version + 1}")
    return found


class transaction:  # noqa: N801 (used as a context manager, like a function)
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, connection: sqlite3.Connection):
        self._connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self._connection.execute("BEGIN IMMEDIATE")
        return self._connection

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        self._connection.execute("ROLLBACK" if error_type else "COMMIT")


RUN_RETENTION = timedelta(days=7)  # finished runs are deleted this long after they end
REQUEST_ID_RETENTION = timedelta(hours=24)  # a request_id makes a create idempotent for this long


def _us(duration: timedelta) -> int:
    return int(duration.total_seconds() * 1_000_000)


def _now_us() -> int:
    return time.time_ns() // 1000


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _time(microseconds: int | None) -> datetime | None:
    return None if microseconds is None else _EPOCH + timedelta(microseconds=microseconds)


# --- The store ---------------------------------------------------------------------------------


class Store:
    """The SQLite database of one data directory, with its ``runs`` and ``events``."""

    def __init__(
        self, executor: ThreadPoolExecutor, connection: sqlite3.Connection, page_secret: bytes, lock: int
    ):
        self._executor = executor
        self._connection: sqlite3.Connection | None = connection
        self._lock = lock
        self.runs = RunStore(self, page_secret)
        self.studies = StudyStore(self, page_secret)
        self.events = EventLog(self)
        self.optimizations = OptimizationStore(self)
        self.impact = ImpactStore(self)

    @classmethod
    async def open(cls, data_dir: Path, *, busy_timeout_ms: int = 5000) -> Store:
        """Open (creating and migrating if needed) the store under ``data_dir``, which must not be in use by
        another server (``DataDirInUse``): two servers on one store would interrupt each other's runs."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="equihome-store")
        loop = asyncio.get_running_loop()
        lock: int | None = None
        try:
            lock = await loop.run_in_executor(executor, _lock_data_dir, Path(data_dir))
            connection, secret = await loop.run_in_executor(
                executor, _open_database, Path(data_dir), busy_timeout_ms
            )
        except BaseException:
            if lock is not None:
                os.close(lock)
            executor.shutdown(wait=False)
            raise
        return cls(executor, connection, secret, lock)

    async def call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(connection)`` on the store's thread."""
        connection = self._connection
        if connection is None:
            raise RuntimeError("the store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, connection)

    async def close(self) -> None:
        if self._connection is None:
            return
        connection, self._connection = self._connection, None
        await asyncio.get_running_loop().run_in_executor(self._executor, connection.close)
        self._executor.shutdown(wait=True)  # returns at once: the close above was the last job
        os.close(self._lock)


class DataDirInUse(RuntimeError):
    """Another server holds the data directory."""


def _lock_data_dir(data_dir: Path) -> int:
    """An exclusive lock on ``data_dir`` for this process's life (the kernel drops it when the process dies)."""
    private_directory(data_dir)
    descriptor = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise DataDirInUse(
            f"{data_dir} is in use by another equihome-sim server; give each server its own --data-dir"
        ) from None
    return descriptor


def _open_database(data_dir: Path, busy_timeout_ms: int) -> tuple[sqlite3.Connection, bytes]:
    private_directory(data_dir)
    secret = _page_token_secret(data_dir / PAGE_TOKEN_SECRET_FILE)
    database = data_dir / DATABASE_FILE
    for path in (database, *(database.with_name(database.name + suffix) for suffix in ("-wal", "-shm"))):
        private_file(path, create=path == database)  # SQLite gives its -wal and -shm the database's mode
    connection = sqlite3.connect(database, isolation_level=None, check_same_thread=True)
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"SQLite refused WAL mode (got {mode}) for {data_dir / DATABASE_FILE}")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA foreign_keys = ON")
        migrate(connection)
    except BaseException:
        connection.close()
        raise
    return connection, secret


PRIVATE_DIRECTORY_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_directory(path: Path) -> None:
    """Create ``path`` (and parents) readable by this user only, or take away what others could do there."""
    path.mkdir(mode=PRIVATE_DIRECTORY_MODE, parents=True, exist_ok=True)
    _restrict(path, PRIVATE_DIRECTORY_MODE)


def private_file(path: Path, *, create: bool = False) -> None:
    """Make ``path`` (created empty if asked and missing) readable and writable by this user only."""
    if create:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))
    if path.exists():
        _restrict(path, PRIVATE_FILE_MODE)


def _restrict(path: Path, mode: int) -> None:
    current = stat.S_IMODE(path.stat().st_mode)
    if current & ~mode:
        log.warning("%s was accessible by other users (mode %04o); now %04o", path, current, mode)
        path.chmod(mode)


def _page_token_secret(path: Path) -> bytes:
    """The data directory's page-token signing secret (32 random bytes, mode 0600), made on first use."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        private_file(path)
        secret = path.read_bytes()
        if len(secret) < 32:
            raise RuntimeError(
                f"page-token secret {path} is truncated; delete it to make a new one"
            ) from None
        return secret
    secret = secrets.token_bytes(32)
    with os.fdopen(descriptor, "wb") as file:
        file.write(secret)
    return secret


# --- Runs --------------------------------------------------------------------------------------

_RUN_COLUMN_NAMES = (
    "name", "owner", "portfolio_id", "state", "progress_done", "progress_total", "config", "result", "error",
    "request_id", "request_hash", "create_us", "update_us", "start_us", "end_us",
)  # fmt: skip
_RUN_COLUMNS = ", ".join(_RUN_COLUMN_NAMES)
_RUN_COLUMNS_WITHOUT_RESULT = _RUN_COLUMNS.replace("result", "NULL")
_CREATE_US = _RUN_COLUMN_NAMES.index("create_us")
_CONFIG, _RESULT = _RUN_COLUMN_NAMES.index("config"), _RUN_COLUMN_NAMES.index("result")


def _run(row: Sequence[Any]) -> RunRecord:
    values = dict(zip(_RUN_COLUMN_NAMES, row, strict=True))
    return RunRecord(
        name=values["name"],
        owner=values["owner"],
        portfolio_id=values["portfolio_id"],
        state=RunState(values["state"]),
        progress_done=values["progress_done"],
        progress_total=values["progress_total"],
        config=values["config"],
        result=values["result"],
        error=values["error"],
        request_id=values["request_id"],
        request_hash=values["request_hash"],
        create_time=_time(values["create_us"]),  # type: ignore[arg-type]
        update_time=_time(values["update_us"]),  # type: ignore[arg-type]
        start_time=_time(values["start_us"]),
        end_time=_time(values["end_us"]),
    )


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


class RunStore:
    """Simulation runs: idempotent creation, state updates and AIP-158 pagination."""

    def __init__(self, store: Store, page_secret: bytes):
        self._store = store
        self._page_secret = page_secret

    async def create(
        self,
        name: str,
        config: bytes,
        *,
        owner: str = "",
        portfolio_id: str = "",
        request_id: str | None = None,
        request_hash: str | None = None,
    ) -> tuple[RunRecord, bool]:
        """Insert a PENDING run of ``owner``; returns ``(run, created)``.

        A ``request_id`` the same owner used before returns the run it created, with ``created=False``
        (AIP-155); another owner's ids are never seen. If both requests came with a ``request_hash`` (a
        digest of the request body, computed by the caller) and the hashes differ, the id was reused for
        another request: ``InvalidArgument`` (REQUEST_ID_REUSED). A taken ``name`` raises ``AlreadyExists``.
        """

        def work(connection: sqlite3.Connection) -> tuple[RunRecord, bool]:
            with transaction(connection):
                if request_id is not None:
                    existing = _select_request(connection, owner, request_id, request_hash)
                    if existing is not None:
                        return existing, False
                now = _now_us()
                try:
                    connection.execute(
                        "INSERT INTO runs (name, owner, portfolio_id, request_id, request_hash, state, config, "
                        "create_us, update_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            name,
                            owner,
                            portfolio_id,
                            request_id,
                            request_hash,
                            RunState.PENDING.value,
                            config,
                            now,
                            now,
                        ),
                    )
                except sqlite3.IntegrityError:
                    raise AlreadyExists(f"Run {name} already exists.", metadata={"name": name}) from None
                return _run(_select_run(connection, name)), True

        return await self._store.call(work)

    async def find_request(
        self, owner: str, request_id: str, request_hash: str | None = None
    ) -> RunRecord | None:
        """The run ``owner``'s ``request_id`` created, if any; same ``InvalidArgument`` rule as ``create``.

        Lets a service answer a retried request before it commits resources to a new run.
        """
        return await self._store.call(
            lambda connection: _select_request(connection, owner, request_id, request_hash)
        )

    async def get(self, name: str) -> RunRecord:
        """The run called ``name``; raises ``NotFound``."""
        return await self._store.call(lambda connection: _run(_select_run(connection, name)))

    async def update(
        self,
        name: str,
        *,
        state: RunState | None = None,
        progress: tuple[int, int] | None = None,
        result: bytes | _Unset | None = UNSET,
        error: bytes | _Unset | None = UNSET,
        expected_states: Collection[RunState] | None = None,
    ) -> RunRecord:
        """Change the given fields and stamp ``update_time``; returns the run as stored.

        Entering RUNNING stamps ``start_time`` and entering a terminal state stamps ``end_time``. With
        ``expected_states``, the update happens only if the run is in one of them, else
        ``FailedPrecondition`` (a compare-and-set, e.g. cancel only what is still unfinished).
        """

        def work(connection: sqlite3.Connection) -> RunRecord:
            with transaction(connection):
                current = _run(_select_run(connection, name))
                if expected_states is not None and current.state not in expected_states:
                    raise FailedPrecondition(
                        f"Run {name} is {current.state.value}.",
                        reason="RUN_STATE_CONFLICT",
                        metadata={"name": name, "state": current.state.value},
                    )
                now = _now_us()
                assignments: dict[str, Any] = {"update_us": now}
                if state is not None:
                    assignments["state"] = state.value
                    if state is RunState.RUNNING and current.start_time is None:
                        assignments["start_us"] = now
                    if state.terminal:
                        assignments["end_us"] = now
                if progress is not None:
                    assignments["progress_done"], assignments["progress_total"] = progress
                if not isinstance(result, _Unset):
                    assignments["result"] = result
                if not isinstance(error, _Unset):
                    assignments["error"] = error
                columns = ", ".join(f"{column} = ?" for column in assignments)
                connection.execute(f"UPDATE runs SET {columns} WHERE name = ?", (*assignments.values(), name))
                return _run(_select_run(connection, name))

        return await self._store.call(work)

    async def list(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        owner: str | None = None,
        portfolio_id: str | None = None,
        states: Collection[RunState] | None = None,
        with_result: bool = True,
        max_bytes: int = MAX_PAGE_BYTES,
    ) -> RunPage:
        """One page of runs, newest first (ties by name), optionally filtered by owner, portfolio and state.

        ``page_size`` 0 means the default (50); larger than 1000 is coerced to 1000; negative is
        ``InvalidArgument``. A page also ends before its stored configs and results (results only
        ``with_result``) pass ``max_bytes``, though it always holds at least one run. The token is signed
        and bound to the filter: a tampered token, or one used with a different filter, is
        ``InvalidArgument``.
        """
        if page_size < 0:
            raise InvalidArgument(
                "page_size must not be negative.", [("page_size", "must be >= 0")], reason="FIELD_INVALID"
            )
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        state_values = sorted({RunState(state).value for state in states}) if states else []
        filter_hash = _filter_hash(owner, portfolio_id, state_values)
        scope = f"runs:{filter_hash}"
        after = _page_key(page_tokens.verify(self._page_secret, scope, page_token)) if page_token else None
        columns = _RUN_COLUMNS if with_result else _RUN_COLUMNS_WITHOUT_RESULT

        def work(connection: sqlite3.Connection) -> tuple[list[Sequence[Any]], bool]:
            clauses: list[str] = []
            parameters: list[Any] = []
            if owner is not None:
                clauses.append("owner = ?")
                parameters.append(owner)
            if portfolio_id is not None:
                clauses.append("portfolio_id = ?")
                parameters.append(portfolio_id)
            if state_values:
                clauses.append(f"state IN ({', '.join('?' * len(state_values))})")
                parameters.extend(state_values)
            if after is not None:
                clauses.append("(create_us < ? OR (create_us = ? AND name > ?))")
                parameters.extend([after[0], after[0], after[1]])
            where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
            cursor = connection.execute(
                f"SELECT {columns} FROM runs {where} ORDER BY create_us DESC, name ASC LIMIT ?",
                (*parameters, size + 1),
            )
            rows: list[Sequence[Any]] = []
            read = 0
            for row in cursor:  # one row at a time: a page never reads much beyond its byte budget
                read += len(row[_CONFIG]) + len(row[_RESULT] or b"")
                if len(rows) == size or (rows and read > max_bytes):
                    return rows, True
                rows.append(row)
            return rows, False

        rows, more = await self._store.call(work)
        runs = [_run(row) for row in rows]
        if not more:
            return RunPage(runs, "")
        last = rows[-1]
        return RunPage(runs, page_tokens.sign(self._page_secret, scope, [last[_CREATE_US], last[0]]))

    async def purge_expired(self) -> int:
        """Delete runs ``RUN_RETENTION`` after they ended and forget request ids older than
        ``REQUEST_ID_RETENTION``; returns how many runs were deleted."""

        def work(connection: sqlite3.Connection) -> int:
            now = _now_us()
            with transaction(connection):
                deleted = connection.execute(
                    "DELETE FROM runs WHERE end_us IS NOT NULL AND end_us < ?", (now - _us(RUN_RETENTION),)
                ).rowcount
                connection.execute(
                    "UPDATE runs SET request_id = NULL, request_hash = NULL "
                    "WHERE request_id IS NOT NULL AND create_us < ?",
                    (now - _us(REQUEST_ID_RETENTION),),
                )
                return deleted

        return await self._store.call(work)

    async def mark_unfinished_interrupted(self) -> int:
        """At start-up: every PENDING or RUNNING run (left by a previous process) becomes INTERRUPTED."""

        def work(connection: sqlite3.Connection) -> int:
            with transaction(connection):
                now = _now_us()
                cursor = connection.execute(
                    "UPDATE runs SET state = ?, update_us = ?, end_us = ? WHERE state IN (?, ?)",
                    (RunState.INTERRUPTED.value, now, now, *(state.value for state in UNFINISHED)),
                )
                return cursor.rowcount

        return await self._store.call(work)


def _page_key(payload: list[Any]) -> tuple[int, str]:
    create_us, name = payload
    return int(create_us), str(name)


def _select_run(connection: sqlite3.Connection, name: str) -> Sequence[Any]:
    row = connection.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise simulation_not_found(name)
    return row  # type: ignore[no-any-return]


def simulation_not_found(name: str) -> NotFound:
    """The error for a run that does not exist, or that the caller may not see (the two look the same)."""
    return NotFound(f"Simulation {name} does not exist.", reason="SIMULATION_NOT_FOUND", metadata={"name": name})


def _select_request(
    connection: sqlite3.Connection, owner: str, request_id: str, request_hash: str | None
) -> RunRecord | None:
    query = f"SELECT {_RUN_COLUMNS} FROM runs WHERE owner = ? AND request_id = ?"
    row = connection.execute(query, (owner, request_id)).fetchone()
    if row is None:
        return None
    return _first_use(_run(row), request_id, request_hash)


class _Requested(Protocol):
    request_hash: str | None


RecordT = TypeVar("RecordT", bound=_Requested)


def _first_use(existing: RecordT, request_id: str, request_hash: str | None) -> RecordT:
    """The record ``request_id`` was first used for, if this is the same request (AIP-155); otherwise
    REQUEST_ID_REUSED."""
    if request_hash and existing.request_hash and request_hash != existing.request_hash:
        raise InvalidArgument(
            f"request_id {request_id} was already used with a different request.",
            [("request_id", "already used with a different request")],
            reason="REQUEST_ID_REUSED",
            metadata={"request_id": request_id},
        )
    return existing


def _filter_hash(owner: str | None, portfolio_id: str | None, states: list[str]) -> str:
    filters = {"owner": owner, "portfolio_id": portfolio_id, "states": states}
    canonical = json.dumps(filters, sort_keys=True).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


# --- Events ------------------------------------------------------------------------------------


class EventLog:
    """An append-only log of opaque events with monotonically increasing integer cursors.

    Cursors are never reused, even after pruning (``AUTOINCREMENT``), so a subscriber can resume after
    the last cursor it saw, across restarts. ``bounds`` tells whether the events after a cursor are still
    all there (``first > cursor + 1`` means some were pruned).
    """

    def __init__(self, store: Store):
        self._store = store

    async def append(self, payload: bytes, *, topic: str = "") -> int:
        """Store one event; returns its cursor."""
        return (await self.append_many([payload], topic=topic))[0]

    async def append_many(self, payloads: Sequence[bytes], *, topic: str = "") -> list[int]:
        """Store several events in one transaction; returns their cursors, in order."""

        def work(connection: sqlite3.Connection) -> list[int]:
            with transaction(connection):
                now = _now_us()
                cursors = []
                for payload in payloads:
                    cursor = connection.execute(
                        "INSERT INTO events (topic, payload, create_us) VALUES (?, ?, ?)",
                        (topic, payload, now),
                    )
                    cursors.append(int(cursor.lastrowid or 0))
                return cursors

        return await self._store.call(work)

    async def read_after(
        self, cursor: int, *, limit: int = 100, topic: str | None = None
    ) -> list[EventRecord]:
        """Up to ``limit`` events with a cursor greater than ``cursor``, oldest first."""
        if limit <= 0:
            raise ValueError("limit must be positive")

        def work(connection: sqlite3.Connection) -> list[EventRecord]:
            topic_clause = "AND topic = ?" if topic is not None else ""
            parameters: tuple[Any, ...] = (cursor, topic, limit) if topic is not None else (cursor, limit)
            rows = connection.execute(
                f"SELECT cursor, topic, payload, create_us FROM events WHERE cursor > ? {topic_clause} "
                "ORDER BY cursor LIMIT ?",
                parameters,
            ).fetchall()
            return [EventRecord(row[0], row[1], row[2], _time(row[3])) for row in rows]  # type: ignore[arg-type]

        return await self._store.call(work)

    async def bounds(self) -> tuple[int, int]:
        """``(first, last)`` cursor still stored; ``(0, 0)`` when the log is empty."""

        def work(connection: sqlite3.Connection) -> tuple[int, int]:
            first, last = connection.execute("SELECT MIN(cursor), MAX(cursor) FROM events").fetchone()
            return int(first or 0), int(last or 0)

        return await self._store.call(work)

    async def prune(self, *, max_age: timedelta | None = None, max_count: int | None = None) -> int:
        """Delete events older than ``max_age`` and all but the newest ``max_count``; returns how many."""
        if max_count is not None and max_count < 0:
            raise ValueError("max_count must not be negative")

        def work(connection: sqlite3.Connection) -> int:
            deleted = 0
            with transaction(connection):
                if max_age is not None:
                    cutoff = _now_us() - _us(max_age)
                    deleted += connection.execute(
                        "DELETE FROM events WHERE create_us < ?", (cutoff,)
                    ).rowcount
                if max_count is not None:
                    deleted += connection.execute(
                        "DELETE FROM events WHERE cursor <= "
                        "(SELECT cursor FROM events ORDER BY cursor DESC LIMIT 1 OFFSET ?)",
                        (max_count,),
                    ).rowcount
            return deleted

        return await self._store.call(work)


@dataclass(frozen=True)
class OptimizationRecord:
    optimization_id: str
    owner: str  # "" for an automatic re-optimisation
    portfolio_id: str
    automatic: bool
    sent: bool
    body: bytes  # a serialised Optimization
    create_time: datetime


class OptimizationStore:
    """Finished optimisations by ``optimization_id``; marking one sent and queueing its pushes (the outbox's
    ``enqueue``) happen in one transaction."""

    _COLUMNS = "optimization_id, owner, portfolio_id, automatic, sent, body, create_us"

    def __init__(self, store: Store):
        self._store = store

    async def save(self, record: OptimizationRecord) -> None:
        def work(connection: sqlite3.Connection) -> None:
            with transaction(connection):
                connection.execute(
                    f"INSERT INTO optimizations ({self._COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (record.optimization_id, record.owner, record.portfolio_id, int(record.automatic),
                     int(record.sent), record.body, int(record.create_time.timestamp() * 1_000_000)),
                )

        await self._store.call(work)

    async def mark_sent(self, optimization_id: str, portfolio_id: str,
                        queue: Callable[[sqlite3.Connection], bytes]) -> None:
        """In one transaction: ``queue(connection)`` queues the pushes and returns the optimisation's new body
        (with its deliveries), which is stored, and the optimisation is marked sent for ``portfolio_id``."""

        def work(connection: sqlite3.Connection) -> None:
            with transaction(connection):
                body = queue(connection)
                connection.execute(
                    "UPDATE optimizations SET sent = 1, body = ?, portfolio_id = ? WHERE optimization_id = ?",
                    (body, portfolio_id, optimization_id))

        await self._store.call(work)

    async def get(self, optimization_id: str) -> OptimizationRecord | None:
        def work(connection: sqlite3.Connection) -> OptimizationRecord | None:
            row = connection.execute(f"SELECT {self._COLUMNS} FROM optimizations WHERE optimization_id = ?",
                                     (optimization_id,)).fetchone()
            return None if row is None else _optimization(row)

        return await self._store.call(work)

    async def last_sent(self, portfolio_id: str) -> OptimizationRecord | None:
        """The newest optimisation of ``portfolio_id`` whose recommendation was sent."""

        def work(connection: sqlite3.Connection) -> OptimizationRecord | None:
            row = connection.execute(
                f"SELECT {self._COLUMNS} FROM optimizations WHERE portfolio_id = ? AND sent = 1 "
                "ORDER BY create_us DESC LIMIT 1", (portfolio_id,)).fetchone()
            return None if row is None else _optimization(row)

        return await self._store.call(work)

    async def purge_expired(self, *, now: datetime | None = None) -> int:
        """Delete optimisations ``OPTIMIZATION_RETENTION`` after they finished, except the last one sent for
        each portfolio (automatic re-optimisation compares with it); returns how many were deleted."""
        moment = now or datetime.now(UTC)
        cutoff = int((moment - OPTIMIZATION_RETENTION).timestamp() * 1_000_000)

        def work(connection: sqlite3.Connection) -> int:
            with transaction(connection):
                return connection.execute(
                    "DELETE FROM optimizations WHERE create_us < ? AND optimization_id NOT IN ("
                    "SELECT (SELECT o.optimization_id FROM optimizations o WHERE o.portfolio_id = p.portfolio_id "
                    "AND o.sent = 1 ORDER BY o.create_us DESC LIMIT 1) FROM optimizations p WHERE p.sent = 1 "
                    "GROUP BY p.portfolio_id)", (cutoff,)).rowcount

        return await self._store.call(work)


# --- Studies -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyRecord:
    name: str
    owner: str
    kind: str  # server/studies/kinds.py
    state: RunState
    progress_done: int
    progress_total: int
    spec: bytes  # the accepted Study message, without result
    result: bytes | None
    error: bytes | None
    request_id: str | None
    request_hash: str | None
    create_time: datetime
    update_time: datetime
    start_time: datetime | None
    end_time: datetime | None


_STUDY_COLUMN_NAMES = (
    "name", "owner", "kind", "state", "progress_done", "progress_total", "spec", "result", "error", "request_id",
    "request_hash", "create_us", "update_us", "start_us", "end_us",
)  # fmt: skip
_STUDY_COLUMNS = ", ".join(_STUDY_COLUMN_NAMES)


def _study(row: Sequence[Any]) -> StudyRecord:
    values = dict(zip(_STUDY_COLUMN_NAMES, row, strict=True))
    values["state"] = RunState(values["state"])
    for key in ("create", "update", "start", "end"):
        values[f"{key}_time"] = _time(values.pop(f"{key}_us"))
    return StudyRecord(**values)


def study_not_found(name: str) -> NotFound:
    """The error for a study that does not exist, or that the caller may not see (the two look the same)."""
    return NotFound(f"Study {name} does not exist.", reason="STUDY_NOT_FOUND", metadata={"name": name})


class StudyStore:
    """Study jobs, with the rules of ``RunStore``: per-owner idempotent creation, compare-and-set updates,
    signed page tokens, retention, and INTERRUPTED for what a previous process left unfinished."""

    def __init__(self, store: Store, page_secret: bytes):
        self._store = store
        self._page_secret = page_secret

    async def create(self, name: str, spec: bytes, *, owner: str, kind: str, progress_total: int,
                     request_id: str | None, request_hash: str | None) -> tuple[StudyRecord, bool]:
        """Insert a PENDING study; a ``request_id`` the owner used before returns that study (``created``
        False), or ``InvalidArgument`` (REQUEST_ID_REUSED) when the request differs."""

        def work(connection: sqlite3.Connection) -> tuple[StudyRecord, bool]:
            with transaction(connection):
                if request_id is not None:
                    existing = _select_study_request(connection, owner, request_id, request_hash)
                    if existing is not None:
                        return existing, False
                now = _now_us()
                connection.execute(
                    "INSERT INTO studies (name, owner, kind, request_id, request_hash, state, progress_total, spec, "
                    "create_us, update_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, owner, kind, request_id, request_hash, RunState.PENDING.value, progress_total, spec, now,
                     now),
                )
                return _study(_select_study(connection, name)), True

        return await self._store.call(work)

    async def find_request(self, owner: str, request_id: str, request_hash: str | None) -> StudyRecord | None:
        return await self._store.call(
            lambda connection: _select_study_request(connection, owner, request_id, request_hash))

    async def get(self, name: str) -> StudyRecord:
        return await self._store.call(lambda connection: _study(_select_study(connection, name)))

    async def update(self, name: str, *, state: RunState | None = None, progress_done: int | None = None,
                     result: bytes | None = None, error: bytes | None = None) -> StudyRecord:
        """Change the given fields; entering RUNNING stamps the start, a terminal state the end."""

        def work(connection: sqlite3.Connection) -> StudyRecord:
            with transaction(connection):
                current = _study(_select_study(connection, name))
                now = _now_us()
                assignments: dict[str, Any] = {"update_us": now}
                if state is not None:
                    assignments["state"] = state.value
                    if state is RunState.RUNNING and current.start_time is None:
                        assignments["start_us"] = now
                    if state.terminal:
                        assignments["end_us"] = now
                if progress_done is not None:
                    assignments["progress_done"] = progress_done
                if result is not None:
                    assignments["result"] = result
                if error is not None:
                    assignments["error"] = error
                columns = ", ".join(f"{column} = ?" for column in assignments)
                connection.execute(f"UPDATE studies SET {columns} WHERE name = ?", (*assignments.values(), name))
                return _study(_select_study(connection, name))

        return await self._store.call(work)

    async def list(self, *, owner: str | None, states: Collection[RunState] = (), page_size: int = 0,
                   page_token: str = "") -> tuple[list[StudyRecord], str]:
        """One page of studies without results, newest first; same paging rules as ``RunStore.list``."""
        if page_size < 0:
            raise InvalidArgument(
                "page_size must not be negative.", [("page_size", "must be >= 0")], reason="FIELD_INVALID")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        state_values = sorted({state.value for state in states})
        scope = f"studies:{_filter_hash(owner, None, state_values)}"
        after = _page_key(page_tokens.verify(self._page_secret, scope, page_token)) if page_token else None

        def work(connection: sqlite3.Connection) -> list[Sequence[Any]]:
            clauses: list[str] = []
            parameters: list[Any] = []
            if owner is not None:
                clauses.append("owner = ?")
                parameters.append(owner)
            if state_values:
                clauses.append(f"state IN ({', '.join('?' * len(state_values))})")
                parameters.extend(state_values)
            if after is not None:
                clauses.append("(create_us < ? OR (create_us = ? AND name > ?))")
                parameters.extend([after[0], after[0], after[1]])
            where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
            columns = _STUDY_COLUMNS.replace("result", "NULL")
            return connection.execute(
                f"SELECT {columns} FROM studies {where} ORDER BY create_us DESC, name ASC LIMIT ?",
                (*parameters, size + 1)).fetchall()

        rows = await self._store.call(work)
        if len(rows) <= size:
            return [_study(row) for row in rows], ""
        last = rows[size - 1]
        token = page_tokens.sign(self._page_secret, scope, [last[_STUDY_COLUMN_NAMES.index("create_us")], last[0]])
        return [_study(row) for row in rows[:size]], token

    async def purge_expired(self) -> int:
        """Delete studies ``RUN_RETENTION`` after they ended; forget request ids after a day."""

        def work(connection: sqlite3.Connection) -> int:
            now = _now_us()
            with transaction(connection):
                deleted = connection.execute("DELETE FROM studies WHERE end_us IS NOT NULL AND end_us < ?",
                                             (now - _us(RUN_RETENTION),)).rowcount
                connection.execute("UPDATE studies SET request_id = NULL, request_hash = NULL "
                                   "WHERE request_id IS NOT NULL AND create_us < ?",
                                   (now - _us(REQUEST_ID_RETENTION),))
                return deleted

        return await self._store.call(work)

    async def mark_unfinished_interrupted(self, created_before: datetime) -> int:
        """Every PENDING or RUNNING study created before ``created_before`` (by a previous process) becomes
        INTERRUPTED."""

        def work(connection: sqlite3.Connection) -> int:
            with transaction(connection):
                now = _now_us()
                return connection.execute(
                    "UPDATE studies SET state = ?, update_us = ?, end_us = ? WHERE state IN (?, ?) AND create_us < ?",
                    (RunState.INTERRUPTED.value, now, now, *(state.value for state in UNFINISHED),
                     int(created_before.timestamp() * 1_000_000)),
                ).rowcount

        return await self._store.call(work)


OPTIMIZATION_RETENTION = timedelta(days=7)  # like finished runs


def _optimization(row: Sequence[Any]) -> OptimizationRecord:
    return OptimizationRecord(row[0], row[1], row[2], bool(row[3]), bool(row[4]), row[5],
                              datetime.fromtimestamp(row[6] / 1_000_000, UTC))


def _select_study(connection: sqlite3.Connection, name: str) -> Sequence[Any]:
    row = connection.execute(f"SELECT {_STUDY_COLUMNS} FROM studies WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise study_not_found(name)
    return row  # type: ignore[no-any-return]


def _select_study_request(connection: sqlite3.Connection, owner: str, request_id: str,
                          request_hash: str | None) -> StudyRecord | None:
    row = connection.execute(f"SELECT {_STUDY_COLUMNS} FROM studies WHERE owner = ? AND request_id = ?",
                             (owner, request_id)).fetchone()
    if row is None:
        return None
    return _first_use(_study(row), request_id, request_hash)


# --- Impact analyses ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImpactRecord:
    analysis_id: str
    owner: str
    request_id: str | None
    request_hash: str | None
    analysis: bytes  # a serialised equihome.impact.v1.ImpactAnalysis
    publish_status: bytes | None  # a serialised google.rpc.Status, when a push to Underwriting was asked for
    create_time: datetime


_IMPACT_COLUMNS = "analysis_id, owner, request_id, request_hash, analysis, publish_status, create_us"


def _impact(row: Sequence[Any]) -> ImpactRecord:
    return ImpactRecord(*row[:6], create_time=_time(row[6]))


class ImpactStore:
    """Impact analyses, each stored once per (owner, request_id) (AIP-155)."""

    def __init__(self, store: Store):
        self._store = store

    async def find_request(self, owner: str, request_id: str, request_hash: str | None) -> ImpactRecord | None:
        """The analysis ``owner``'s ``request_id`` stored, if any; ``InvalidArgument`` (REQUEST_ID_REUSED)
        when it was stored for a request with another hash."""
        return await self._store.call(lambda connection: _select_impact_request(connection, owner, request_id,
                                                                                request_hash))

    async def create(self, record: ImpactRecord, loan_id: str, portfolio_id: str,
                     also: Callable[[sqlite3.Connection], None] | None = None) -> tuple[ImpactRecord, bool]:
        """Store ``record``, and run ``also`` (e.g. enqueue its push) in the same transaction; ``(stored
        record, created)``. A request id its owner already used returns the first record, ``also`` not run."""

        def work(connection: sqlite3.Connection) -> tuple[ImpactRecord, bool]:
            with transaction(connection):
                if record.request_id is not None:
                    existing = _select_impact_request(connection, record.owner, record.request_id,
                                                      record.request_hash)
                    if existing is not None:
                        return existing, False
                connection.execute(
                    f"INSERT INTO impact_analyses ({_IMPACT_COLUMNS}, loan_id, portfolio_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.analysis_id, record.owner, record.request_id, record.request_hash, record.analysis,
                     record.publish_status, int(record.create_time.timestamp() * 1e6), loan_id, portfolio_id))
                if also is not None:
                    also(connection)
                return record, True

        return await self._store.call(work)


def _select_impact_request(connection: sqlite3.Connection, owner: str, request_id: str,
                           request_hash: str | None) -> ImpactRecord | None:
    row = connection.execute(f"SELECT {_IMPACT_COLUMNS} FROM impact_analyses WHERE owner = ? AND request_id = ?",
                             (owner, request_id)).fetchone()
    if row is None:
        return None
    return _first_use(_impact(row), request_id, request_hash)
