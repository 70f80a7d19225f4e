"""Managed sidecar proxies: the agent starts, supervises and stops one process per
local connect-proxy registration.

The default process is Tether's own proxy (`tether connect proxy -sidecar-for <id>`),
which reads everything else from this agent's API. A registration may name another data
plane instead, Consul 1.2 style: `"connect": {"proxy": {"exec_mode": "daemon",
"command": [...]}}` (kept in `Proxy.Config`); that command gets the same environment
(TETHER_HTTP_ADDR, CONNECT_PROXY_ID, CONNECT_SIDECAR_FOR).

A process that exits is restarted with exponential back-off (1 s doubling to 30 s); a
run that lasted a minute resets the back-off. Stopping sends SIGTERM (the proxy drains)
and SIGKILL after a grace period. If the agent itself dies (even by SIGKILL), its proxies
get SIGTERM from the kernel (parent-death signal, set through util-linux `setpriv`), so a
restarted agent never finds its ports held by orphans.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

log = logging.getLogger("tether.agent.supervisor")

BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # a run this long resets the back-off
STOP_GRACE = 10.0  # SIGTERM, then SIGKILL after this long (the proxy drains meanwhile)

CommandFor = Callable[[dict[str, Any]], Sequence[str]]

# prctl(PR_SET_PDEATHSIG) must be set in the child before exec; Python's preexec_fn is not
# safe in a threaded process like the agent, so setpriv does it. Without setpriv, proxies
# outlive a crashed agent (logged once at start).
_SETPRIV = shutil.which("setpriv")


def with_parent_death_signal(command: Sequence[str]) -> list[str]:
    return [_SETPRIV, "--pdeathsig", "TERM", "--", *command] if _SETPRIV else list(command)


def default_command(proxy: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "tether.cli.main", "connect", "proxy", "-sidecar-for",
            proxy["Proxy"].get("DestinationServiceID") or proxy["Proxy"]["DestinationServiceName"]]


def command_for(proxy: dict[str, Any]) -> list[str]:
    """The registration's own daemon command, or Tether's proxy."""
    config = proxy.get("Proxy", {}).get("Config", {})
    command = config.get("command")
    if config.get("exec_mode", "daemon") == "daemon" and command:
        return [str(part) for part in command]
    return default_command(proxy)


@dataclass
class Managed:
    proxy_id: str
    command: list[str]
    task: asyncio.Task[None]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0


class ProxySupervisor:
    def __init__(self, *, command: CommandFor = command_for,
                 secret_for: Callable[[str], str] | None = None) -> None:
        self.agent_addr = ""
        self.command = command
        # proxy ID -> the proxy's own secret for the agent's API (agent/acl.py, LocalTokens)
        self.secret_for = secret_for
        self.managed: dict[str, Managed] = {}

    def start(self, agent_addr: str, services: dict[str, dict[str, Any]]) -> None:
        """Begin supervising once the agent's API is listening (proxies need its address)."""
        if _SETPRIV is None:
            log.warning("setpriv (util-linux) not found: sidecars will outlive the agent if it crashes")
        self.agent_addr = agent_addr.removeprefix("http://")
        for service_id, doc in services.items():
            self.on_service_change(service_id, doc)

    def on_service_change(self, service_id: str, doc: dict[str, Any] | None) -> None:
        """Agent hook: (re)start a process for each local connect-proxy; stop removed ones."""
        if not self.agent_addr:
            return  # not started yet: start() replays every local service
        current = self.managed.get(service_id)
        if doc is None or doc.get("Kind") != "connect-proxy":
            if current:
                asyncio.get_running_loop().create_task(self.stop(service_id))
            return
        command = list(self.command(doc))
        if current and current.command == command:
            return  # same process; it reads its new config from the agent itself
        if current:
            asyncio.get_running_loop().create_task(self.stop(service_id))
        task = asyncio.get_running_loop().create_task(self._supervise(service_id, doc, command),
                                                      name=f"proxy {service_id}")
        self.managed[service_id] = Managed(service_id, command, task)

    def _env(self, doc: dict[str, Any]) -> dict[str, str]:
        env = {**os.environ, "TETHER_HTTP_ADDR": self.agent_addr, "CONNECT_PROXY_ID": doc["ID"],
               "CONNECT_SIDECAR_FOR": doc["Proxy"].get("DestinationServiceID", "")}
        for name in ("TETHER_HTTP_TOKEN", "CONSUL_HTTP_TOKEN", "TETHER_HTTP_TOKEN_FILE", "CONSUL_HTTP_TOKEN_FILE"):
            env.pop(name, None)  # never the agent's own: a sidecar acts as its service
        if self.secret_for is not None:
            # The proxy's secret stands for its service's registration token at this agent
            # (Consul 1.2's proxy token), in the environment, never on the command line.
            env["CONSUL_HTTP_TOKEN"] = env["TETHER_HTTP_TOKEN"] = self.secret_for(doc["ID"])
        return env

    async def _supervise(self, proxy_id: str, doc: dict[str, Any], command: list[str]) -> None:
        backoff = BACKOFF_START
        loop = asyncio.get_running_loop()
        while True:
            entry = self.managed.get(proxy_id)
            started = loop.time()
            try:
                process = await asyncio.create_subprocess_exec(
                    *with_parent_death_signal(command), env=self._env(doc), stdin=asyncio.subprocess.DEVNULL,
                    start_new_session=True)
            except OSError as exc:
                log.error("proxy %s: cannot start %s: %s", proxy_id, command[0], exc)
                rc = None
            else:
                if entry:
                    entry.process = process
                log.info("proxy %s: started pid %d", proxy_id, process.pid)
                rc = await process.wait()
            if loop.time() - started > STABLE_AFTER:
                backoff = BACKOFF_START
            log.warning("proxy %s exited (%s); restarting in %.0fs", proxy_id, rc, backoff)
            if entry:
                entry.restarts += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def stop(self, proxy_id: str) -> None:
        entry = self.managed.pop(proxy_id, None)
        if entry is None:
            return
        entry.task.cancel()
        await asyncio.gather(entry.task, return_exceptions=True)
        process = entry.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE)
        except asyncio.TimeoutError:
            log.warning("proxy %s did not stop within %.0fs; killing it", proxy_id, STOP_GRACE)
            process.kill()
            await process.wait()
        log.info("proxy %s: stopped", proxy_id)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(pid) for pid in list(self.managed)))
