"""`tether connect redirect-traffic` in a real network namespace with real iptables.

Topology: the application host (198.51.100.10) and an "internet" host (198.51.100.20)
on one segment. On the application host a stand-in proxy (root) listens on the outbound
port 15001 and the inbound port 20000 and answers with the original destination it
recovers through SO_ORIGINAL_DST; the application runs as uid 65534.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from tether.testing.netns import Topology

APP, NET = "198.51.100.10", "198.51.100.20"
APP_UID = 65534

# Answers every connection with "<tag>:<original destination>" and closes; the tag says
# which server was reached, the destination what the client had asked for.
SERVER = textwrap.dedent("""
    import socket, sys, threading
    from tether.netutil import original_destination
    tag, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
    def serve(port):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port)); s.listen(64)
        while True:
            c, _ = s.accept()
            try: dst = "%s:%d" % original_destination(c)
            except OSError: dst = "untracked"
            c.sendall(f"{tag}:{dst}".encode()); c.close()
    for p in ports[1:]: threading.Thread(target=serve, args=(p,), daemon=True).start()
    threading.Timer(0.2, lambda: print("ready", flush=True)).start()
    serve(ports[0])
""")

CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    print(s.recv(200).decode())
""")


def start(host, tag, *ports):
    proc = host.popen([sys.executable, "-c", SERVER, tag, *map(str, ports)], stdout=-1, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def dial(host, ip, port, user=None):
    result = host.python(CLIENT.replace("sys.argv[1]", repr(ip)).replace("int(sys.argv[2])", str(port)),
                         user=user, timeout=20)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def who(host, ip, port, user=None):
    """Which server answered."""
    return dial(host, ip, port, user).split(":")[0]


def tether(host, *args, user=None):
    return host.run([sys.executable, "-m", "tether.cli.main", "connect", "redirect-traffic", *args], user=user)


@pytest.fixture
def topo():
    with Topology({"app": APP, "net": NET}) as topo:
        start(topo["net"], "net", 5432, 9999, 7000)
        start(topo["app"], "proxy", 15001, 20000)
        start(topo["app"], "local", 8500)
        yield topo


def test_redirect_install_refresh_and_cleanup(topo):
    app, net = topo["app"], topo["net"]
    assert who(app, NET, 5432, user=APP_UID) == "net"  # before: straight to the internet host

    r = tether(app, "-proxy-uid", "0", "-proxy-inbound-port", "20000", "-exclude-outbound-port", "9999",
               "-exclude-inbound-port", "22")
    assert r.returncode == 0, r.stderr

    # The application's outbound TCP reaches the proxy, which recovers where it was going.
    assert dial(app, NET, 5432, user=APP_UID) == f"proxy:{NET}:5432"
    # The proxy's own traffic (its uid), loopback, and excluded ports are not redirected.
    assert who(app, NET, 5432) == "net"
    assert who(app, "127.0.0.1", 8500, user=APP_UID) == "local"
    assert who(app, NET, 9999, user=APP_UID) == "net"
    # Inbound TCP to the application host lands on the proxy's public port.
    assert dial(net, APP, 8080) == f"proxy:{APP}:8080"

    # Running it again refreshes the rules instead of stacking a second copy.
    assert tether(app, "-proxy-uid", "0", "-proxy-inbound-port", "20000").returncode == 0
    saved = app.run(["iptables-save", "-t", "nat"]).stdout
    assert saved.count("-A OUTPUT -p tcp -j TETHER_PROXY_OUTPUT") == 1
    assert "--dport 9999" not in saved  # the exclusion from the first run is gone with the refresh

    r = tether(app, "-cleanup")
    assert r.returncode == 0 and "Removed" in r.stdout
    assert "TETHER_" not in app.run(["iptables-save", "-t", "nat"]).stdout
    assert who(app, NET, 5432, user=APP_UID) == "net"
    assert "No traffic redirection rules" in tether(app, "-cleanup").stdout


def test_refusals_are_one_line_and_change_nothing(topo):
    app = topo["app"]
    r = tether(app, "-proxy-uid", "0", "-proxy-inbound-port", "20000", user=APP_UID)
    assert r.returncode == 2 and "CAP_NET_ADMIN" in r.stderr and len(r.stderr.splitlines()) == 1
    r = tether(app, "-proxy-uid", "0", "-proxy-inbound-port", "20000", "-exclude-cidr", "10.0.0.300/8")
    assert r.returncode == 2 and "10.0.0.300/8" in r.stderr
    r = tether(app, "-proxy-inbound-port", "20000")
    assert r.returncode == 2 and "-proxy-uid is required" in r.stderr
    assert "TETHER_" not in app.run(["iptables-save", "-t", "nat"]).stdout
