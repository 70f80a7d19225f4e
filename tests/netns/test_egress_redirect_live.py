"""Installing `redirect-traffic` never cuts a connection that is already open.

Before the first nat rule, a namespace's connections are not tracked; afterwards conntrack
takes their next packet for a new connection. Only SYNs are redirected, so an old
connection keeps flowing (in both directions) while new ones go to the proxy.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tether.testing.deps import missing
from egress_world import APP_UID, EgressWorld, missing_tools

pytestmark = [pytest.mark.netns, pytest.mark.skipif(bool(missing_tools("iptables")), reason=missing("iptables"))]

APP, NET = "198.51.100.10", "198.51.100.30"

# Opens a connection, says "open", waits for a line on stdin, then round-trips and reports.
LONG_LIVED = textwrap.dedent("""
    import socket, sys
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    s.sendall(b"before"); assert s.recv(100) == b"before"
    print("open", flush=True); sys.stdin.readline()
    s.sendall(b"after"); print(s.recv(100).decode(), flush=True)
""")


def test_connections_opened_before_the_rules_keep_working():
    with EgressWorld({"app": APP, "net": NET}) as w:
        w.start_echo("net", NET, 7000)
        client = w["app"].popen([sys.executable, "-c", LONG_LIVED, NET, "7000"], user=APP_UID, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert client.stdout.readline().strip() == "open"
        w.tether("app", "connect", "redirect-traffic", "-proxy-uid", "0", "-proxy-inbound-port", "21000")
        client.stdin.write("go\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "after"
        assert client.wait(10) == 0
        # New connections are redirected (nothing listens on 15001 here: refused).
        r = w.sh("app", sys.executable, "-c", "import socket; socket.create_connection(('%s', 7000), timeout=5)" % NET,
                 user=APP_UID, check=False)
        assert r.returncode != 0 and "ConnectionRefusedError" in r.stderr
