"""The sidecar's side of an unreachable agent: watches back off (0.25 s doubling to 5 s) and
report the failure; a sidecar that cannot reach its agent at start gives up after its startup
timeout (30 s by default) with an error the CLI turns into exit code 2."""

from __future__ import annotations

import logging

import pytest

from tether.core.errors import Unavailable
from tether.proxy.agentclient import AgentClient
from tether.proxy.sidecar import STARTUP_TIMEOUT, Sidecar, SidecarOptions
from tether.proxy.watch import RETRY_MAX, RETRY_START, SourceHealth, watch_hash, watch_index
from tether.testing.agent import run_cli
from tether.testing.ports import held_port


class Enough(Exception):
    """Ends a watch loop from its timer (not a TetherError, so the watch does not catch it)."""


def recording_sleep(delays: list[float], count: int):
    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == count:
            raise Enough

    return sleep


@pytest.mark.parametrize("watch", ["index", "hash"])
async def test_a_watch_backs_off_while_the_agent_is_unreachable(watch):
    failures, recovered, delays = [], [], []
    health = SourceHealth("agent", lambda source, error: failures.append(error), recovered.append)
    with held_port() as nobody:  # bound, not listening: every connect is refused at once
        client = AgentClient(f"127.0.0.1:{nobody.port}")
        sleep = recording_sleep(delays, 8)
        with pytest.raises(Enough):
            if watch == "index":
                await watch_index(client, health, "roots", "/v1/agent/connect/ca/roots", lambda body: None,
                                  index=7, sleep=sleep)
            else:
                await watch_hash(client, health, "registration", "/v1/agent/service/web-sidecar-proxy",
                                 lambda body: None, content_hash="abc", sleep=sleep)
    assert (RETRY_START, RETRY_MAX) == (0.25, 5.0)
    assert delays == [0.25, 0.5, 1, 2, 4, 5, 5, 5]
    assert len(failures) == 8 and "Connection refused" in failures[0] and not recovered


async def test_a_sidecar_that_cannot_reach_its_agent_gives_up(caplog):
    caplog.set_level(logging.WARNING, logger="tether.proxy.sidecar")
    assert STARTUP_TIMEOUT == 30.0
    with held_port() as nobody:
        sidecar = Sidecar(SidecarOptions(agent_addr=f"127.0.0.1:{nobody.port}", sidecar_for="web",
                                         startup_timeout=1.5))
        with pytest.raises(Unavailable, match=r"gave up after 1.5s; is TETHER_HTTP_ADDR right\?"):
            await sidecar.start()
    assert caplog.text.count("waiting for the agent") >= 1  # it kept trying meanwhile, and said so


def test_the_cli_exits_2_with_one_line_when_the_sidecar_cannot_start(dev_agent):
    r = run_cli("connect", "proxy", "-sidecar-for", "nothing-registered", "-http-addr", dev_agent.addr)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("tether connect proxy: ")
    assert "no connect-proxy registered for service ID 'nothing-registered'" in r.stderr
