"""Two-hop mutual-TLS chain: Tether's proxy vs HAProxy vs direct, measured in one run.

    client (bench/native loadgen) -> outbound sidecar -> mTLS -> inbound sidecar -> echo app

Three chains run side by side on loopback and are measured alternately in many short
rounds (the order rotates every repetition, as in the anchors' harness in
../shared/anchors/l4-mtls-chain). The machine is shared, so each Tether/HAProxy ratio is
taken per repetition from two measurements made seconds apart, and the headline is the
median of those paired ratios (slow drifts in background load cancel out):

  direct   loadgen -> echo                           (the physical limit)
  haproxy  two `haproxy -db` processes, nbthread 1, chain-only verification
  tether   two `python -m tether.proxy.standalone` processes (uvloop) with the SPIFFE
           identity check, a static allow-list authorizer, metrics on an admin port and
           a JSON access log to a file all switched on

Same certificates (EC P-256, SPIFFE URI SANs, from tether.testing.pki) for both proxies;
no session resumption anywhere, so every new connection is a full mTLS handshake.

Metrics: lat (1 connection, 64 B ping-pong: p50), rr (16 connections ping-pong: round
trips/s), bulk (1 connection streams BULK_BYTES out and back: MB/s), conn (new connection +
one round trip + close, 16 in flight: conn/s), idle RSS of each Tether process, and CPU
seconds the proxies spend per unit of work (the steadiest figure on a shared machine).

Run with `python -m bench` (BENCH=proxy_chain) or `python -m bench.proxy_chain`. ~2.5 min
with the defaults (8 repetitions of ~1.5 s per metric and chain); env overrides: REPS, LAT_N, LAT_MAX, RR_CONNS, RR_SECS, BULK_BYTES,
BULK_MAX, CONN_CONC, CONN_SECS, MSG. Writes bench/results/proxy-<date>.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine, print_table, write_result

HERE = Path(__file__).resolve().parent
NATIVE = HERE / "native"
HOST = "127.0.0.1"
TCK = os.sysconf("SC_CLK_TCK")
TARGETS = {"rr": 0.6, "lat": 1.3, "bulk": 1.0, "conn": 0.7}  # vs HAProxy; lat is a ceiling
RSS_LIMIT_KB = 35 * 1024


def env(name: str, default, cast=int):
    return cast(os.environ.get(name, default))


P = dict(REPS=env("REPS", 8), LAT_N=env("LAT_N", 20000), LAT_MAX=env("LAT_MAX", 1.0, float),
         RR_CONNS=env("RR_CONNS", 16), RR_SECS=env("RR_SECS", 1.5, float), BULK_BYTES=env("BULK_BYTES", 1 << 30),
         BULK_MAX=env("BULK_MAX", 1.5, float), CONN_CONC=env("CONN_CONC", 16), CONN_SECS=env("CONN_SECS", 1.5, float),
         MSG=env("MSG", 64))
METRICS = ("lat", "rr", "bulk", "conn")


def log(*a) -> None:
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def build_native() -> dict[str, Path]:
    """Compile loadgen and echo once per source version into a cache directory."""
    digest = hashlib.sha256(b"".join((NATIVE / f).read_bytes() for f in ("loadgen.c", "echo.c"))).hexdigest()[:12]
    out = Path(tempfile.gettempdir()) / f"tether-bench-native-{digest}"
    out.mkdir(exist_ok=True)
    bins = {}
    for name in ("loadgen", "echo"):
        exe = out / name
        if not exe.exists():
            subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(NATIVE / f"{name}.c")], check=True)
        bins[name] = exe
    return bins


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def write_certs(d: Path) -> None:
    from tether.testing.pki import ThrowawayCA

    ca = ThrowawayCA("example.mesh")
    (d / "ca.pem").write_text(ca.root_pem)
    for svc in ("web", "db"):
        ca.issue(svc, dns=(f"{svc}.svc.example.mesh",)).write(d, svc)


HAPROXY_GLOBAL = """global
    nbthread 1
    maxconn 8000
    log stderr format raw local0 err
defaults
    mode tcp
    log global
    timeout connect 5s
    timeout client 60s
    timeout server 60s
"""


def haproxy_configs(d: Path, out_port: int, in_port: int, echo_port: int) -> tuple[Path, Path]:
    # same shape as the anchors' conf/haproxy-{in,out}.cfg: one process, one thread, full handshakes
    cin = d / "haproxy-in.cfg"
    cin.write_text(HAPROXY_GLOBAL + f"""frontend in_db
    bind {HOST}:{in_port} backlog 4096 ssl crt {d}/db.pem ca-file {d}/ca.pem verify required no-tls-tickets
    default_backend app
backend app
    server app {HOST}:{echo_port}
""")
    cout = d / "haproxy-out.cfg"
    cout.write_text(HAPROXY_GLOBAL + f"""frontend out_web
    bind {HOST}:{out_port} backlog 4096
    default_backend up_db
backend up_db
    server db {HOST}:{in_port} ssl crt {d}/web.pem ca-file {d}/ca.pem verify required verifyhost db.svc.example.mesh sni str(db.svc.example.mesh) no-ssl-reuse
""")
    return cin, cout


def tether_configs(d: Path, out_port: int, in_port: int, echo_port: int) -> tuple[Path, Path]:
    td = "spiffe://example.mesh/ns/default/dc/dc1/svc"
    cin = d / "tether-in.json"
    cin.write_text(json.dumps({
        "tls": {"cert_file": "db.crt", "key_file": "db.key", "roots_file": "ca.pem", "spiffe_id": f"{td}/db"},
        "inbound": {"service": "db", "bind": f"{HOST}:{in_port}", "local_app": f"{HOST}:{echo_port}"},
        "allow": [f"{td}/web"], "access_log": {"path": "tether-in-access.log"},
        "admin": f"{HOST}:{free_port()}", "loop": "uvloop"}))
    cout = d / "tether-out.json"
    cout.write_text(json.dumps({
        "tls": {"cert_file": "web.crt", "key_file": "web.key", "roots_file": "ca.pem", "spiffe_id": f"{td}/web"},
        "upstreams": [{"name": "db", "bind": f"{HOST}:{out_port}", "spiffe_id": f"{td}/db",
                       "instances": [f"{HOST}:{in_port}"]}],
        "access_log": {"path": "tether-out-access.log"}, "admin": f"{HOST}:{free_port()}", "loop": "uvloop"}))
    return cin, cout


class Procs:
    """Every process this benchmark starts, stopped by PID on exit."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], port: int) -> int:
        out = open(self.logs / f"{name}.log", "wb")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.logs)
        self.procs.append((name, p))
        end = time.monotonic() + 15
        while time.monotonic() < end and p.poll() is None:
            try:
                socket.create_connection((HOST, port), timeout=0.5).close()
                return p.pid
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{name} did not start; see {self.logs / (name + '.log')}")

    def stop(self) -> None:
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _, p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TCK


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def loadgen(exe: Path, metric: str, port: int, pids: list[int]) -> dict:
    args = {"lat": ["lat", HOST, port, P["LAT_N"], P["LAT_MAX"], P["MSG"]],
            "rr": ["rr", HOST, port, P["RR_CONNS"], P["RR_SECS"], P["MSG"]],
            "bulk": ["bulk", HOST, port, P["BULK_BYTES"], P["BULK_MAX"]],
            "conn": ["conn", HOST, port, P["CONN_CONC"], P["CONN_SECS"], P["MSG"]]}[metric]
    c0 = sum(cpu_seconds(p) for p in pids)
    r = subprocess.run([str(exe)] + [str(a) for a in args], capture_output=True, text=True, timeout=120)
    cpu = sum(cpu_seconds(p) for p in pids) - c0
    try:
        res = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": (r.stderr or r.stdout)[-300:]}
    work = {"lat": res.get("n"), "rr": res.get("rts"), "bulk": res.get("bytes_recv", 0) / 1e6,
            "conn": res.get("conns")}[metric]
    res["proxy_cpu_us_per_op"] = cpu / work * 1e6 if work and pids else None
    return res


VALUE = {"lat": "p50_us", "rr": "rt_per_s", "bulk": "MBps", "conn": "conn_per_s"}


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def background_load() -> dict:
    """Load average and the busiest other processes: the machine is shared, say how busy it was."""
    load = Path("/proc/loadavg").read_text().split()[:3]
    busy = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "R":
            busy.append(stat.split("(", 1)[1].rsplit(")", 1)[0])
    return {"loadavg": [float(x) for x in load], "running_now": sorted(busy)}


def run() -> dict:
    bins = build_native()
    before = background_load()
    work = Path(tempfile.mkdtemp(prefix="tether-bench-proxy-"))
    procs = Procs(work)
    try:
        write_certs(work)
        echo_port = free_port()
        procs.start("echo", [str(bins["echo"]), HOST, str(echo_port)], echo_port)
        chains = {"direct": (echo_port, [])}
        ports = {name: (free_port(), free_port()) for name in ("haproxy", "tether")}
        h_in, h_out = haproxy_configs(work, *ports["haproxy"], echo_port)
        t_in, t_out = tether_configs(work, *ports["tether"], echo_port)
        py = [sys.executable, "-m", "tether.proxy.standalone", "--config"]
        pid_hin = procs.start("haproxy-in", ["haproxy", "-db", "-f", str(h_in)], ports["haproxy"][1])
        pid_hout = procs.start("haproxy-out", ["haproxy", "-db", "-f", str(h_out)], ports["haproxy"][0])
        pid_tin = procs.start("tether-in", py + [str(t_in)], ports["tether"][1])
        pid_tout = procs.start("tether-out", py + [str(t_out)], ports["tether"][0])
        chains["haproxy"] = (ports["haproxy"][0], [pid_hout, pid_hin])
        chains["tether"] = (ports["tether"][0], [pid_tout, pid_tin])
        for name, (port, _) in chains.items():  # every chain answers before anything is measured
            r = subprocess.run([str(bins["loadgen"]), "lat", HOST, str(port), "200", "5", str(P["MSG"])],
                               capture_output=True, text=True, timeout=30)
            if '"n":200' not in r.stdout:
                raise RuntimeError(f"chain {name} is broken: {r.stdout or r.stderr}")
        idle_rss = {"tether-out": rss_kb(pid_tout), "tether-in": rss_kb(pid_tin),
                    "haproxy-out": rss_kb(pid_hout), "haproxy-in": rss_kb(pid_hin)}
        log("idle RSS kB", idle_rss)
        results = {name: {m: [] for m in METRICS} for name in chains}
        names = list(chains)
        for rep in range(P["REPS"]):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for metric in METRICS:
                for name in order:
                    port, pids = chains[name]
                    res = loadgen(bins["loadgen"], metric, port, pids)
                    results[name][metric].append(res)
                    log(f"rep {rep} {metric:4s} {name:8s}", res.get(VALUE[metric], res.get("error")))
        peak_rss = {"tether-out": rss_kb(pid_tout), "tether-in": rss_kb(pid_tin)}
        access_lines = sum(1 for f in ("tether-in-access.log", "tether-out-access.log")
                           for _ in open(work / f))
        return {"params": P, "results": results, "idle_rss_kb": idle_rss, "rss_after_kb": peak_rss,
                "access_log_lines": access_lines, "versions": versions(),
                "background": {"before": before, "after": background_load()}}
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


def versions() -> dict:
    def first(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError) as e:
            return str(e)
    import ssl

    import uvloop
    return {"haproxy": first(["haproxy", "-v"]), "openssl": ssl.OPENSSL_VERSION,
            "python": sys.version.split()[0], "uvloop": uvloop.__version__, "kernel": os.uname().release}


def summarize(data: dict) -> tuple[list[list], dict]:
    R = data["results"]
    med = {n: {m: median(r.get(VALUE[m]) for r in R[n][m] if "error" not in r) for m in METRICS} for n in R}
    cpu = {n: {m: median(r.get("proxy_cpu_us_per_op") for r in R[n][m] if "error" not in r) for m in METRICS}
           for n in R}
    rows = [[n, med[n]["lat"], med[n]["rr"], med[n]["bulk"], med[n]["conn"], cpu[n]["rr"], cpu[n]["conn"]] for n in R]
    paired = {}
    for m in METRICS:  # tether / haproxy within each repetition (measured seconds apart)
        pairs = [t.get(VALUE[m]) / h.get(VALUE[m]) for t, h in zip(R["tether"][m], R["haproxy"][m])
                 if t.get(VALUE[m]) and h.get(VALUE[m])]
        paired[m] = {"median": median(pairs), "min": min(pairs, default=None), "max": max(pairs, default=None),
                     "n": len(pairs)}
    cpu_ratio = {m: (cpu["haproxy"][m] / cpu["tether"][m]) if cpu["tether"][m] and cpu["haproxy"][m] else None
                 for m in METRICS}
    return rows, {"medians": med, "cpu_us_per_op": cpu, "ratios_vs_haproxy": paired,
                  "cpu_efficiency_vs_haproxy": cpu_ratio}


def verdicts(ratios: dict, cpu_ratio: dict, rss: dict) -> list[list]:
    rows = []
    names = {"lat": "p50 latency", "rr": "round trips/s", "bulk": "bulk MB/s", "conn": "new conn/s"}
    for m, target in TARGETS.items():
        r = ratios[m]
        ok = r["median"] is not None and (r["median"] <= target if m == "lat" else r["median"] >= target)
        spread = f"{r['min']:.2f}..{r['max']:.2f}" if r["median"] else "-"
        eff = cpu_ratio.get(m)
        rows.append([names[m], f"{r['median']:.2f}x" if r["median"] else "-", spread,
                     f"{eff:.2f}x" if eff else "-", ("<= " if m == "lat" else ">= ") + f"{target}x",
                     "yes" if ok else "NO"])
    worst = max(rss["tether-out"], rss["tether-in"])
    rows.append(["idle RSS per proxy", f"{worst / 1024:.1f} MB", "-", "-", "<= 35 MB",
                 "yes" if worst <= RSS_LIMIT_KB else "NO"])
    return rows


def main() -> None:
    if shutil.which("haproxy") is None or shutil.which("gcc") is None:
        print("bench proxy_chain: needs haproxy and gcc (scripts/test-deps.sh installs haproxy); skipped")
        return
    t0 = time.time()
    data = run()
    rows, summary = summarize(data)
    data.update(summary, wall_s=round(time.time() - t0, 1))
    print_table(f"Two-hop mTLS chain, medians of {P['REPS']} alternating reps",
                ["config", "lat p50 µs", "RR/s (16 conn)", "bulk MB/s", "conn/s (16)", "proxy CPU µs/RT",
                 "proxy CPU µs/conn"], rows)
    print_table("Tether vs HAProxy (same run; median of per-repetition ratios)",
                ["metric", "tether / haproxy", "min..max", "CPU per op, haproxy / tether", "target", "met"],
                verdicts(summary["ratios_vs_haproxy"], summary["cpu_efficiency_vs_haproxy"], data["idle_rss_kb"]))
    rss = data["idle_rss_kb"]
    print(f"\nidle RSS kB: tether out/in {rss['tether-out']}/{rss['tether-in']}, "
          f"haproxy out/in {rss['haproxy-out']}/{rss['haproxy-in']}; tether after the run "
          f"{data['rss_after_kb']['tether-out']}/{data['rss_after_kb']['tether-in']}; "
          f"access-log lines written: {data['access_log_lines']:,}")
    bg = data["background"]
    print(f"background load (1/5/15 min): before {bg['before']['loadavg']}, after {bg['after']['loadavg']}; "
          f"runnable at start besides the bench: {', '.join(bg['before']['running_now']) or 'none'}")
    m = machine()
    print(f"machine: {m['cpus']} CPUs, {m['platform']}, python {m['python']}, {data['versions']['haproxy']}, "
          f"{data['versions']['openssl']}, uvloop {data['versions']['uvloop']}; {m['date']}; wall {data['wall_s']}s")
    path = write_result("proxy", data)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
