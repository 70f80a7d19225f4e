"""Test hosts in network namespaces: several "machines" on one segment, on one box.

    with Topology({"app": "198.51.100.10", "net": "198.51.100.20"}) as topo:
        topo["net"].popen([...])          # a server on the "internet" host
        topo["app"].run([...])            # a client on the application host

Each host is a namespace with loopback up and a veth into a bridge that lives in a
namespace of its own, so nothing touches the machine's real interfaces and no packet
leaves the namespaces. Addresses are from TEST-NET-2 (198.51.100.0/24) by default.
Names are unique per process and everything is removed on exit, even after a failure.
Needs root and iproute2; `available()` says whether the machine can do it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from typing import Any, Mapping, Sequence

from tether.testing.deps import missing

_counter = itertools.count()
PREFIX_LEN = 24


def available() -> str | None:
    """None when namespaces can be used here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return missing("iproute2 (ip)")
    probe = f"tt{os.getpid()}probe"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if result.returncode != 0:
        return f"cannot create a network namespace: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


class Host:
    def __init__(self, netns: str, address: str) -> None:
        self.netns = netns
        self.address = address
        self.procs: list[subprocess.Popen[Any]] = []

    def _wrap(self, cmd: Sequence[str], user: int | None) -> list[str]:
        prefix = ["ip", "netns", "exec", self.netns]
        if user is not None:
            prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
        return prefix + list(cmd)

    def run(self, cmd: Sequence[str], *, user: int | None = None, timeout: float = 60,
            env: Mapping[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._wrap(cmd, user), capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})}, input=input)

    def popen(self, cmd: Sequence[str], *, user: int | None = None, env: Mapping[str, str] | None = None,
              **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(self._wrap(cmd, user), env={**os.environ, **(env or {})}, **kwargs)
        self.procs.append(proc)
        return proc

    def python(self, code: str, *, user: int | None = None, timeout: float = 60,
               env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.run([sys.executable, "-c", code], user=user, timeout=timeout, env=env)


class Topology:
    def __init__(self, hosts: Mapping[str, str]) -> None:
        tag = f"tt{os.getpid() % 100000}x{next(_counter)}"
        self.tag = tag
        self.switch = f"{tag}sw"
        self.hosts = {name: Host(f"{tag}{name}"[:15], address) for name, address in hosts.items()}

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def __enter__(self) -> "Topology":
        try:
            _ip("netns", "add", self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for i, host in enumerate(self.hosts.values()):
                _ip("netns", "add", host.netns)
                _ip("-n", host.netns, "link", "set", "lo", "up")
                outside, inside = f"{self.tag}v{i}"[:15], "eth0"
                _ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", host.netns)
                _ip("link", "set", outside, "netns", self.switch)
                _ip("-n", self.switch, "link", "set", outside, "master", "br0", "up")
                _ip("-n", host.netns, "addr", "add", f"{host.address}/{PREFIX_LEN}", "dev", inside)
                _ip("-n", host.netns, "link", "set", inside, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for host in self.hosts.values():
            for proc in host.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.switch], capture_output=True)
