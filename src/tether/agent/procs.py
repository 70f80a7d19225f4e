"""Handles on the supervisor's sidecar processes: a child it started, or a process it adopted.

Both answer the same four questions (pid, running, wait, signal). An adopted process is not
our child (its first agent started it), so it is followed through a pidfd (Linux 5.3+):
readable once the process has exited, and signals go through it, so a PID the kernel
has handed to someone else meanwhile can never be signalled by mistake. Its exit status
belongs to its parent (init, or a subreaper), not to us.
"""

from __future__ import annotations

import asyncio
import os
import signal


class Child:
    """A process this agent started (asyncio owns the reaping)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def wait(self) -> str:
        return f"exit status {await self.process.wait()}"

    def send_signal(self, sig: int) -> None:
        if self.running:
            self.process.send_signal(sig)


class Adopted:
    """A process this agent did not start, followed by its pidfd (opened before it was verified)."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self._exited: asyncio.Future[None] | None = None

    @classmethod
    def open(cls, pid: int) -> "Adopted | None":
        """A handle on `pid`, or None if no such process exists."""
        try:
            return cls(pid, os.pidfd_open(pid))
        except ProcessLookupError:
            return None

    @property
    def running(self) -> bool:
        if self.pidfd < 0:
            return False
        try:
            signal.pidfd_send_signal(self.pidfd, 0)  # a zombie counts as exited
        except ProcessLookupError:
            return False
        return not _zombie(self.pid)

    async def wait(self) -> str:
        if self._exited is None:
            loop = asyncio.get_running_loop()
            self._exited = loop.create_future()
            if not self.running:
                self._exited.set_result(None)
            else:
                loop.add_reader(self.pidfd, self._on_exit)
        await asyncio.shield(self._exited)
        return "exited (status unknown: adopted, not our child)"

    def _on_exit(self) -> None:
        asyncio.get_running_loop().remove_reader(self.pidfd)
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(None)

    def send_signal(self, sig: int) -> None:
        if self.pidfd < 0:
            return
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        if self.pidfd >= 0:
            if self._exited is not None and not self._exited.done():
                asyncio.get_running_loop().remove_reader(self.pidfd)
                self._exited.cancel()
            os.close(self.pidfd)
            self.pidfd = -1


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


Handle = Child | Adopted
