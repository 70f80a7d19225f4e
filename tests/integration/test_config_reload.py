"""SIGHUP reloads an agent's config files (Consul's reload): services and checks defined there
are added, changed and removed as the files say; a file that no longer parses changes
nothing; services registered through the API are never touched."""

from __future__ import annotations

import json
import signal

import httpx

from proxy_kit import wait_for
from tether.testing.agent import start_tether


def services(agent) -> set[str]:
    return set(httpx.get(agent.url + "/v1/agent/services", timeout=10).json())


def test_sighup_applies_the_changed_definition_files(tmp_path):
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "web.json").write_text(json.dumps({"service": {"name": "web", "port": 8080,
                                                           "check": {"name": "up", "ttl": "1m"}}}))
    agent = start_tether("agent", "-dev", "-node", "n1", "-no-managed-proxies", "-config-dir", str(conf))
    try:
        assert services(agent) == {"web"}
        httpx.put(agent.url + "/v1/agent/service/register", json={"Name": "api-only", "Port": 1},
                  timeout=10).raise_for_status()

        (conf / "db.hcl").write_text('service {\n  name = "db"\n  port = 5432\n}\n')
        agent.proc.send_signal(signal.SIGHUP)
        wait_for("db from the new file", lambda: services(agent) == {"web", "db", "api-only"})

        (conf / "web.json").unlink()
        agent.proc.send_signal(signal.SIGHUP)
        wait_for("web gone with its file", lambda: services(agent) == {"db", "api-only"})
        assert "up" not in json.dumps(httpx.get(agent.url + "/v1/agent/checks", timeout=10).json())

        (conf / "db.hcl").write_text('service {\n  name = "db"\n  port = \n}\n')  # broken
        agent.proc.send_signal(signal.SIGHUP)
        wait_for("the reload failure in the log", lambda: any("reload failed" in line for line in agent.log))
        assert services(agent) == {"db", "api-only"}  # nothing lost
        assert agent.proc.poll() is None  # and the agent keeps running
    finally:
        agent.stop()
