"""`python -m tether.proxy.standalone` as real processes: the two-hop chain, SIGHUP reloads
(a broken file keeps the running config: fail static), SIGTERM drain, and the import graph."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import pytest
from proxy_testkit import DEADLINE, read_eof, roundtrip

BANNED = ("fastapi", "pydantic", "uvicorn", "rich", "typer", "httpx", "cryptography")


class Proc:
    """A standalone proxy process; stderr is collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, config: os.PathLike) -> tuple["Proc", dict[str, int]]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tether.proxy.standalone", "--config", str(config),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self = cls(proc)
        ready = await self.wait_for("READY ")
        ports = {k: int(v.rsplit(":", 1)[1]) for k, v in (kv.split("=") for kv in ready.split()[1:])}
        return self, ports

    async def wait_for(self, needle: str) -> str:
        async def scan():
            for line in self.lines:
                if needle in line:
                    return line
            while True:
                raw = await self.proc.stderr.readline()
                if not raw:
                    raise AssertionError(f"process exited before printing {needle!r}:\n" + "".join(self.lines))
                line = raw.decode()
                self.lines.append(line)
                if needle in line:
                    return line
        return await asyncio.wait_for(scan(), DEADLINE)

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(self.proc.stderr.read(), DEADLINE)
        self.lines.append(rest.decode())
        return await asyncio.wait_for(self.proc.wait(), DEADLINE)


async def eventually_idle(admin_port: int) -> None:
    async def active() -> bool:
        r, w = await asyncio.open_connection("127.0.0.1", admin_port)
        w.write(b"GET /metrics HTTP/1.0\r\n\r\n")
        text = (await r.read()).decode()
        w.close()
        return 'tether_proxy_connections_active{direction="inbound"} 0.0' in text

    async def poll():
        while not await active():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), DEADLINE)


def write_json(path, obj) -> None:
    path.write_text(json.dumps(obj))


async def test_chain_reload_and_drain(pki, app, tmp_path):
    pki.web.write(tmp_path, "web")
    pki.db.write(tmp_path, "db")
    (tmp_path / "ca.pem").write_text(pki.ca.root_pem)
    db_cfg = {"tls": {"cert_file": "db.crt", "key_file": "db.key", "roots_file": "ca.pem", "spiffe_id": pki.id("db")},
              "inbound": {"service": "db", "bind": "127.0.0.1:0", "local_app": f"127.0.0.1:{app.port}"},
              "allow": [pki.id("web")], "access_log": {"path": "db-access.log"}, "admin": "127.0.0.1:0",
              "drain_timeout_ms": 5000}
    write_json(tmp_path / "db.json", db_cfg)
    db, db_ports = await Proc.start(tmp_path / "db.json")
    web = None
    try:
        write_json(tmp_path / "web.json", {
            "tls": {"cert_file": "web.crt", "key_file": "web.key", "roots_file": "ca.pem", "spiffe_id": pki.id("web")},
            "upstreams": [{"name": "db", "bind": "127.0.0.1:0", "spiffe_id": pki.id("db"),
                           "instances": [f"127.0.0.1:{db_ports['inbound']}"]}],
            "access_log": {"path": "web-access.log", "format": "text"}, "loop": "asyncio"})
        web, web_ports = await Proc.start(tmp_path / "web.json")
        port = web_ports["upstream.db"]
        assert await roundtrip(port, b"through two processes") == b"through two processes"

        # a broken file on SIGHUP: logged, and the running config keeps serving
        (tmp_path / "db.json").write_text("{not json")
        db.proc.send_signal(signal.SIGHUP)
        line = await db.wait_for("serving last known config")
        assert "not JSON" in line
        assert await roundtrip(port, b"still up") == b"still up"

        # a valid reload that drops web from the allow list applies live (to connections
        # still open too, so first wait until the earlier ones have fully closed)
        await eventually_idle(db_ports["admin"])
        write_json(tmp_path / "db.json", db_cfg | {"allow": []})
        db.proc.send_signal(signal.SIGHUP)
        await db.wait_for("config reloaded")
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"denied now")
        assert await read_eof(r) == b""
        w.close()
    finally:
        codes = [await p.stop() for p in (web, db) if p is not None]
    assert codes == [0] * len(codes)
    results = [json.loads(line)["result"] for line in (tmp_path / "db-access.log").read_text().splitlines()]
    assert results == ["allowed", "allowed", "denied"]
    text = (tmp_path / "web-access.log").read_text().splitlines()
    assert len(text) == 3 and all(line.startswith("start_time=") for line in text)
    assert "result=allowed" in text[0]


async def test_bad_config_exits_2_with_every_problem(tmp_path):
    write_json(tmp_path / "bad.json", {"tls": {}, "upstreams": "db", "inbound": {
        "service": "db", "local_app": "127.0.0.1:1", "max_pending_handshakes": 0}})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tether.proxy.standalone", "--config", str(tmp_path / "bad.json"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = (await asyncio.wait_for(proc.stderr.read(), DEADLINE)).decode()
    assert await proc.wait() == 2
    assert err.startswith("error: config:") and "config.tls.cert_file: required" in err
    assert "config.upstreams: expected list" in err
    assert "config.inbound.max_pending_handshakes: 0 must be at least 1" in err


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_import_graph_stays_small():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "importtime", "-c", "import tether.proxy.standalone",
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = (await asyncio.wait_for(proc.stderr.read(), DEADLINE)).decode()
    assert await proc.wait() == 0
    modules = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in err.splitlines() if "|" in line}
    assert "tether" in modules and not modules & set(BANNED), modules & set(BANNED)
