"""The local platform's durable state: one SQLite database, ``<state dir>/state.db``, in WAL mode.

Why SQLite. The local backend is used from several terminals at once (a ``launch --serve`` left
running, a second ``launch``, a ``promote``, a ``runs``) and is killed like any process. Its
state must therefore change in transactions that are atomic, isolated between processes and
durable once committed. SQLite gives exactly that from the standard library: every change below
is one transaction, committed before the emulated call that made it returns; ``BEGIN IMMEDIATE``
serialises writers across processes (which is what keeps model package numbers unique); WAL mode
lets readers (``runs``, ``watch``) read the last committed state while a writer works; and a
``kill -9`` at any instant leaves the database at its last commit (``synchronous=FULL``). Nothing
here is a file format of our own: no JSON files rewritten at exit, no lock files.

What is stored:

``objects``
    The latest version of every object the platform writes to its emulated buckets (run records
    ``runs/<run>/run.json``, evaluation results, model artifacts), with the version id S3 gave it.
``packages``
    The model registry: each package with its group, version number, approval status, the
    ``CreateModelPackage`` request it was created from and its customer metadata (run id,
    metrics). ``UNIQUE(group_name, version)`` backs the numbering.
``resources``
    SageMaker models, endpoint configs and endpoints (the request each was created with, and an
    endpoint's current config and status).
``executions``
    Every workflow execution the local backend started: its name (the run id, or
    ``<run>-deploy-<hash>``), input, status, attempt number, the process that owns it while it
    runs, the states entered so far and, at the end, its outcome. A ``RUNNING`` execution whose
    owner process no longer exists was interrupted (``recover`` marks it ``INTERRUPTED``).
``attempts``
    Earlier attempts of an execution that was interrupted and started again (outcome and run
    record at the time), so a retry never merges into or erases the interrupted attempt.
``quarantine``
    Entries found damaged (unreadable JSON, missing fields): moved here with the reason, named in
    a warning, and skipped, so that one bad entry never stops a command.

The hooks that write through to this store as the emulated services change are in
``finetune/local/durable.py``.

Over 400 lines as one idea: the store's schema and every transaction on it, so that the
rules that keep concurrent terminals consistent (one writer, package numbers, record merges)
are read in one place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "INTERRUPTED",
    "RUNNING",
    "TERMINAL_RECORD_STATUSES",
    "ExecutionRow",
    "PackageRow",
    "StateStore",
    "StoredObject",
    "is_process_alive",
    "process_token",
]

SCHEMA_VERSION = "1"
RUNNING = "RUNNING"
#: Not a Step Functions status: the process that ran the execution ended before it did.
INTERRUPTED = "INTERRUPTED"
#: Run record statuses that end a run (record_run's terminal milestones).
TERMINAL_RECORD_STATUSES = ("completed", "rejected", "failed")
#: How long a writer waits for another process's transaction before giving up.
_BUSY_TIMEOUT_SECONDS = 60.0
_RUN_RECORD_SUFFIX = "/run.json"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    version_id TEXT NOT NULL,
    etag TEXT NOT NULL,
    body BLOB NOT NULL,
    written_at TEXT NOT NULL,
    PRIMARY KEY (bucket, key)
);
CREATE TABLE IF NOT EXISTS packages (
    arn TEXT PRIMARY KEY,
    group_name TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    run_id TEXT,
    spec TEXT NOT NULL,
    metadata TEXT NOT NULL,
    approval_description TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (group_name, version)
);
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS executions (
    name TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    input TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    owner TEXT,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    states TEXT NOT NULL,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS executions_by_run ON executions (run_id, started_at);
CREATE TABLE IF NOT EXISTS attempts (
    name TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT,
    record TEXT,
    ended_at TEXT NOT NULL,
    PRIMARY KEY (name, attempt)
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    entry TEXT NOT NULL,
    reason TEXT NOT NULL,
    content BLOB,
    at TEXT NOT NULL
);
"""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


# -- processes ----------------------------------------------------------------------------------


def process_token(pid: int | None = None) -> str | None:
    """An identity for a live process: its pid and start time, so that a pid reused by another
    process later is not mistaken for it. None when no such process runs (or it is a zombie)."""
    pid = os.getpid() if pid is None else pid
    stat_file = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            fields_after_name = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        if fields_after_name[0] in ("Z", "X"):  # exited, not yet reaped by its parent
            return None
        return f"{pid}:{fields_after_name[19]}"  # field 22 of proc(5): start time
    try:  # no /proc (macOS): the pid alone
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return str(pid)


def is_process_alive(token: str | None) -> bool:
    if not token:
        return False
    try:
        pid = int(token.split(":", 1)[0])
    except ValueError:
        return False
    return process_token(pid) == token


# -- rows -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    version_id: str
    etag: str
    body: bytes


@dataclass(frozen=True)
class PackageRow:
    arn: str
    group_name: str
    version: int
    status: str
    spec: dict[str, Any]
    metadata: dict[str, str]
    approval_description: str | None
    created_at: str


@dataclass
class ExecutionRow:
    name: str
    run_id: str
    kind: str  # run | deploy | undeploy
    input: str
    status: str
    attempt: int
    owner: str | None
    started_at: str
    updated_at: str
    states: list[str] = field(default_factory=list)
    outcome: dict[str, Any] | None = None

    @property
    def owner_pid(self) -> int | None:
        try:
            return int((self.owner or "").split(":", 1)[0])
        except ValueError:
            return None

    @property
    def live(self) -> bool:
        """Running, in a process that still exists."""
        return self.status == RUNNING and is_process_alive(self.owner)


class DamagedStateError(RuntimeError):
    """The database file itself cannot be read."""


# -- the store ----------------------------------------------------------------------------------


class StateStore:
    """The database of one state folder. Thread-safe (one connection, one lock); every public
    method that writes is one transaction. ``warnings`` collects what was found damaged."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.warnings: list[str] = []
        self._lock = threading.RLock()
        self._depth = 0
        self._connection_: sqlite3.Connection | None = None

    @property
    def exists(self) -> bool:
        return self._connection_ is not None or self.path.exists()

    def _connection_for(self, *, write: bool) -> sqlite3.Connection | None:
        """The connection, opened on first use. Reading a store that does not exist yet reads
        nothing and creates nothing: only the first write creates the file."""
        with self._lock:
            if self._connection_ is None:
                if not write and not self.path.exists():
                    return None
                self._connection_ = self._open()
            return self._connection_

    @property
    def _connection(self) -> sqlite3.Connection:
        connection = self._connection_for(write=True)
        assert connection is not None
        return connection

    # -- connection ---------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect()
        except sqlite3.DatabaseError as error:
            if not _is_damage(error):
                raise
            moved = self._quarantine_file(error)
            self.warnings.append(
                f"{self.path} could not be read ({error}); moved it to {moved.name} and started "
                "an empty state store (the damaged file is kept for recovery)"
            )
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        """A connection in WAL mode with the schema in place. Opening races another process
        that is switching the new file to WAL or checkpointing it as its last connection
        closes: SQLite then answers "database is locked" at once, without waiting through its
        busy handler (measured: 3 runs in 10 of two processes starting together), so the
        open is retried for as long as a writer would wait."""
        deadline = time.monotonic() + _BUSY_TIMEOUT_SECONDS
        delay = 0.005
        while True:
            try:
                return self._connect_once()
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def _connect_once(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path,
            timeout=_BUSY_TIMEOUT_SECONDS,
            isolation_level=None,  # transactions are explicit (BEGIN IMMEDIATE ... COMMIT)
            check_same_thread=False,  # the emulated workflow writes from its own thread
        )
        connection.row_factory = sqlite3.Row
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                connection.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (SCHEMA_VERSION,),
                )
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            version = connection.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
        except BaseException:
            connection.close()
            raise
        if version is None or version[0] != SCHEMA_VERSION:
            connection.close()
            raise DamagedStateError(
                f"{self.path}: schema version {version[0] if version else None!r}, "
                f"expected {SCHEMA_VERSION!r} (written by another version of this tool)"
            )
        return connection

    def _quarantine_file(self, error: Exception) -> Path:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        moved = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                source.replace(Path(f"{moved}{suffix}"))
        return moved

    def close(self) -> None:
        with self._lock:
            if self._connection_ is not None:
                self._connection_.close()
                self._connection_ = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (nested calls join the outer one). ``BEGIN IMMEDIATE`` takes
        the database's write lock at once, so what is read inside is not changed by another
        process before the commit."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._connection
                finally:
                    self._depth -= 1
                return
            self._connection.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._connection
            except BaseException:
                self._depth = 0
                self._connection.execute("ROLLBACK")
                raise
            self._depth = 0
            self._connection.execute("COMMIT")

    def _read(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            connection = self._connection_for(write=False)
            if connection is None:
                return []
            return list(connection.execute(sql, parameters).fetchall())

    def _quarantine(self, entry: str, reason: str, content: bytes | str | None) -> None:
        """Record a damaged entry (inside the caller's transaction) and warn about it."""
        self._connection.execute(
            "INSERT INTO quarantine (entry, reason, content, at) VALUES (?, ?, ?, ?)",
            (entry, reason, content, _now()),
        )
        self.warnings.append(
            f"{self.path}: {entry} is damaged ({reason}); moved it to the quarantine table and "
            "skipped it"
        )

    def meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def quarantined(self) -> list[tuple[str, str]]:
        return [(r["entry"], r["reason"]) for r in self._read("SELECT * FROM quarantine")]

    # -- objects ------------------------------------------------------------------------------

    def put_object(self, obj: StoredObject) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO objects (bucket, key, version_id, etag, body, written_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (obj.bucket, obj.key, obj.version_id, obj.etag, obj.body, _now()),
            )

    def delete_object(self, bucket: str, key: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM objects WHERE bucket = ? AND key = ?", (bucket, key))

    def object_version(self, bucket: str, key: str) -> str | None:
        rows = self._read(
            "SELECT version_id FROM objects WHERE bucket = ? AND key = ?", (bucket, key)
        )
        return str(rows[0]["version_id"]) if rows else None

    def get_object(self, bucket: str, key: str) -> StoredObject | None:
        rows = self._read("SELECT * FROM objects WHERE bucket = ? AND key = ?", (bucket, key))
        return _object(rows[0]) if rows else None

    def objects(self, bucket: str) -> Iterator[StoredObject]:
        """Every object of ``bucket``, in key order (read in pages: bodies can be large)."""
        last = ""
        while True:
            rows = self._read(
                "SELECT * FROM objects WHERE bucket = ? AND key > ? ORDER BY key LIMIT 64",
                (bucket, last),
            )
            if not rows:
                return
            for row in rows:
                yield _object(row)
            last = rows[-1]["key"]

    def object_keys(self, bucket: str, prefix: str) -> list[str]:
        rows = self._read(
            "SELECT key FROM objects WHERE bucket = ? AND substr(key, 1, ?) = ? ORDER BY key",
            (bucket, len(prefix), prefix),
        )
        return [str(r["key"]) for r in rows]

    def run_records(self) -> dict[str, dict[str, Any]]:
        """Every readable run record (``runs/<run id>/run.json`` in any bucket) by run id;
        damaged ones are quarantined (and named in ``warnings``)."""
        rows = self._read(
            "SELECT bucket, key, body FROM objects WHERE key >= 'runs/' AND key < 'runs0'"
        )
        records: dict[str, dict[str, Any]] = {}
        for row in rows:
            parts = str(row["key"]).split("/")
            if len(parts) != 3 or parts[2] != "run.json":
                continue
            record = self._parse_record(row["bucket"], str(row["key"]), bytes(row["body"]))
            if record is not None:
                records[parts[1]] = record
        return records

    def run_record(self, run_id: str) -> dict[str, Any] | None:
        """The run record of ``run_id`` (compared as a string, never as a pattern)."""
        key = f"runs/{run_id}{_RUN_RECORD_SUFFIX}"
        rows = self._read("SELECT bucket, body FROM objects WHERE key = ?", (key,))
        if not rows:
            return None
        return self._parse_record(rows[0]["bucket"], key, bytes(rows[0]["body"]))

    def _parse_record(self, bucket: str, key: str, body: bytes) -> dict[str, Any] | None:
        reason = None
        try:
            record = json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            reason = f"not JSON: {error}"
        else:
            if not isinstance(record, dict) or not isinstance(record.get("run_id"), str):
                reason = "not a run record (no run_id)"
            elif not isinstance(record.get("milestones"), list) or not isinstance(
                record.get("run"), dict
            ):
                reason = "not a run record (no run or milestones)"
        if reason is None:
            return dict(record)
        with self.transaction() as db:
            db.execute("DELETE FROM objects WHERE bucket = ? AND key = ?", (bucket, key))
            self._quarantine(f"object s3://{bucket}/{key}", reason, body)
        return None

    # -- model registry -----------------------------------------------------------------------

    def next_package_version(self, group: str) -> int:
        """The next version number of ``group``; call inside ``transaction()`` and insert the
        package in the same transaction, so no other process can take the number."""
        rows = self._read(
            "SELECT COALESCE(MAX(version), 0) AS v FROM packages WHERE group_name = ?", (group,)
        )
        return int(rows[0]["v"]) + 1

    def insert_package(self, row: PackageRow) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO packages (arn, group_name, version, status, run_id, spec, metadata,"
                " approval_description, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.arn,
                    row.group_name,
                    row.version,
                    row.status,
                    row.metadata.get("run_id"),
                    json.dumps(row.spec, default=str),
                    json.dumps(row.metadata),
                    row.approval_description,
                    row.created_at,
                    _now(),
                ),
            )
            self._bump_packages_revision(db)

    def update_package(
        self,
        arn: str,
        *,
        status: str,
        metadata: dict[str, str],
        approval_description: str | None,
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE packages SET status = ?, metadata = ?, run_id = ?,"
                " approval_description = ?, updated_at = ? WHERE arn = ?",
                (
                    status,
                    json.dumps(metadata),
                    metadata.get("run_id"),
                    approval_description,
                    _now(),
                    arn,
                ),
            )
            self._bump_packages_revision(db)

    @staticmethod
    def _bump_packages_revision(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('packages_revision', '1') ON CONFLICT (key)"
            " DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
        )

    def packages_revision(self) -> int:
        """A number that changes whenever any process changes the registry."""
        rows = self._read("SELECT value FROM meta WHERE key = 'packages_revision'")
        return int(rows[0]["value"]) if rows else 0

    def packages(self) -> list[PackageRow]:
        """Every readable package, oldest first; damaged rows are quarantined."""
        packages = []
        for row in self._read("SELECT * FROM packages ORDER BY group_name, version"):
            try:
                spec = json.loads(row["spec"])
                metadata = json.loads(row["metadata"])
                if not isinstance(spec, dict) or not isinstance(metadata, dict):
                    raise ValueError("spec and metadata must be JSON objects")
            except (ValueError, TypeError) as error:
                with self.transaction() as db:
                    db.execute("DELETE FROM packages WHERE arn = ?", (row["arn"],))
                    self._quarantine(
                        f"model package {row['arn']}", str(error), json.dumps(dict(row))
                    )
                continue
            packages.append(
                PackageRow(
                    arn=row["arn"],
                    group_name=row["group_name"],
                    version=int(row["version"]),
                    status=row["status"],
                    spec=spec,
                    metadata={str(k): str(v) for k, v in metadata.items()},
                    approval_description=row["approval_description"],
                    created_at=row["created_at"],
                )
            )
        return packages

    # -- SageMaker models, endpoint configs, endpoints ----------------------------------------

    def put_resource(self, kind: str, name: str, spec: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO resources (kind, name, spec, updated_at)"
                " VALUES (?, ?, ?, ?)",
                (kind, name, json.dumps(spec, default=str), _now()),
            )

    def delete_resource(self, kind: str, name: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM resources WHERE kind = ? AND name = ?", (kind, name))

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for row in self._read("SELECT * FROM resources WHERE kind = ? ORDER BY name", (kind,)):
            try:
                spec = json.loads(row["spec"])
                if not isinstance(spec, dict):
                    raise ValueError("not a JSON object")
            except ValueError as error:
                with self.transaction() as db:
                    db.execute(
                        "DELETE FROM resources WHERE kind = ? AND name = ?", (kind, row["name"])
                    )
                    self._quarantine(f"{kind} {row['name']}", str(error), row["spec"])
                continue
            found[str(row["name"])] = spec
        return found

    # -- executions ---------------------------------------------------------------------------

    def execution(self, name: str) -> ExecutionRow | None:
        rows = self._read("SELECT * FROM executions WHERE name = ?", (name,))
        return self._execution(rows[0]) if rows else None

    def executions(
        self, *, run_id: str | None = None, kind: str | None = None
    ) -> list[ExecutionRow]:
        """Executions (of ``run_id``, of ``kind``), oldest first; damaged rows quarantined."""
        sql, parameters = "SELECT * FROM executions WHERE 1 = 1", []
        if run_id is not None:
            sql += " AND run_id = ?"
            parameters.append(run_id)
        if kind is not None:
            sql += " AND kind = ?"
            parameters.append(kind)
        rows = self._read(sql + " ORDER BY started_at, name", tuple(parameters))
        return [e for e in (self._execution(r) for r in rows) if e is not None]

    def _execution(self, row: sqlite3.Row) -> ExecutionRow | None:
        try:
            states = json.loads(row["states"])
            outcome = json.loads(row["outcome"]) if row["outcome"] else None
            if not isinstance(states, list) or not (outcome is None or isinstance(outcome, dict)):
                raise ValueError("states must be a list and the outcome an object")
        except (ValueError, TypeError) as error:
            with self.transaction() as db:
                db.execute("DELETE FROM executions WHERE name = ?", (row["name"],))
                self._quarantine(f"execution {row['name']}", str(error), json.dumps(dict(row)))
            return None
        return ExecutionRow(
            name=row["name"],
            run_id=row["run_id"],
            kind=row["kind"],
            input=row["input"],
            status=row["status"],
            attempt=int(row["attempt"]),
            owner=row["owner"],
            started_at=row["started_at"],
            updated_at=row["updated_at"],
            states=[str(s) for s in states],
            outcome=outcome,
        )

    def claim_execution(self, name: str, *, run_id: str, kind: str, execution_input: str) -> int:
        """Record that this process starts execution ``name`` (attempt 1). Call inside
        ``transaction()`` after checking ``execution(name)``; returns the attempt number."""
        now = _now()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO executions (name, run_id, kind, input, status, attempt, owner,"
                " started_at, updated_at, states) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, '[]')",
                (name, run_id, kind, execution_input, RUNNING, process_token(), now, now),
            )
        return 1

    def import_execution(
        self,
        name: str,
        *,
        run_id: str,
        kind: str,
        execution_input: str,
        status: str,
        outcome: dict[str, Any],
    ) -> None:
        """An execution that ended before this store existed (see legacy.py)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO executions (name, run_id, kind, input, status, attempt,"
                " owner, started_at, updated_at, states, outcome)"
                " VALUES (?, ?, ?, ?, ?, 1, NULL, ?, ?, ?, ?)",
                (
                    name,
                    run_id,
                    kind,
                    execution_input,
                    status,
                    "1970-01-01T00:00:00+00:00",
                    "1970-01-01T00:00:00+00:00",
                    json.dumps(outcome.get("states") or []),
                    json.dumps(outcome, default=str),
                ),
            )

    def retry_execution(self, previous: ExecutionRow, *, record: dict[str, Any] | None) -> int:
        """Start the next attempt of an interrupted execution: the interrupted attempt (its
        outcome so far and the run record it left) moves to ``attempts``."""
        now = _now()
        attempt = previous.attempt + 1
        outcome = previous.outcome or {"states": previous.states}
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO attempts (name, attempt, status, outcome, record,"
                " ended_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    previous.name,
                    previous.attempt,
                    INTERRUPTED,
                    json.dumps(outcome, default=str),
                    json.dumps(record, default=str) if record is not None else None,
                    previous.updated_at,
                ),
            )
            db.execute(
                "UPDATE executions SET status = ?, attempt = ?, owner = ?, started_at = ?,"
                " updated_at = ?, states = '[]', outcome = NULL WHERE name = ?",
                (RUNNING, attempt, process_token(), now, now, previous.name),
            )
        return attempt

    def release_execution(self, name: str, attempt: int) -> None:
        """Undo a claim whose execution could not be started."""
        with self.transaction() as db:
            if attempt == 1:
                db.execute("DELETE FROM executions WHERE name = ?", (name,))
            else:
                db.execute("UPDATE executions SET status = ? WHERE name = ?", (INTERRUPTED, name))

    def attempts(self, name: str) -> list[dict[str, Any]]:
        return [
            {
                "attempt": int(r["attempt"]),
                "status": r["status"],
                "ended_at": r["ended_at"],
            }
            for r in self._read("SELECT * FROM attempts WHERE name = ? ORDER BY attempt", (name,))
        ]

    def update_states(self, name: str, states: list[str]) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE executions SET states = ?, updated_at = ? WHERE name = ? AND owner = ?",
                (json.dumps(states), _now(), name, process_token()),
            )

    def finish_execution(self, name: str, status: str, outcome: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE executions SET status = ?, states = ?, outcome = ?, updated_at = ?"
                " WHERE name = ? AND owner = ?",
                (
                    status,
                    json.dumps(outcome.get("states", [])),
                    json.dumps(outcome, default=str),
                    _now(),
                    name,
                    process_token(),
                ),
            )

    def recover(self) -> list[str]:
        """Mark executions whose process ended while they ran as interrupted; their names."""
        with self._lock:
            stale = [
                row
                for row in self._read(
                    "SELECT name, owner FROM executions WHERE status = ?", (RUNNING,)
                )
                if not is_process_alive(row["owner"])
            ]
            if not stale:
                return []
            with self.transaction() as db:
                for row in stale:
                    db.execute(
                        "UPDATE executions SET status = ? WHERE name = ? AND status = ?"
                        " AND owner IS ?",
                        (INTERRUPTED, row["name"], RUNNING, row["owner"]),
                    )
            return [str(row["name"]) for row in stale]


def _object(row: sqlite3.Row) -> StoredObject:
    return StoredObject(
        bucket=row["bucket"],
        key=row["key"],
        version_id=row["version_id"],
        etag=row["etag"],
        body=bytes(row["body"]),
    )


def _is_damage(error: sqlite3.DatabaseError) -> bool:
    message = str(error).lower()
    return "not a database" in message or "malformed" in message or "corrupt" in message
