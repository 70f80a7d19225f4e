"""A 20,000-connection idle flood on a managed sidecar's public listener (issue 10, item 5):
its descriptors stay under the cap plus its working set, its RSS under 64 MB, and a real
client's connections through the mesh keep succeeding all along.

The flood comes from two helper processes (a process may hold 20,000 descriptors here),
on loopback only, bounded in count (FLOOD) and in time (FLOOD_SECONDS); its sockets close
with SO_LINGER 0, so it leaves no TIME_WAIT behind for other tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import pytest

from proxy_kit import DEADLINE, Mesh, metric_value, metrics, roundtrip, wait_for
from tether.core.admission import DEFAULT_MAX_PENDING_HANDSHAKES

FLOOD = 20_000
WORKERS = 2
FLOOD_SECONDS = 60.0
RSS_LIMIT_MB = 64
#: Descriptors a sidecar may need besides the pending handshakes: a real client's connection
#: and its dial to the app, an admin scrape, a watch reconnecting to the agent.
WORKING_SET = 32

# Opens N connections to HOST:PORT without a byte, waits until the kernel says each is
# connected (or the deadline), prints OPENED, holds them until stdin closes.
FLOOD_WORKER = """
import selectors, socket, struct, sys, time
host, port, n, deadline = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), time.monotonic() + float(sys.argv[4])
sel, socks = selectors.DefaultSelector(), []
for _ in range(n):
    s = socket.socket()
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.connect_ex((host, port))
    socks.append(s)
    sel.register(s, selectors.EVENT_WRITE)
connected = 0
while connected < n and time.monotonic() < deadline:
    for key, _ in sel.select(timeout=0.5):
        sel.unregister(key.fileobj)
        connected += 1
print(f"OPENED {n} CONNECTED {connected}", flush=True)
sys.stdin.read()
for s in socks:
    s.close()
"""


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


class RealClient:
    """Round trips through web's upstream listener, one after another, each on a new connection."""

    def __init__(self, port: int) -> None:
        self.port, self.ok, self.failures = port, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline, n = time.monotonic() + FLOOD_SECONDS + DEADLINE, 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            n += 1
            try:
                got = roundtrip(self.port, b"real %d" % n, timeout=DEADLINE)
            except OSError as e:
                got = e
            if got == b"real %d" % n:
                self.ok += 1
            else:
                self.failures.append(got)
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
def test_an_idle_flood_is_bounded_and_real_clients_get_through():
    mesh = Mesh.start()
    workers: list[subprocess.Popen] = []
    try:
        db = mesh.app()
        db_port = mesh.register("db", db.port)
        up = mesh.port()
        mesh.register("web", 1, upstreams=[{"destination_name": "db", "local_bind_port": up}])
        ready = mesh.ready("db")
        pid = int(ready["pid"])
        mesh.ready("web")
        mesh.healthy("db")
        mesh.flowing(up)
        base_fds = _fds(pid)

        def shed() -> float:
            return metric_value(metrics(ready["admin"]), "tether_proxy_handshake_failures_total",
                                direction="inbound", reason="shed-under-pressure")

        client = RealClient(up)
        wait_for("a first real round trip", lambda: client.ok)
        before = client.ok

        per_worker = FLOOD // WORKERS
        workers = [subprocess.Popen([sys.executable, "-c", FLOOD_WORKER, "127.0.0.1", str(db_port), str(per_worker),
                                     str(FLOOD_SECONDS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                   for _ in range(WORKERS)]
        peak_fds = peak_rss = 0.0
        deadline = time.monotonic() + FLOOD_SECONDS
        while time.monotonic() < deadline:  # sample while the sidecar works through the flood
            peak_fds, peak_rss = max(peak_fds, _fds(pid)), max(peak_rss, _rss_mb(pid))
            if shed() >= FLOOD * 0.9:
                break
            time.sleep(0.05)
        for w in workers:
            w.stdin.close()
        opened = [w.stdout.read() for w in workers]
        during = client.ok - before
        client.stop()

        assert all(f"CONNECTED {per_worker}" in line for line in opened), opened  # the whole flood got in
        assert shed() >= FLOOD * 0.9, "the flood was not shed under pressure"
        assert peak_fds <= base_fds + DEFAULT_MAX_PENDING_HANDSHAKES + WORKING_SET, (peak_fds, base_fds)
        assert peak_rss < RSS_LIMIT_MB, peak_rss
        assert client.failures == [] and during > 0, (during, client.failures[:5])
        assert any("connections in their handshake (the cap): not accepting until there is room" in line
                   for line in mesh.agent.log)
        wait_for("the sidecar's descriptors back to its working set", lambda: _fds(pid) <= base_fds + WORKING_SET)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
        mesh.close()
