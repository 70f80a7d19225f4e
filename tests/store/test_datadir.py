"""The data directory on disk (store/datadir.py, and SQLite's files): created private,
an open one refused, files of ours narrowed. Non-root reads are tested in
tests/integration/test_data_dir_private.py."""

from __future__ import annotations

import os
import stat

import pytest

from tether.core.errors import InvalidInput
from tether.store.base import Entry
from tether.store.datadir import create_private_file, prepare_data_dir
from tether.store.sqlite import SqliteBackend


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask_022():
    """The usual umask, under which files are created 0644 unless we say otherwise."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_data_dir_is_0700(tmp_path, umask_022):
    d = tmp_path / "a" / "data"
    prepare_data_dir(d)
    assert mode(d) == 0o700


def test_an_open_data_dir_is_refused_with_the_fix(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    d.chmod(0o755)
    with pytest.raises(InvalidInput) as info:
        prepare_data_dir(d)
    assert info.value.message == (f"-data-dir {d} is open to other users (mode 0755) and holds the CA key and "
                                  f"tokens: chmod 700 {d}")
    assert mode(d) == 0o755  # the operator's directory is not changed behind their back


def test_files_others_could_read_are_narrowed(tmp_path, umask_022, caplog):
    d = tmp_path / "data"
    d.mkdir(mode=0o700)
    (d / "proxies").mkdir(mode=0o700)
    for name in ("state.db-wal", "node-id", "proxies/web.json"):
        (d / name).write_text("x")
        (d / name).chmod(0o644)
    prepare_data_dir(d)
    assert [mode(d / n) for n in ("state.db-wal", "node-id", "proxies/web.json")] == [0o600] * 3
    assert "state.db-wal was readable by other users (mode 0644); it is now 0600" in caplog.text


def test_sqlite_database_wal_and_shm_are_created_0600(tmp_path, umask_022):
    db = SqliteBackend(tmp_path / "data" / "state.db")
    try:
        db.persist(1, [Entry("ca/key", {"PrivateKey": "secret"}, 1, 1)], [])  # something in the WAL
        files = sorted(p.name for p in (tmp_path / "data").iterdir())
        assert files == ["state.db", "state.db-shm", "state.db-wal"]
        assert {name: mode(tmp_path / "data" / name) for name in files} == dict.fromkeys(files, 0o600)
        assert mode(tmp_path / "data") == 0o700
    finally:
        db.close()


def test_create_private_file_narrows_an_existing_file(tmp_path, umask_022):
    path = tmp_path / "f"
    path.write_text("x")
    create_private_file(path)
    assert mode(path) == 0o600 and path.read_text() == "x"
