"""Secrets stay private on disk (issue 10 item 3), checked as non-root users: an agent run
as one user keeps its data directory 0700 and every file in it 0600 (the SQLite WAL, which
holds the CA key, included), so another user can read none of it; a data directory that
others can enter is refused at start with the fix named, as ssh does."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from tether.testing.agent import start_tether, write_acl_config

AGENT_UID = 65534      # nobody: the user the agent runs as
ATTACKER_UID = 65533   # another unprivileged user on the same node (no passwd entry needed)
MANAGEMENT = "11111111-2222-3333-4444-555555555555"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="running as two different users needs root and setpriv")


def as_user(uid: int) -> tuple[str, ...]:
    return ("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups")


def attacker_reads(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*as_user(ATTACKER_UID), "cat", str(path)], capture_output=True, text=True, timeout=30)


@pytest.fixture
def node_dir():
    """A directory every user may traverse (as /var/lib is), owned by the agent's user:
    only the data directory's own modes can keep others out of it."""
    root = Path(tempfile.mkdtemp(prefix="tether-modes-"))
    root.chmod(0o755)
    os.chown(root, AGENT_UID, AGENT_UID)
    yield root
    shutil.rmtree(root)


def write_config(root: Path) -> Path:
    conf = write_acl_config(root, MANAGEMENT, enable_token_persistence=True)
    os.chown(conf, AGENT_UID, AGENT_UID)
    return conf


def start_as_agent_user(data: Path, conf: Path):
    return start_tether("agent", "-dev", "-node", "n1", "-no-managed-proxies", "-data-dir", str(data),
                        "-config-file", str(conf), prefix=as_user(AGENT_UID))


def test_another_user_can_read_nothing_the_agent_wrote(node_dir):
    data, conf = node_dir / "data", write_config(node_dir)
    agent = start_as_agent_user(data, conf)
    try:
        api = httpx.Client(base_url=agent.url, headers={"X-Consul-Token": MANAGEMENT}, timeout=10)
        api.put("/v1/agent/token/default", json={"Token": MANAGEMENT}).raise_for_status()  # agent-tokens file
        api.put("/v1/agent/service/register", json={"Name": "web", "Port": 1}).raise_for_status()  # service tokens
        assert "PRIVATE KEY" in api.get("/v1/agent/connect/ca/leaf/web").json()["PrivateKeyPEM"]
        files = sorted(p for p in data.rglob("*") if p.is_file())
        names = {p.name for p in files}
        assert {"state.db", "state.db-wal", "state.db-shm", "node-id", "service-tokens.json"} <= names, names
        assert any("token" in n and n != "service-tokens.json" for n in names), names
        # The WAL is where the CA key sits in clear: the file this test is about.
        assert b"PRIVATE KEY" in (data / "state.db-wal").read_bytes()
        st = data.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (AGENT_UID, 0o700)
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == dict.fromkeys(names, 0o600)
        assert all(p.stat().st_uid == AGENT_UID for p in files)

        listing = subprocess.run([*as_user(ATTACKER_UID), "ls", str(data)], capture_output=True, text=True,
                                 timeout=30)
        assert listing.returncode != 0 and "Permission denied" in listing.stderr
        # Even with the directory opened (an operator's chmod 711), the files keep others out.
        data.chmod(0o711)
        try:
            for path in files:
                r = attacker_reads(path)
                assert r.returncode != 0 and "Permission denied" in r.stderr, (path, r.stdout[:80])
            # ... and the same user reads them: the refusals above are the modes', not the paths'.
            r = subprocess.run([*as_user(AGENT_UID), "cat", str(data / "node-id")], capture_output=True, timeout=30)
            assert r.returncode == 0 and r.stdout.strip()
        finally:
            data.chmod(0o700)
    finally:
        agent.stop()


def test_a_data_dir_others_can_enter_is_refused_with_the_fix(node_dir):
    data, conf = node_dir / "data", write_config(node_dir)
    start_as_agent_user(data, conf).stop()  # created as it should be
    data.chmod(0o755)                      # then opened, as an older Tether (or a careless chmod) left it
    (data / "node-id").chmod(0o644)
    cmd = [*as_user(AGENT_UID), sys.executable, "-m", "tether.cli.main", "agent", "-dev", "-node", "n1",
           "-no-managed-proxies", "-data-dir", str(data), "-config-file", str(conf), "-http-port", "0",
           "-dns-port", "-1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.splitlines() == [f"tether: -data-dir {data} is open to other users (mode 0755) and holds the "
                                     f"CA key and tokens: chmod 700 {data}"]
    data.chmod(0o700)  # the fix it names works, and the file left open is narrowed
    agent = start_as_agent_user(data, conf)
    try:
        assert stat.S_IMODE((data / "node-id").stat().st_mode) == 0o600
        assert any("node-id was readable by other users" in line for line in agent.log)
    finally:
        agent.stop()
