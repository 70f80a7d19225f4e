"""`tether snapshot save|restore`: SQLite -> etcd -> SQLite, and bad files refused untouched."""

from __future__ import annotations

import base64
import gzip
import os
import uuid

import httpx
import pytest

from tether.testing.agent import run_cli, start_tether


def _state(url: str) -> tuple[str, str, bytes]:
    cluster = httpx.get(f"{url}/v1/internal/tether/cluster").json()["ClusterID"]
    root = httpx.get(f"{url}/v1/connect/ca/roots").json()["ActiveRootID"]
    value = base64.b64decode(httpx.get(f"{url}/v1/kv/app/greeting").json()[0]["Value"])
    return cluster, root, value


@pytest.mark.slow
def test_sqlite_to_etcd_and_back(etcd_cluster, tmp_path):
    one = start_tether("server", "-data-dir", str(tmp_path / "sqlite"))
    try:
        assert httpx.put(f"{one.url}/v1/kv/app/greeting", content=b"hello").json() is True
        before = _state(one.url)
        snap = tmp_path / "backup.snap"
        saved = run_cli("snapshot", "save", str(snap), addr=one.addr)
        assert saved.returncode == 0, saved.stderr
        assert oct(os.stat(snap).st_mode & 0o777) == "0o600"  # it holds the CA's private key
    finally:
        one.stop()
    url = etcd_cluster.url(f"/snap/{uuid.uuid4().hex}/")
    restored = run_cli("snapshot", "restore", str(snap), "-store", url)
    assert restored.returncode == 0, restored.stderr
    again = run_cli("snapshot", "restore", str(snap), "-store", url)
    assert again.returncode == 2 and "is not empty" in again.stderr
    on_etcd = start_tether("server", "-store", url)
    try:
        assert _state(on_etcd.url) == before  # same cluster, same CA, same data: now on etcd
        back = tmp_path / "from-etcd.snap"
        assert run_cli("snapshot", "save", str(back), addr=on_etcd.addr).returncode == 0
    finally:
        on_etcd.stop()
    assert run_cli("snapshot", "restore", str(back), "-data-dir", str(tmp_path / "new")).returncode == 0
    sqlite_again = start_tether("server", "-data-dir", str(tmp_path / "new"))
    try:
        assert _state(sqlite_again.url) == before
    finally:
        sqlite_again.stop()


@pytest.mark.parametrize("content, why", [
    (b"not gzip at all", "corrupt or truncated"),
    (gzip.compress(b'{"Format": "tether-snapshot", "Version": 99, "Entries": []}'), "newer than this Tether"),
    (gzip.compress(b'{"Format": "other"}'), "no Format: tether-snapshot"),
    (gzip.compress(b'{"Format": "tether-snapshot", "Version": 1, "Entries": [{"Key": 1}]}'), "Entries must be"),
    (gzip.compress(b'{"Format": "tether-snapshot", "Ver')[:-4], "corrupt or truncated"),
])
def test_bad_snapshots_are_refused_before_anything_is_written(tmp_path, content, why):
    bad = tmp_path / "bad.snap"
    bad.write_bytes(content)
    target = tmp_path / "target"
    result = run_cli("snapshot", "restore", str(bad), "-data-dir", str(target))
    assert result.returncode == 2 and why in result.stderr, result.stderr
    assert not target.exists()  # refused before the store was even created
    assert len(result.stderr.strip().splitlines()) == 1
