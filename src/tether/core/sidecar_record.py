"""What an agent remembers about each sidecar process it runs, and whether a restarted agent
may adopt one (pure: no files, no /proc, no signals; agent/sidecar_records.py does that I/O).

A record names one managed proxy's process so that a process survives its agent: a PID,
and what makes that PID unambiguous, because PIDs are recycled. A process is the one
recorded when all of these hold now:

  - the kernel boot is the same (`/proc/sys/kernel/random/boot_id`): PIDs and start
    times restart at every boot;
  - the process with that PID started at the recorded instant (`/proc/<pid>/stat` field 22,
    in clock ticks since boot): a recycled PID belongs to a process that started later;
  - it runs with `CONNECT_PROXY_ID=<proxy id>` in its environment (`/proc/<pid>/environ`,
    kept across the proxy's exec of itself): the agent put it there.

`decide_adoption` is the restarted agent's choice for one record, as numbered steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

RECORD_VERSION = 1

Action = Literal["adopt", "stop", "forget"]


@dataclass(frozen=True, slots=True)
class SidecarRecord:
    proxy_id: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22 when the agent started it
    boot_id: str
    agent_addr: str  # the TETHER_HTTP_ADDR the process was given: it talks to nothing else
    command: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ProcessFacts:
    """What /proc says about a PID now (`running` is False for a gone or zombie process)."""

    running: bool
    start_ticks: int = 0
    boot_id: str = ""
    proxy_id: str | None = None  # CONNECT_PROXY_ID in its environment


@dataclass(frozen=True, slots=True)
class Adoption:
    action: Action  # adopt: supervise it as it is; stop: ours, but not wanted; forget: not ours (any more)
    reason: str


def record_filename(proxy_id: str) -> str:
    """A file name for `proxy_id` that no ID can turn into a path or a hidden file: everything
    but letters, digits, "-" and "_" is percent-quoted ("." too, which `quote` keeps)."""
    return quote(proxy_id, safe="-_").replace(".", "%2E").replace("~", "%7E") + ".json"


def format_record(rec: SidecarRecord) -> dict[str, Any]:
    """The record as the JSON document stored for it."""
    return {"version": RECORD_VERSION, "proxy_id": rec.proxy_id, "pid": rec.pid, "start_ticks": rec.start_ticks,
            "boot_id": rec.boot_id, "agent_addr": rec.agent_addr, "command": list(rec.command)}


def parse_record(doc: Any) -> SidecarRecord:
    """The record in a stored JSON document; ValueError naming the problem for anything else."""
    if not isinstance(doc, dict) or doc.get("version") != RECORD_VERSION:
        raise ValueError(f"not a version {RECORD_VERSION} sidecar record")
    try:
        rec = SidecarRecord(str(doc["proxy_id"]), int(doc["pid"]), int(doc["start_ticks"]), str(doc["boot_id"]),
                            str(doc["agent_addr"]), tuple(str(part) for part in doc["command"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"bad field: {e!r}") from None
    if rec.pid <= 1 or not rec.proxy_id:
        raise ValueError("pid must be > 1 and proxy_id not empty")
    return rec


def parse_proc_stat(text: str) -> tuple[str, int]:
    """(state, start time in clock ticks) from the text of /proc/<pid>/stat.

    The second field is the command name in parentheses and may itself contain spaces and
    ")", so fields are counted from the last ")".
    """
    _, sep, rest = text.rpartition(")")
    fields = rest.split()
    if not sep or len(fields) < 20:
        raise ValueError("not the text of /proc/<pid>/stat")
    return fields[0], int(fields[19])  # fields 3 and 22 of proc(5)


def parse_environ(data: bytes) -> dict[str, str]:
    """/proc/<pid>/environ (NUL-separated NAME=value) as a dict."""
    out = {}
    for item in data.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep and name:
            out[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return out


def decide_adoption(rec: SidecarRecord, now: ProcessFacts, *, wanted_command: tuple[str, ...] | None,
                    agent_addr: str) -> Adoption:
    """What a starting agent does with the process of `rec`.

    `wanted_command` is the command the agent would run for the proxy's registration now
    (None: the registration is gone); `agent_addr` is where this agent's API listens.
    """
    # 1. Is it still that process? Otherwise the record is stale: drop it, touch nothing.
    if not now.running:
        return Adoption("forget", f"pid {rec.pid} is not running")
    if now.boot_id != rec.boot_id:
        return Adoption("forget", "the node has rebooted since")
    if now.start_ticks != rec.start_ticks:
        return Adoption("forget", f"pid {rec.pid} is now another process (started later)")
    if now.proxy_id != rec.proxy_id:
        return Adoption("forget", f"pid {rec.pid} is not the proxy {rec.proxy_id!r}")
    # 2. Ours, but its registration went while we were away (an in-memory dev agent restarted).
    if wanted_command is None:
        return Adoption("stop", "its registration is gone")
    # 3. Ours, but it cannot follow this agent: it asks another address, or runs another command.
    if rec.agent_addr != agent_addr:
        return Adoption("stop", f"it follows the agent at {rec.agent_addr}, this agent listens on {agent_addr}")
    if tuple(wanted_command) != rec.command:
        return Adoption("stop", "its registration now asks for another command")
    # 4. Same process, same agent, same command: keep it running as it is.
    return Adoption("adopt", f"pid {rec.pid} is still running")
