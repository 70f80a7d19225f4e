"""Where an agent keeps one small record per managed sidecar process, and what /proc says now.

The records let a restarted agent find the sidecars its predecessor started (they keep
serving while no agent runs: docs/proxy.md, "Fail static") and tell them from a recycled
PID (core/sidecar_record.py decides). Each record is a JSON file, 0600, in a 0700 directory:

  with -data-dir D   D/proxies/                 the node's state lives there anyway
  without            $XDG_RUNTIME_DIR/tether/agent-<host>_<port>/proxies/ when set, else
                     /run/tether/agent-<host>_<port>/proxies/ for root, else
                     /tmp/tether-<uid>/agent-<host>_<port>/proxies/

Without a data directory the records are keyed by the agent's HTTP address: a sidecar
only ever follows the address it was given (TETHER_HTTP_ADDR), so only an agent that comes
back on that address can adopt it. Runtime directories are on tmpfs and empty after a
reboot, as the processes are. A graceful stop removes the records (and an emptied
runtime directory).
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

from tether.core.sidecar_record import (
    ProcessFacts, SidecarRecord, format_record, parse_environ, parse_proc_stat, parse_record, record_filename,
)
from tether.secretfile import write_private_json

log = logging.getLogger("tether.agent.supervisor")

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def runtime_base(env: dict[str, str] | os._Environ = os.environ) -> Path:
    """The per-user runtime directory Tether uses when an agent has no -data-dir."""
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "tether"
    if os.geteuid() == 0:
        return Path("/run/tether")
    return Path(f"/tmp/tether-{os.geteuid()}")


def open_records(data_dir: Path | None, agent_addr: str) -> "SidecarRecords":
    """The records of the agent with this data directory (or none) listening on `agent_addr`."""
    if data_dir is not None:
        return SidecarRecords(Path(data_dir) / "proxies")
    host, _, port = agent_addr.rpartition(":")
    safe_host = "".join(c if c.isalnum() or c in ".-" else "_" for c in host.strip("[]"))
    base = runtime_base()
    return SidecarRecords(base / f"agent-{safe_host}_{port}" / "proxies", runtime_root=base)


def _private_tree(root: Path, leaf: Path) -> None:
    """Create `root` and every directory below it down to `leaf` 0700, and refuse one that
    another user owns or may write to (someone could swap the records)."""
    path = root
    for part in ("", *leaf.relative_to(root).parts):
        path = path / part if part else path
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.stat()
        if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise PermissionError(f"{path} is not a private directory of this user (fix: chmod 700 {path}, "
                                  "or remove it)")
        if stat.S_IMODE(st.st_mode) != 0o700:
            path.chmod(0o700)


class SidecarRecords:
    """The record files of one agent."""

    def __init__(self, directory: Path, *, runtime_root: Path | None = None) -> None:
        self.dir = directory
        self.runtime_root = runtime_root  # set for a runtime directory: removed when emptied

    def save(self, rec: SidecarRecord) -> None:
        _private_tree(self.runtime_root or self.dir, self.dir)
        write_private_json(self.dir / record_filename(rec.proxy_id), format_record(rec))

    def load_all(self) -> list[SidecarRecord]:
        """Every readable record; unreadable ones are logged and removed."""
        if not self.dir.is_dir():
            return []
        out = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                out.append(parse_record(json.loads(path.read_text())))
            except (OSError, ValueError) as e:
                log.warning("ignoring the sidecar record %s: %s", path, e)
                path.unlink(missing_ok=True)
        return out

    def remove(self, proxy_id: str) -> None:
        (self.dir / record_filename(proxy_id)).unlink(missing_ok=True)

    def cleanup(self) -> None:
        """After a graceful stop: drop an empty runtime directory (a data dir keeps its own)."""
        if self.runtime_root is None:
            return
        for path in (self.dir, self.dir.parent):
            try:
                path.rmdir()
            except OSError:
                return  # not empty (or already gone)


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def observe(pid: int) -> ProcessFacts:
    """What /proc says about `pid` now."""
    try:
        state, ticks = parse_proc_stat(Path(f"/proc/{pid}/stat").read_text())
        environ = parse_environ(Path(f"/proc/{pid}/environ").read_bytes())
    except (OSError, ValueError):
        return ProcessFacts(False)
    if state in ("Z", "X"):  # exited, not yet reaped by its (new) parent
        return ProcessFacts(False)
    return ProcessFacts(True, ticks, boot_id(), environ.get("CONNECT_PROXY_ID"))


def record_of(proxy_id: str, pid: int, agent_addr: str, command: list[str]) -> SidecarRecord | None:
    """The record of a process just started; None if it is already gone."""
    facts = observe(pid)
    if not facts.running:
        return None
    return SidecarRecord(proxy_id, pid, facts.start_ticks, facts.boot_id, agent_addr, tuple(command))
