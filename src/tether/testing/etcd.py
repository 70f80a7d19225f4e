"""A real 3-member etcd cluster on loopback for tests (Debian's etcd-server).

Ports: etcd must be told its client and peer ports in advance (it can bind port 0, but
then it cannot advertise the port to its peers), so each member's two ports are held
ports (tether.testing.ports). Go's listeners set SO_REUSEADDR, so etcd listens on a port
the test still holds: there is no window in which another process can take it, and a
killed member restarts on the same ports.

Members are started and killed by their own PID only (kill -9 is the fault primitive);
`stop()` kills every member this object started.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from tether.testing.agent import RunningAgent, start_tether
from tether.testing.ports import HeldPort, held_port

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def etcd_available() -> bool:
    return os.path.exists(ETCD) and os.path.exists(ETCDCTL)


@dataclass
class Member:
    name: str
    client: HeldPort
    peer: HeldPort
    data_dir: Path
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client.port}"


class EtcdCluster:
    def __init__(self, base: Path, size: int = 3, *, heartbeat_ms: int = 50, election_ms: int = 500,
                 tls: dict[str, Path] | None = None) -> None:
        """`tls`: {"ca", "cert", "key"} PEM files; clients must then present a certificate
        signed by that CA (etcd's --client-cert-auth) over https."""
        self.base = base
        self.tls = tls
        self.heartbeat_ms, self.election_ms = heartbeat_ms, election_ms
        self.members = [Member(f"m{i}", held_port(), held_port(), base / f"m{i}", base / f"m{i}.log")
                        for i in range(size)]
        self.token = f"tether-test-{os.getpid()}-{id(self)}"

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def url(self, prefix: str = "/tether/", *, client: dict[str, Path] | None = None) -> str:
        """The -store URL; `client` adds ca/cert/key files for a TLS cluster."""
        tls = "".join(f"&{k}={v}" for k, v in (client or {}).items())
        return f"etcd://{self.endpoints}?prefix={prefix}{tls}"

    def start(self, timeout: float = 30.0) -> "EtcdCluster":
        for i in range(len(self.members)):
            self.start_member(i)
        self.wait_healthy(timeout)
        return self

    def start_member(self, i: int) -> None:
        m = self.members[i]
        initial = ",".join(f"{o.name}=http://127.0.0.1:{o.peer.port}" for o in self.members)
        m.data_dir.mkdir(parents=True, exist_ok=True)
        scheme = "https" if self.tls else "http"
        client_url, peer_url = f"{scheme}://{m.endpoint}", f"http://127.0.0.1:{m.peer.port}"
        tls = [] if not self.tls else ["--cert-file", str(self.tls["cert"]), "--key-file", str(self.tls["key"]),
                                       "--trusted-ca-file", str(self.tls["ca"]), "--client-cert-auth"]
        m.proc = subprocess.Popen(
            [ETCD, "--name", m.name, "--data-dir", str(m.data_dir),
             "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", initial, "--initial-cluster-token", self.token, "--initial-cluster-state", "new",
             "--heartbeat-interval", str(self.heartbeat_ms), "--election-timeout", str(self.election_ms),
             "--logger", "zap", "--log-level", "warn", *tls],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(m.log, "ab"))

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        m = self.members[i]
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(sig)
            if sig == signal.SIGKILL:
                m.proc.wait(10)
                m.proc = None

    def ctl(self, *args: str, endpoints: str | None = None, timeout: float = 5.0) -> subprocess.CompletedProcess:
        tls = [] if not self.tls else ["--cacert", str(self.tls["ca"]), "--cert", str(self.tls["cert"]),
                                       "--key", str(self.tls["key"])]
        return subprocess.run([ETCDCTL, "--endpoints", endpoints or self.endpoints, "--dial-timeout", "1s",
                               "--command-timeout", "2s", *tls, *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "ETCDCTL_API": "3"})

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every running member answers a linearizable read."""
        deadline = time.monotonic() + timeout
        running = ",".join(m.endpoint for m in self.members if m.proc is not None)
        while True:
            if self.ctl("endpoint", "health", endpoints=running).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd {running} not healthy after {timeout}s; logs in {self.base}")
            time.sleep(0.05)

    def leader(self) -> int:
        """The index of the member that is the Raft leader now."""
        running = [i for i, m in enumerate(self.members) if m.proc is not None]
        out = self.ctl("endpoint", "status", "-w", "json",
                       endpoints=",".join(self.members[i].endpoint for i in running))
        for status in json.loads(out.stdout or "[]"):
            if status["Status"]["leader"] == status["Status"]["header"]["member_id"]:
                port = int(status["Endpoint"].rsplit(":", 1)[1])
                return next(i for i, m in enumerate(self.members) if m.client.port == port)
        raise RuntimeError(f"no etcd leader among {running}: {out.stderr.strip()}")

    def compact_all(self) -> int:
        """Compact history up to the current revision; returns it."""
        status = json.loads(self.ctl("endpoint", "status", "-w", "json").stdout)
        revision = max(s["Status"]["header"]["revision"] for s in status)
        out = self.ctl("compaction", str(revision))
        if out.returncode != 0:
            raise RuntimeError(f"etcdctl compaction failed: {out.stderr.strip()}")
        return revision

    def stop(self) -> None:
        for i in range(len(self.members)):
            self.kill(i)
        for m in self.members:
            m.client.close()
            m.peer.close()


def start_servers(cluster, n: int = 3, *, prefix: str | None = None, extra: tuple[str, ...] = ()) -> list[RunningAgent]:
    """N servers on one fresh key prefix, started at the same time (they race to initialise it)."""
    url = cluster.url(prefix or f"/t/{uuid.uuid4().hex}/")
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: start_tether("server", "-store", url, *extra), range(n)))


def connected_servers(pid: int, servers: list[RunningAgent]) -> list[int]:
    """Indexes of the servers process `pid` holds an established TCP connection to (from `ss`)."""
    out = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True, text=True, check=True).stdout
    ports = {int(m.group(1)) for line in out.splitlines() if f"pid={pid}," in line
             for m in [re.search(r"\s\S+:(\d+)\s+users:", line)] if m}
    return [i for i, s in enumerate(servers) if int(s.url.rsplit(":", 1)[1]) in ports]


class KvWriter(threading.Thread):
    """PUT w/<i> = i, one after another, through `url`; records acknowledged and failed writes."""

    def __init__(self, url: str, limit: int = 2000) -> None:
        super().__init__(daemon=True)
        self.url, self.limit = url, limit
        self.acked: list[int] = []
        self.failed: list[tuple[int, int | str, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=15) as client:
            for i in range(self.limit):
                if self.stop.is_set():
                    return
                try:
                    r = client.put(f"/v1/kv/w/{i}", content=str(i).encode())
                except httpx.HTTPError as exc:
                    self.failed.append((i, type(exc).__name__, str(exc)))
                    continue
                if r.status_code == 200 and r.json() is True:
                    self.acked.append(i)
                else:
                    self.failed.append((i, r.status_code, r.text))
