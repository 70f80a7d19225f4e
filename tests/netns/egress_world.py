"""A small world for the egress end-to-end tests: hosts in namespaces, a control plane, an
egress gateway, transparent sidecars, and real servers on an "internet" host.

    with EgressWorld({"app": APP, "gw": GW, "net": NET}) as w:
        w.hosts_file({"db.example.com": NET})               # /etc/hosts inside every namespace
        w.start_agent("gw")                                 # tether agent -dev on the gateway host
        w.start_gateway("gw")                               # tether proxy -gateway egress -register
        w.start_sidecar("app", "ratings")                   # registration (Mode transparent), iptables
                                                            # (redirect-traffic -proxy-id), the sidecar
        w.start_postgres("net", "db.example.com")           # PostgreSQL with ssl=on, hostssl only

Every process runs inside its namespace (`ip netns exec`); applications run as uid 65534
(the proxies as root, exempt from redirection by uid). Names resolve through
/etc/netns/<ns>/hosts, which `ip netns exec` mounts over /etc/hosts: nothing leaves the
namespaces. Certificates for the "internet" servers come from a throwaway trustme CA.
Everything is torn down on exit, even after a failure.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import trustme

from tether.testing.netns import Topology

APP_UID = 65534
AGENT_PORT = 8500
GATEWAY_PORT = 8443
TETHER = [sys.executable, "-m", "tether.cli.main"]


def missing_tools(*names: str) -> list[str]:
    """The tools among `names` this machine lacks ("postgres" means the server binaries)."""
    out = []
    for name in names:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres")) if name == "postgres" else shutil.which(name)
        if not found:
            out.append(name)
    return out


class Proc:
    """A process whose stdout/stderr lines are kept; wait for lines instead of sleeping."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.p = popen
        self.lines: list[str] = []
        self.cond = threading.Condition()
        for stream in (popen.stdout, popen.stderr):
            if stream is not None:
                threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait(self, pred, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if pred(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and not self.cond.wait(0.5)):
                    tail = "\n".join(self.lines[-30:])
                    raise AssertionError(f"expected line not seen (exit {self.p.poll()}):\n{tail}")
                self.cond.wait(min(left, 0.5))

    def records(self) -> list[dict]:
        """The JSON access-log records printed so far."""
        with self.cond:
            out = []
            for line in self.lines:
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
            return out

    def record(self, pred, timeout: float = 15.0) -> dict:
        """The first access-log record matching `pred` (waits for it)."""
        line = self.wait(lambda l: l.startswith("{") and _matches(l, pred), timeout)
        return json.loads(line)


def _matches(line: str, pred) -> bool:
    try:
        return bool(pred(json.loads(line)))
    except ValueError:
        return False


class EgressWorld:
    def __init__(self, hosts: dict[str, str], extra_addresses: dict[str, list[str]] | None = None) -> None:
        self.topo = Topology(hosts)
        self.extra = extra_addresses or {}
        self.tmp = Path(tempfile.mkdtemp(prefix="tether-egress-"))
        os.chmod(self.tmp, 0o755)  # the postgres user must reach its data directory below
        self.ca = trustme.CA()
        self.ca_file = self.tmp / "external-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        os.chmod(self.ca_file, 0o644)
        self.procs: dict[str, Proc] = {}
        self.agent_addr = ""
        self._netns_dirs: list[Path] = []

    def __getitem__(self, name: str):
        return self.topo[name]

    def __enter__(self) -> "EgressWorld":
        self.topo.__enter__()
        try:
            for name, addrs in self.extra.items():
                for a in addrs:
                    self.sh(name, "ip", "addr", "add", f"{a}/24", "dev", "eth0")
            # Virtual IPs (240.0.0.0/4) and TEST-NET-3 "internet" addresses must be routable for a
            # connect() to reach iptables at all (the redirect happens after the route lookup).
            for host in self.topo.hosts.values():
                for net in ("240.0.0.0/4", "203.0.113.0/24"):
                    subprocess.run(["ip", "-n", host.netns, "route", "add", net, "dev", "eth0"], check=True)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.p.poll() is None:
                proc.p.terminate()
        for proc in self.procs.values():
            try:
                proc.p.wait(10)
            except subprocess.TimeoutExpired:
                proc.p.kill()
        self.topo.close()
        for d in self._netns_dirs:
            shutil.rmtree(d, ignore_errors=True)
        if self._netns_dirs:
            try:
                Path("/etc/netns").rmdir()  # only when empty: another run may be using it
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ plumbing
    def sh(self, host: str, *cmd: str, user: int | None = None, timeout: float = 60,
           env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
        r = self.topo[host].run(list(cmd), user=user, timeout=timeout, env=env)
        if check and r.returncode != 0:
            raise AssertionError(f"{host}$ {' '.join(cmd)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def hosts_file(self, names: dict[str, str], only: tuple[str, ...] = ()) -> None:
        """Name -> IP for every namespace, or the `only` ones (bind-mounted over /etc/hosts by ip netns exec)."""
        text = "127.0.0.1 localhost\n" + "".join(f"{ip} {name}\n" for name, ip in names.items())
        for key, host in self.topo.hosts.items():
            if only and key not in only:
                continue
            d = Path("/etc/netns") / host.netns
            d.mkdir(parents=True, exist_ok=True)
            (d / "hosts").write_text(text)
            self._netns_dirs.append(d)

    def spawn(self, key: str, host: str, cmd: list[str], user: int | None = None,
              env: dict[str, str] | None = None) -> Proc:
        p = self.topo[host].popen(cmd, user=user, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={"PYTHONUNBUFFERED": "1", **(env or {})})
        self.procs[key] = proc = Proc(p)
        return proc

    def tether(self, host: str, *args: str, check: bool = True, stdin: str | None = None):
        env = {"TETHER_HTTP_ADDR": self.agent_addr}
        r = self.topo[host].run(TETHER + list(args), env=env, input=stdin, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"tether {' '.join(args)} -> {r.returncode}: {r.stderr}")
        return r

    def api(self, host: str, method: str, path: str, body: object = None) -> object:
        """One HTTP call to the agent from inside `host` (the root namespace cannot reach it)."""
        code = textwrap.dedent(f"""
            import json, sys, httpx
            r = httpx.request({method!r}, "http://{self.agent_addr}{path}", json={body!r}, timeout=30)
            if r.status_code >= 400: sys.exit(f"{{r.status_code}}: {{r.text}}")
            print(json.dumps(r.json() if r.content else None))
        """)
        r = self.topo[host].python(code)
        if r.returncode != 0:
            raise AssertionError(f"{method} {path}: {r.stderr}")
        return json.loads(r.stdout)

    def apply(self, host: str, yaml_text: str) -> None:
        path = self.tmp / f"apply-{time.monotonic_ns()}.yaml"
        path.write_text(yaml_text)
        self.tether(host, "apply", "-f", str(path))

    def wait_api(self, host: str, path: str, pred, timeout: float = 20.0) -> object:
        deadline = time.monotonic() + timeout
        while True:
            got = self.api(host, "GET", path)
            if pred(got):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"GET {path} never satisfied the condition; last: {got}")
            time.sleep(0.2)  # poll-with-deadline: each poll is a process in the namespace

    # ------------------------------------------------------------------ the mesh
    def start_agent(self, host: str) -> None:
        ip = self.topo[host].address
        proc = self.spawn("agent", host, TETHER + ["agent", "-dev", "-client", "0.0.0.0", "-http-port",
                                                    str(AGENT_PORT), "-dns-port", "-1", "-no-managed-proxies",
                                                    "-node", "control", "-advertise", ip])
        proc.wait(lambda l: "HTTP API:" in l)
        self.agent_addr = f"{ip}:{AGENT_PORT}"

    def start_gateway(self, host: str) -> Proc:
        ip = self.topo[host].address
        proc = self.spawn("gateway", host, TETHER + [
            "proxy", "-gateway", "egress", "-register", "-address", f"{ip}:{GATEWAY_PORT}",
            "-http-addr", self.agent_addr, "-log-format", "json"])
        proc.wait(lambda l: l.startswith("READY gateway="))
        return proc

    def start_sidecar(self, host: str, service: str, app_port: int = 9080, public_port: int = 0) -> Proc:
        """Register `service` with a transparent sidecar, install its iptables rules, start it.

        The rules go in first, as an init container would do it: connections a process opened
        before the nat table existed are not tracked, and their replies would be redirected.
        """
        ip = self.topo[host].address
        # Every service registers on the one agent (one node), where ports must be unique.
        public_port = public_port or 21000 + sum(k.startswith("sidecar-") for k in self.procs)
        self.api(host, "PUT", "/v1/agent/service/register", {
            "Name": service, "ID": service, "Address": ip, "Port": app_port,
            "Connect": {"SidecarService": {"Port": public_port, "Proxy": {"Mode": "transparent"}}}})
        self.tether(host, "connect", "redirect-traffic", "-proxy-id", f"{service}-sidecar-proxy", "-proxy-uid", "0",
                    "-http-addr", self.agent_addr)
        proc = self.spawn(f"sidecar-{service}", host, [sys.executable, "-m", "tether.cli.proxy_cmds", "-sidecar-for",
                                                       service, "-http-addr", self.agent_addr, "-log-format", "json"])
        proc.wait(lambda l: l.startswith("READY "))
        return proc

    def wait_gateway_known(self, host: str) -> None:
        self.wait_api(host, "/v1/health/connect/egress-gateway?passing=1", lambda got: len(got) == 1)

    # ------------------------------------------------------------------ the internet
    def client_cert(self, name: str) -> tuple[Path, Path]:
        """A client certificate from the world's CA (TLS origination with mode MUTUAL)."""
        return self.server_cert(name, f"{name}.client.example")

    def server_cert(self, name: str, *names: str) -> tuple[Path, Path]:
        cert = self.ca.issue_cert(*names)
        crt, key = self.tmp / f"{name}.crt", self.tmp / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(crt))
        cert.private_key_pem.write_to_path(str(key))
        os.chmod(key, 0o600)
        return crt, key

    def start_postgres(self, host: str, name: str) -> None:
        """PostgreSQL with ssl=on that accepts TLS connections only (hostssl), as the postgres user."""
        pg = pwd.getpwnam("postgres")
        bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        data = self.tmp / "pgdata"
        data.mkdir(mode=0o700)
        crt, key = self.server_cert("postgres", name)
        for p in (data, crt, key):
            os.chown(p, pg.pw_uid, pg.pw_gid)
        self.sh(host, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-N",
                user=pg.pw_uid)
        ip = self.topo[host].address
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = '{ip}'\nport = 5432\nunix_socket_directories = '{data}'\n"
                       f"ssl = on\nssl_cert_file = '{crt}'\nssl_key_file = '{key}'\nfsync = off\n")
        (data / "pg_hba.conf").write_text("local all all trust\nhostssl all all 0.0.0.0/0 trust\n")
        os.chown(data / "pg_hba.conf", pg.pw_uid, pg.pw_gid)
        proc = self.spawn("postgres", host, [str(bindir / "postgres"), "-D", str(data)], user=pg.pw_uid)
        proc.wait(lambda l: "ready to accept connections" in l)
        self.sh(host, str(bindir.parent / "bin" / "psql"), "-h", str(data), "-U", "postgres", "-c",
                "create table ratings (product int, stars int); insert into ratings values (1, 5), (2, 3);",
                user=pg.pw_uid)

    def start_redis(self, host: str, name: str, port: int = 6379) -> None:
        """Redis on TLS only, requiring a client certificate from the world's CA (for MUTUAL)."""
        crt, key = self.server_cert("redis", name)
        proc = self.spawn("redis", host, ["redis-server", "--port", "0", "--tls-port", str(port), "--bind",
                                          self.topo[host].address, "--tls-cert-file", str(crt), "--tls-key-file",
                                          str(key), "--tls-ca-cert-file", str(self.ca_file), "--tls-auth-clients",
                                          "yes", "--save", "", "--appendonly", "no", "--protected-mode", "no"])
        proc.wait(lambda l: "Ready to accept connections" in l)

    def start_echo(self, host: str, bind: str, port: int, *, tls_names: tuple[str, ...] = (), banner: str = "") -> None:
        """A TCP (or TLS, for `tls_names`) echo server that first sends `banner` + newline."""
        args = [bind, str(port), banner]
        if tls_names:
            args += [str(p) for p in self.server_cert(f"echo-{port}-{bind}", *tls_names)]
        proc = self.spawn(f"echo-{bind}-{port}", host, [sys.executable, "-c", ECHO, *args])
        proc.wait(lambda l: l == "ready")


ECHO = textwrap.dedent("""
    import socket, ssl, sys, threading
    bind, port, banner = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ctx = None
    if len(sys.argv) > 4:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    srv = socket.create_server((bind, port)); print("ready", flush=True)
    def serve(c):
        try:
            if ctx: c = ctx.wrap_socket(c, server_side=True)
            if banner: c.sendall(banner.encode() + b"\\n")
            while data := c.recv(65536): c.sendall(data)
        except (OSError, ssl.SSLError): pass
        finally: c.close()
    while True:
        c, _ = srv.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
""")

# A client an application would be: connect (TLS with SNI if asked), print what comes back.
CLIENT = textwrap.dedent("""
    import socket, ssl, sys
    host, port, send = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    try:
        s = socket.create_connection((host, port), timeout=10)
        if len(sys.argv) > 4:
            ctx = ssl.create_default_context(cafile=sys.argv[4]); s = ctx.wrap_socket(s, server_hostname=host)
        s.sendall(send.encode()); data = b""
        while len(data) < len(send) + 64:
            chunk = s.recv(4096)
            if not chunk: break
            data += chunk
            if data.endswith(send.encode()): break
        if not data:
            print("CLOSED by the other side"); sys.exit(3)
        print(data.decode())
    except (OSError, ssl.SSLError) as e:
        print(f"ERROR {e.__class__.__name__}: {e}"); sys.exit(3)
""")
