"""Egress gateway SNI passthrough: Tether's gateway vs nginx `ssl_preread`, in one run.

What each path does with one application TLS connection to api.bench.example:

  direct  client --TLS--> backend                                  (the floor)
  nginx   client --TLS--> nginx stream `ssl_preread` (routes on the SNI, never decrypts)
                  --> backend                                      (Istio's extra SNI proxy)
  tether  client --mesh mTLS (SNI api.bench.example) + TETHER-EGRESS preamble + the app's
                  TLS inside--> `tether proxy -gateway egress -config` (verifies the client's
                  SPIFFE ID, checks the inner SNI equals the mesh SNI, decides per source
                  service, routes on the SNI) --> backend

The backend is an nginx stream server terminating TLS in front of a native epoll echo
(bench/native/echo.c). nginx runs one worker (no accept mutex games); the gateway runs
on uvloop with its JSON access log written to a file, as in production. The client is
Python (blocking sockets; TLS-in-TLS for the gateway through an `ssl.SSLObject`), the
same code for every path, so the client-side cost of the mesh layer shows in the tether
row's latency; the proxy's own CPU per operation is measured from /proc.

Metrics per path, each loop bounded in count and time:
  lat   1 connection, 64 B ping-pong: p50 / p99 microseconds
  conn  sequential new connections (every handshake in full) + 1 round trip + close: conn/s
  bulk  1 connection, 64 KiB round trips: MB/s (each direction)
  cpu   proxy CPU microseconds per round trip (lat) and per connection (conn)

Run: `python -m bench` (BENCH=egress) or `python -m bench.egress`. ~1 min. Env overrides:
REPS, LAT_N, LAT_MAX, CONN_N, CONN_MAX, BULK_BYTES, BULK_MAX. Writes bench/results/egress-<date>.json.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import percentile, print_table, write_result
from bench.proxy_chain import HOST, Procs, background_load, build_native, cpu_seconds, free_port, rss_kb

SNI = "api.bench.example"
ENTRY_PORT = 9443  # the registry's port number; the backend's real port is the endpoint's


def env(name: str, default, cast=int):
    return cast(os.environ.get(name, default))


P = dict(REPS=env("REPS", 2), LAT_N=env("LAT_N", 4000), LAT_MAX=env("LAT_MAX", 3.0, float),
         CONN_N=env("CONN_N", 400), CONN_MAX=env("CONN_MAX", 4.0, float), BULK_BYTES=env("BULK_BYTES", 64 << 20),
         BULK_MAX=env("BULK_MAX", 4.0, float))
PATHS = ("direct", "nginx", "tether")
MSG = b"x" * 64
CHUNK = b"y" * 65536


def log(*a) -> None:
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup

def nginx_conf(d: Path, name: str, body: str) -> Path:
    module = "/usr/lib/nginx/modules/ngx_stream_module.so"
    load = f"load_module {module};\n" if Path(module).exists() else ""
    conf = d / f"{name}.conf"
    conf.write_text(f"{load}daemon off;\nworker_processes 1;\npid {d}/{name}.pid;\nerror_log {d}/{name}-error.log warn;\n"
                    f"events {{ worker_connections 4096; }}\nstream {{\n{body}\n}}\n")
    return conf


def write_setup(d: Path, ports: dict[str, int]) -> dict[str, Path]:
    import trustme

    from tether.testing.pki import ThrowawayCA

    ext = trustme.CA()
    ext.cert_pem.write_to_path(str(d / "ext-ca.pem"))
    srv = ext.issue_cert("*.bench.example")
    srv.private_key_and_cert_chain_pem.write_to_path(str(d / "backend.pem"))
    mesh = ThrowawayCA("bench.mesh")
    (d / "mesh-ca.pem").write_text(mesh.root_pem)
    mesh.issue("egress-gateway").write(d, "gateway")
    mesh.issue("web").write(d, "web")
    backend = nginx_conf(d, "backend", f"""  server {{ listen {HOST}:{ports['backend']} ssl backlog=4096;
    ssl_certificate {d}/backend.pem; ssl_certificate_key {d}/backend.pem; ssl_session_tickets off;
    proxy_pass {HOST}:{ports['echo']}; }}""")
    sni = nginx_conf(d, "sni", f"""  map $ssl_preread_server_name $upstream {{
    ~\\.bench\\.example$ {HOST}:{ports['backend']};
    default {HOST}:1;
  }}
  server {{ listen {HOST}:{ports['nginx']} backlog=4096; ssl_preread on; proxy_pass $upstream; }}""")
    (d / "egress.yaml").write_text(f"""apiVersion: tether.dev/v1
kind: ExternalService
metadata: {{name: bench-api}}
spec:
  hosts: ["*.bench.example"]
  ports: [{{number: {ENTRY_PORT}, name: tls, protocol: TLS}}]
  resolution: STATIC
  endpoints: [{{address: {HOST}, ports: {{tls: {ports['backend']}}}}}]
  allowedSources: [web]
---
apiVersion: tether.dev/v1
kind: OutboundPolicy
metadata: {{name: mesh}}
spec: {{mode: REGISTRY_ONLY}}
""")
    gw = d / "gateway.json"
    gw.write_text(json.dumps({
        "service": "egress-gateway", "gateway": f"{HOST}:{ports['tether']}", "egress_file": "egress.yaml",
        "tls": {"cert_file": "gateway.crt", "key_file": "gateway.key", "roots_file": "mesh-ca.pem",
                "spiffe_id": mesh.spiffe_id("egress-gateway")},
        "access_log": {"path": "gateway-access.log", "format": "json"}, "admin": f"{HOST}:{free_port()}",
        "loop": "uvloop"}))
    return {"backend": backend, "sni": sni, "gateway": gw}


# ---------------------------------------------------------------- the client

class Tunnel:
    """The application's TLS carried inside the mesh mTLS connection (what a sidecar sends)."""

    def __init__(self, outer: ssl.SSLSocket, inner: ssl.SSLObject, inc: ssl.MemoryBIO, out: ssl.MemoryBIO) -> None:
        self.outer, self.inner, self.inc, self.out = outer, inner, inc, out

    def _pump(self) -> None:
        if data := self.out.read():
            self.outer.sendall(data)

    def _fill(self) -> None:
        self._pump()
        chunk = self.outer.recv(262144)
        if not chunk:
            raise ConnectionError("gateway closed the tunnel")
        self.inc.write(chunk)

    def handshake(self) -> None:
        while True:
            try:
                self.inner.do_handshake()
                self._pump()
                return
            except ssl.SSLWantReadError:
                self._fill()

    def sendall(self, data: bytes) -> None:
        self.inner.write(data)
        self._pump()

    def recv(self, n: int) -> bytes:
        while True:
            try:
                return self.inner.read(n)
            except ssl.SSLWantReadError:
                self._fill()

    def close(self) -> None:
        self.outer.close()


class Client:
    def __init__(self, d: Path, ports: dict[str, int]) -> None:
        self.ports = ports
        self.app = ssl.create_default_context(cafile=str(d / "ext-ca.pem"))
        self.app.options |= ssl.OP_NO_TICKET  # every connection does the full handshake
        self.mesh = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.mesh.check_hostname = False
        self.mesh.load_verify_locations(str(d / "mesh-ca.pem"))
        self.mesh.load_cert_chain(str(d / "web.crt"), str(d / "web.key"))
        self.preamble = f"TETHER-EGRESS/1 203.0.113.10 {ENTRY_PORT}\r\n".encode()

    def connect(self, path: str):
        raw = socket.create_connection((HOST, self.ports["backend" if path == "direct" else path]), timeout=10)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if path != "tether":
            return self.app.wrap_socket(raw, server_hostname=SNI)
        outer = self.mesh.wrap_socket(raw, server_hostname=SNI)
        outer.sendall(self.preamble)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        t = Tunnel(outer, self.app.wrap_bio(inc, out, server_hostname=SNI), inc, out)
        t.handshake()
        return t


def exchange(conn, data: bytes) -> None:
    conn.sendall(data)
    got = 0
    while got < len(data):
        chunk = conn.recv(min(262144, len(data) - got))
        if not chunk:
            raise ConnectionError("closed mid-exchange")
        got += len(chunk)


def run_lat(client: Client, path: str) -> dict:
    conn = client.connect(path)
    samples, end = [], time.monotonic() + P["LAT_MAX"]
    for _ in range(P["LAT_N"]):
        t0 = time.perf_counter()
        exchange(conn, MSG)
        samples.append((time.perf_counter() - t0) * 1e6)
        if time.monotonic() > end:
            break
    conn.close()
    return {"n": len(samples), "p50_us": percentile(samples, 50), "p99_us": percentile(samples, 99)}


def run_conn(client: Client, path: str) -> dict:
    n, setup, t_start = 0, [], time.monotonic()
    end = t_start + P["CONN_MAX"]
    while n < P["CONN_N"] and time.monotonic() < end:
        t0 = time.perf_counter()
        conn = client.connect(path)
        exchange(conn, MSG)
        conn.close()
        setup.append((time.perf_counter() - t0) * 1e3)
        n += 1
    return {"n": n, "conn_per_s": n / (time.monotonic() - t_start), "p50_ms": percentile(setup, 50)}


def run_bulk(client: Client, path: str) -> dict:
    conn = client.connect(path)
    moved, t0 = 0, time.monotonic()
    while moved < P["BULK_BYTES"] and time.monotonic() - t0 < P["BULK_MAX"]:
        exchange(conn, CHUNK)
        moved += len(CHUNK)
    conn.close()
    return {"bytes": moved, "MBps": moved / 1e6 / (time.monotonic() - t0)}


def measure(client: Client, path: str, pid: int | None) -> dict:
    out = {}
    for metric, fn in (("lat", run_lat), ("conn", run_conn), ("bulk", run_bulk)):
        c0 = cpu_seconds(pid) if pid else 0.0
        res = fn(client, path)
        work = res["n"] if metric != "bulk" else res["bytes"] / 65536
        res["proxy_cpu_us_per_op"] = (cpu_seconds(pid) - c0) / work * 1e6 if pid and work else None
        out[metric] = res
    return out


# ---------------------------------------------------------------- main

def run() -> dict:
    work = Path(tempfile.mkdtemp(prefix="tether-bench-egress-"))
    procs = Procs(work)
    before = background_load()
    try:
        bins = build_native()
        ports = {k: free_port() for k in ("echo", "backend", "nginx", "tether")}
        files = write_setup(work, ports)
        procs.start("echo", [str(bins["echo"]), HOST, str(ports["echo"])], ports["echo"])
        procs.start("backend", ["nginx", "-c", str(files["backend"]), "-p", str(work)], ports["backend"])
        pids = {"direct": None,
                "nginx": procs.start("nginx-sni", ["nginx", "-c", str(files["sni"]), "-p", str(work)], ports["nginx"]),
                "tether": procs.start("tether-gateway", [sys.executable, "-m", "tether.cli.main", "proxy", "-gateway",
                                                        "egress", "-config", str(files["gateway"])], ports["tether"])}
        # nginx -c with worker_processes 1 forks a worker: measure the worker, not the master.
        pids["nginx"] = _worker_of(pids["nginx"])
        client = Client(work, ports)
        for path in PATHS:  # warm up: first handshakes, imports, caches
            run_lat_small(client, path)
        idle_rss = rss_kb(pids["tether"])
        reps: dict[str, list[dict]] = {p: [] for p in PATHS}
        for rep in range(P["REPS"]):
            order = PATHS[rep % 3:] + PATHS[:rep % 3]
            for path in order:
                log(f"rep {rep + 1}/{P['REPS']}: {path}")
                reps[path].append(measure(client, path, pids[path]))
        lines = (work / "gateway-access.log").read_text().splitlines()
        denied = sum('"result":"denied"' in line for line in lines)
        return {"params": P, "reps": reps, "gateway_idle_rss_kb": idle_rss, "gateway_rss_kb_after": rss_kb(pids["tether"]),
                "gateway_access_log_lines": len(lines), "gateway_denied": denied, "versions": versions(),
                "background": {"before": before, "after": background_load()}}
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


def run_lat_small(client: Client, path: str) -> None:
    conn = client.connect(path)
    for _ in range(50):
        exchange(conn, MSG)
    conn.close()


def _worker_of(master: int) -> int:
    for child in Path("/proc").glob("[0-9]*"):
        try:
            fields = (child / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            return int(child.name)
    return master


def versions() -> dict:
    r = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
    return {"nginx": (r.stderr or r.stdout).strip(), "openssl": ssl.OPENSSL_VERSION,
            "python": sys.version.split()[0]}


def summarize(data: dict) -> tuple[list[list], dict]:
    med = {}
    for path, reps in data["reps"].items():
        def m(metric: str, key: str):
            values = [r[metric][key] for r in reps if r[metric].get(key) is not None]
            return statistics.median(values) if values else None
        med[path] = {"lat_p50_us": m("lat", "p50_us"), "lat_p99_us": m("lat", "p99_us"),
                     "conn_per_s": m("conn", "conn_per_s"), "conn_p50_ms": m("conn", "p50_ms"),
                     "bulk_MBps": m("bulk", "MBps"), "cpu_us_per_rt": m("lat", "proxy_cpu_us_per_op"),
                     "cpu_us_per_conn": m("conn", "proxy_cpu_us_per_op"),
                     "cpu_us_per_64k": m("bulk", "proxy_cpu_us_per_op")}
    rows = [[p, med[p]["lat_p50_us"], med[p]["lat_p99_us"], med[p]["conn_per_s"], med[p]["conn_p50_ms"],
             med[p]["bulk_MBps"], med[p]["cpu_us_per_rt"] or "-", med[p]["cpu_us_per_conn"] or "-",
             med[p]["cpu_us_per_64k"] or "-"] for p in PATHS]
    return rows, med


def main() -> None:
    if shutil.which("nginx") is None or shutil.which("gcc") is None:
        print("bench egress: needs nginx (+ libnginx-mod-stream) and gcc (scripts/test-deps.sh); skipped")
        return
    data = run()
    rows, med = summarize(data)
    print_table("Egress gateway SNI passthrough vs nginx ssl_preread (medians of "
                f"{P['REPS']} reps; loopback)",
                ["path", "lat p50 µs", "lat p99 µs", "conn/s", "conn p50 ms", "bulk MB/s", "proxy CPU µs/RT",
                 "proxy CPU µs/conn", "proxy CPU µs/64KiB"], rows)
    t, n = med["tether"], med["nginx"]
    ratio = {k: (t[k] / n[k]) if t[k] and n[k] else None for k in t}
    print(f"\ntether/nginx: lat p50 x{ratio['lat_p50_us']:.2f}, conn/s x{ratio['conn_per_s']:.2f}, "
          f"bulk x{ratio['bulk_MBps']:.2f}; gateway RSS idle {data['gateway_idle_rss_kb'] / 1024:.1f} MiB, "
          f"{data['gateway_access_log_lines']} access-log lines ({data['gateway_denied']} denied)")
    bg = data["background"]
    print(f"background load (1/5/15 min): before {bg['before']['loadavg']}, after {bg['after']['loadavg']}")
    path = write_result("egress", {**data, "medians": med, "ratios_tether_vs_nginx": ratio})
    print(f"results: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


if __name__ == "__main__":
    main()
