"""Managed sidecar proxies: the agent starts, supervises, adopts and stops one process per
local connect-proxy registration.

The default process is Tether's own proxy (`tether connect proxy -sidecar-for <id>`),
which reads everything else from this agent's API. A registration may name another data
plane instead, Consul 1.2 style: `"connect": {"proxy": {"exec_mode": "daemon",
"command": [...]}}` (kept in `Proxy.Config`); that command gets the same environment
(TETHER_HTTP_ADDR, CONNECT_PROXY_ID, CONNECT_SIDECAR_FOR; `_env`).

A process that exits is restarted with exponential back-off (1 s doubling to 30 s); a
run that lasted a minute resets the back-off. Stopping sends SIGTERM (the proxy drains)
and SIGKILL after a grace period.

Fail static. Sidecars run in their own session and do not die with the agent: when the
agent crashes or is killed (even by SIGKILL) they keep serving with what they last had
(docs/proxy.md). For that the supervisor keeps one record per sidecar (PID, start time,
boot, agent address, command; agent/sidecar_records.py says where), and a starting agent
goes through them before it starts anything (core/sidecar_record.decide_adoption):

  adopt    the same process, still following this agent's address with the command the
           registration asks for: supervised as it is, through a pidfd (agent/procs.py),
           never restarted, so it keeps its ports, its connections and its environment;
  stop     ours, but its registration is gone (an in-memory dev agent restarted) or it can
           no longer follow this agent: SIGTERM, then started afresh if still registered;
  forget   not running any more, or the PID is someone else's now: the record is dropped.

Only a graceful stop of the agent (SIGTERM, SIGINT) stops its sidecars (`stop_all`);
an agent that fails or dies leaves them running (`detach`), for the next one to adopt.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tether.agent.procs import Adopted, Child, Handle
from tether.agent.sidecar_records import SidecarRecords, observe, open_records, record_of
from tether.core.sidecar_record import ProcessFacts, SidecarRecord, decide_adoption

log = logging.getLogger("tether.agent.supervisor")

BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # a run this long resets the back-off
STOP_GRACE = 10.0  # SIGTERM, then SIGKILL after this long (the proxy drains meanwhile)

CommandFor = Callable[[dict[str, Any]], Sequence[str]]


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
    process: Handle | None = None
    restarts: int = 0


class ProxySupervisor:
    def __init__(self, *, command: CommandFor = command_for, data_dir: Path | None = None,
                 secret_for: Callable[[str], str] | None = None) -> None:
        self.agent_addr = ""
        self.command = command
        self.data_dir = data_dir
        self.records: SidecarRecords | None = None
        # proxy ID -> the proxy's own secret for the agent's API (agent/acl.py, LocalTokens)
        self.secret_for = secret_for
        self.managed: dict[str, Managed] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def start(self, agent_addr: str, services: dict[str, dict[str, Any]]) -> None:
        """Begin supervising once the agent's API is listening (proxies need its address):
        adopt what a previous agent left running, then start what is missing."""
        self.agent_addr = agent_addr.removeprefix("http://")
        self.records = open_records(self.data_dir, self.agent_addr)
        for rec in self.records.load_all():
            self._take_over(rec, services.get(rec.proxy_id))
        for service_id, doc in services.items():
            if service_id not in self.managed:
                self.on_service_change(service_id, doc)

    def _take_over(self, rec: SidecarRecord, doc: dict[str, Any] | None) -> None:
        """Adopt, stop or forget the process of one record left by a previous agent."""
        wanted = tuple(self.command(doc)) if doc is not None and doc.get("Kind") == "connect-proxy" else None
        handle = Adopted.open(rec.pid)  # opened before the checks, so the PID cannot change under us
        verdict = decide_adoption(rec, observe(rec.pid) if handle else ProcessFacts(False),
                                  wanted_command=wanted, agent_addr=self.agent_addr)
        if verdict.action == "adopt":
            log.info("proxy %s: adopted pid %d (%s)", rec.proxy_id, rec.pid, verdict.reason)
            return self._begin(rec.proxy_id, doc, list(wanted), adopted=handle)
        self.records.remove(rec.proxy_id)
        if verdict.action == "forget":
            log.info("proxy %s: not adopting pid %d: %s", rec.proxy_id, rec.pid, verdict.reason)
            if handle:
                handle.close()
            return
        log.info("proxy %s: stopping pid %d left by the previous agent: %s", rec.proxy_id, rec.pid, verdict.reason)
        self._spawn_stop(self._terminate(rec.proxy_id, handle))
        if wanted is not None:  # replaced: the new process starts once the old one is gone
            self._begin(rec.proxy_id, doc, list(wanted), previous=handle)

    def on_service_change(self, service_id: str, doc: dict[str, Any] | None) -> None:
        """Agent hook: (re)start a process for each local connect-proxy; stop removed ones."""
        if not self.agent_addr:
            return  # not started yet: start() replays every local service
        current = self.managed.get(service_id)
        if doc is None or doc.get("Kind") != "connect-proxy":
            if current:
                self._spawn_stop(self._stop_entry(self._retire(service_id)))
            return
        command = list(self.command(doc))
        if current and current.command == command:
            return  # same process; it reads its new config from the agent itself
        if current:
            self._spawn_stop(self._stop_entry(self._retire(service_id)))
        self._begin(service_id, doc, command, previous=current.process if current else None)

    def _begin(self, proxy_id: str, doc: dict[str, Any], command: list[str], *, adopted: Adopted | None = None,
               previous: Handle | None = None) -> None:
        task = asyncio.get_running_loop().create_task(
            self._supervise(proxy_id, doc, command, adopted, previous), name=f"proxy {proxy_id}")
        self.managed[proxy_id] = Managed(proxy_id, command, task, adopted)

    def _spawn_stop(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

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

    async def _supervise(self, proxy_id: str, doc: dict[str, Any], command: list[str],
                         adopted: Adopted | None, previous: Handle | None) -> None:
        backoff = BACKOFF_START
        loop = asyncio.get_running_loop()
        if previous is not None and previous.running:
            await previous.wait()  # the old process drains first: its ports are not free before
        handle: Handle | None = adopted
        while True:
            entry = self.managed.get(proxy_id)
            started = loop.time()
            if handle is None:
                handle = await self._start_process(proxy_id, doc, command)
                if entry and handle:
                    entry.process = handle
            how = await handle.wait() if handle else "not started"
            if isinstance(handle, Adopted):
                handle.close()
            handle = None
            if loop.time() - started > STABLE_AFTER:
                backoff = BACKOFF_START
            log.warning("proxy %s exited (%s); restarting in %.0fs", proxy_id, how, backoff)
            if entry:
                entry.restarts += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _start_process(self, proxy_id: str, doc: dict[str, Any], command: list[str]) -> Child | None:
        try:
            # A session of its own: a terminal's Ctrl-C reaches the agent (which stops its
            # sidecars gracefully), never the sidecars directly.
            process = await asyncio.create_subprocess_exec(
                *command, env=self._env(doc), stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            log.error("proxy %s: cannot start %s: %s", proxy_id, command[0], exc)
            return None
        log.info("proxy %s: started pid %d", proxy_id, process.pid)
        rec = record_of(proxy_id, process.pid, self.agent_addr, command)
        if rec is not None:
            try:
                self.records.save(rec)
            except OSError as exc:  # supervision goes on; only adoption after a crash is lost
                log.error("proxy %s: cannot write its record in %s (%s); a restarted agent will not "
                          "adopt it", proxy_id, self.records.dir, exc)
        return Child(process)

    async def stop(self, proxy_id: str) -> None:
        """Stop supervising `proxy_id` and stop its process (SIGTERM: it drains)."""
        if proxy_id in self.managed:
            await self._stop_entry(self._retire(proxy_id))

    def _retire(self, proxy_id: str) -> Managed:
        """Take `proxy_id` out of supervision now (its record too: a replacement writes its own)."""
        self.records.remove(proxy_id)
        return self.managed.pop(proxy_id)

    async def _stop_entry(self, entry: Managed) -> None:
        entry.task.cancel()
        await asyncio.gather(entry.task, return_exceptions=True)
        await self._terminate(entry.proxy_id, entry.process)

    async def _terminate(self, proxy_id: str, process: Handle | None) -> None:
        if process is None or not process.running:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE)
        except asyncio.TimeoutError:
            log.warning("proxy %s did not stop within %.0fs; killing it", proxy_id, STOP_GRACE)
            process.send_signal(signal.SIGKILL)
            await process.wait()
        finally:
            if isinstance(process, Adopted):
                process.close()
        log.info("proxy %s: stopped", proxy_id)

    async def stop_all(self) -> None:
        """A graceful agent stop: every sidecar drains and exits; no record is left."""
        await asyncio.gather(*(self.stop(pid) for pid in list(self.managed)), *list(self._stopping))
        if self.records is not None:
            self.records.cleanup()

    async def detach(self) -> None:
        """The agent is going away without being asked to: leave the sidecars serving (their
        records stay, so the next agent adopts them)."""
        tasks = [entry.task for entry in self.managed.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for entry in self.managed.values():
            if isinstance(entry.process, Adopted):
                entry.process.close()
        self.managed.clear()
