"""SQLite persistence for the CachedStore: one table of documents plus the revision.

One writer connection, WAL journal. `synchronous=FULL` by default: a transaction is on
disk before the write is acknowledged, so neither kill -9 nor a power cut loses an
acknowledged write (NORMAL would survive kill -9 only; measured cost in DESIGN.md:
0.27 ms vs 0.09 ms per put). Deleted keys stay as tombstone rows (value NULL) so that
the blocking index of a prefix survives a restart.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from tether.core.errors import InvalidInput
from tether.store.base import Entry
from tether.store.cached import CachedStore
from tether.store.datadir import create_private_file, narrow_file

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS docs (
    key TEXT PRIMARY KEY,
    value TEXT,               -- JSON; NULL marks a tombstone
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL
) WITHOUT ROWID;
"""


class SqliteBackend:
    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise InvalidInput(f"sqlite synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The database, and so its -wal and -shm (SQLite gives them its mode), are 0600: the
        # WAL holds the CA's private key in clear (store/datadir.py).
        for leftover in (Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            narrow_file(leftover)
        create_private_file(self.path)
        # check_same_thread=False: persist() runs in a worker thread, serialised by the
        # store's write lock and by our own lock (belt and braces for close()).
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._mutex = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema', ?), ('revision', 0)", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            raise InvalidInput(
                f"{self.path} has store schema {row[0]}, this Tether reads {SCHEMA_VERSION}; "
                "use a matching Tether version or a new -data-dir"
            )

    def load(self) -> tuple[int, list[tuple[str, Any, int, int]]]:
        revision = self._db.execute("SELECT value FROM meta WHERE name='revision'").fetchone()[0]
        rows = [
            (key, None if value is None else json.loads(value), create, modify)
            for key, value, create, modify in self._db.execute(
                "SELECT key, value, create_rev, mod_rev FROM docs"
            )
        ]
        return revision, rows

    def persist(self, revision: int, puts: list[Entry], deletes: list[tuple[str, int]]) -> None:
        with self._mutex:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT OR REPLACE INTO docs VALUES (?, ?, ?, ?)",
                    [
                        (e.key, json.dumps(e.value, separators=(",", ":")), e.create_index, e.modify_index)
                        for e in puts
                    ],
                )
                db.executemany(
                    "UPDATE docs SET value=NULL, mod_rev=? WHERE key=?",
                    [(rev, key) for key, rev in deletes],
                )
                db.execute("UPDATE meta SET value=? WHERE name='revision'", (revision,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._mutex:
            self._db.close()


class SqliteStore(CachedStore):
    """The embedded durable store (the default for `tether server` and `agent -dev -data-dir`)."""

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL") -> None:
        super().__init__(SqliteBackend(path, synchronous=synchronous), run_backend_in_thread=True)


def open_store(data_dir: str | os.PathLike[str] | None) -> CachedStore:
    """The store for a data directory, or an ephemeral memory store when there is none."""
    from tether.store.cached import MemoryStore

    if data_dir is None:
        return MemoryStore()
    return SqliteStore(Path(data_dir) / "state.db")
