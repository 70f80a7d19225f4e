"""Consul's announcement, with a real PostgreSQL (issue 5, point 4):

    tether connect proxy -service mitchellh -upstream postgresql:9191
    psql -h 127.0.0.1 -p 9191

reaches the `postgresql` service through its sidecar when an intention allows
mitchellh -> postgresql, and is refused when none does. PostgreSQL runs as the `postgres`
user (the server refuses root) on a free loopback port, data and socket in a temp dir.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

from proxy_kit import Mesh, start_proxy, stop_proxy, wait_for
from tether.testing.deps import missing
from tether.testing.ports import held_port


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else None


@pytest.fixture(scope="module")
def postgres():
    initdb, server = _pg_bin("initdb"), _pg_bin("postgres")
    if not (initdb and server and shutil.which("psql") and shutil.which("setpriv")):
        pytest.skip(missing("PostgreSQL server, psql or setpriv"))
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip(missing("the 'postgres' system user (Debian's postgresql package makes it)"))
    if os.geteuid() != 0:
        pytest.skip("starting PostgreSQL as the postgres user needs root")
    root = tempfile.mkdtemp(prefix="tether-pg-")
    os.chown(root, user.pw_uid, user.pw_gid)
    data = os.path.join(root, "data")
    as_pg = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups"]
    subprocess.run([*as_pg, initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True, timeout=120)
    held = held_port()  # PostgreSQL is told its port; it listens with SO_REUSEADDR on the held one
    port = held.port
    proc = subprocess.Popen([*as_pg, server, "-D", data, "-p", str(port), "-h", "127.0.0.1", "-k", root,
                             "-c", "fsync=off"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("PostgreSQL to accept connections", lambda: _psql(port, "select 1").returncode == 0)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)
        held.close()
        shutil.rmtree(root, ignore_errors=True)


def _psql(port: int, sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-At", "-c", sql],
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PGCONNECT_TIMEOUT": "5", "PGSSLMODE": "prefer"})


def test_psql_through_an_unregistered_local_proxy(postgres):
    mesh = Mesh.start()
    proxy = None
    try:
        mesh.default_intention("deny")
        mesh.register("postgresql", postgres)
        mesh.ready("postgresql")
        mesh.healthy("postgresql")
        up = mesh.port()
        proxy, ready, log = start_proxy("-service", "mitchellh", "-upstream", f"postgresql:{up}",
                                        addr=mesh.agent.addr)
        assert ready["upstream.postgresql"] == f"127.0.0.1:{up}"

        # no intention allows mitchellh -> postgresql: psql fails, postgresql's sidecar says why
        rec = wait_for("postgresql's sidecar denying mitchellh", lambda: _psql(up, "select 1").returncode != 0
                       and mesh.access_logs(destination="postgresql", result="denied"))[-1]
        assert rec["source"].endswith("/svc/mitchellh")

        mesh.intention("mitchellh", "postgresql", "allow")
        ok = wait_for("psql through the mesh", lambda: (lambda r: r if r.returncode == 0 else None)(
            _psql(up, "select 'hello from ' || current_user")))
        assert ok.stdout.strip() == "hello from postgres"
        assert stop_proxy(proxy) == 0  # SIGTERM drains and exits cleanly
        # the proxy's own access log (stderr, JSON) recorded the session
        assert any('"destination":"postgresql"' in line and '"result":"allowed"' in line for line in log)
    finally:
        if proxy is not None:
            stop_proxy(proxy)
        mesh.close()
