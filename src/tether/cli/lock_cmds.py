"""`tether lock`: run a command while holding a KV lock (Consul's `consul lock` recipe).

1. Create a session on the local agent's node: TTL 15s, renewed while the lock is held,
   bound to `serfHealth` and to any `-check` given, so a failing check ends the lock.
2. Acquire `<prefix>/.lock` with `?acquire=<session>`; while another holds it, wait on it
   with a blocking query (and keep the session renewed).
3. Run the command; watch the key. If the lock is lost (the session was invalidated, or
   someone released it), stop the command (SIGTERM, then SIGKILL after a grace) and exit 1.
4. When the command ends, release the key and destroy the session.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import typer

from tether.cli.client import Client
from tether.cli.common import HttpAddr, Token, TokenFile, client
from tether.core.duration import parse_duration
from tether.core.errors import InvalidInput, NotFound, TetherError

LOCK_KEY = ".lock"  # Consul's key under the prefix
SESSION_TTL = "15s"  # what `consul lock` uses
#: A blocking query's wait while waiting for or watching the lock: also how often the session
#: is renewed (well inside its TTL) and how soon a finished command is noticed.
WATCH_WAIT = "1s"
#: How long a command gets to stop after SIGTERM once its lock is lost, before SIGKILL.
KILL_GRACE = 5.0


def lock(
    prefix: str = typer.Argument(..., help="KV prefix of the lock; the lock key is <prefix>/.lock."),
    command: list[str] = typer.Argument(..., help="The command to run while the lock is held."),
    name: str = typer.Option("Tether lock", "-name", "--name", help="The session's name."),
    timeout: str = typer.Option("0s", "-timeout", "--timeout", metavar="DURATION",
                                help="Give up (exit 1) if the lock is not acquired in time; 0s: wait forever."),
    checks: list[str] = typer.Option([], "-check", "--check", metavar="CHECK_ID",
                                     help="A node health check that must stay non-critical (repeatable)."),
    lock_delay: str = typer.Option("15s", "-lock-delay", "--lock-delay", metavar="DURATION",
                                   help="How long the key stays unacquirable after the session is invalidated."),
    shell: bool = typer.Option(True, "-shell/-no-shell", "--shell/--no-shell",
                               help="Run the command through `sh -c` (Consul's default) or directly."),
    child_exit_code: bool = typer.Option(False, "-child-exit-code", "--child-exit-code",
                                         help="Exit 2 when the command fails (else 0 once it ran)."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> int:
    """Run COMMAND while holding the lock PREFIX/.lock; only one holder at a time.

    Exit 0 when the command ran (2 with -child-exit-code if it failed), 1 when the lock was
    not acquired within -timeout or was lost while the command ran.

    Examples:

      tether lock service/leader ./run-singleton.sh

      tether lock -check leader-health -timeout 30s jobs/backup 'pg_dump db > db.sql'
    """
    wait_limit = parse_duration(timeout, field="-timeout")
    if wait_limit < 0:
        raise InvalidInput(f"-timeout: must not be negative, got {timeout!r}")
    parse_duration(lock_delay, field="-lock-delay")
    api = client(http_addr, token, token_file)
    key = f"/v1/kv/{prefix.strip('/')}/{LOCK_KEY}"
    body: dict[str, Any] = {"Name": name, "TTL": SESSION_TTL, "LockDelay": lock_delay, "Behavior": "release"}
    if checks:
        body["NodeChecks"] = ["serfHealth", *checks]
    session = api.put("/v1/session/create", json=body).json()["ID"]
    try:
        index = _acquire(api, key, session, wait_limit)
        if index is None:
            print(f"tether lock: lock {prefix} not acquired within {timeout}", file=sys.stderr)
            return 1
        child = subprocess.Popen(["sh", "-c", " ".join(command)] if shell else command)
        stop = _forward_signals(child)
        try:
            lost = _hold(api, key, session, index, child)
        except TetherError as exc:  # the agent stopped answering: the lock cannot be vouched for
            lost = f"cannot watch the lock: {exc}"
        finally:
            stop()
        if lost:
            print(f"tether lock: lock {prefix} lost ({lost}); stopping the command", file=sys.stderr)
            _stop(child)
            return 1
        return 2 if child_exit_code and child.returncode != 0 else 0
    finally:
        _let_go(api, key, session)


def _acquire(api: Client, key: str, session: str, wait_limit: float) -> int | None:
    """Acquire the key; the blocking index to watch from then, or None on timeout."""
    deadline = time.monotonic() + wait_limit if wait_limit else None
    holder = json.dumps({"Holder": f"{socket.gethostname()}:{os.getpid()}"}).encode()
    index = 0
    while True:
        if api.put(key, params={"acquire": session}, content=holder).json() is True:
            return int(api.get(key).headers["X-Consul-Index"])
        if deadline is not None and time.monotonic() >= deadline:
            return None
        index = _watch(api, key, index)
        api.put(f"/v1/session/renew/{session}")


def _watch(api: Client, key: str, index: int) -> int:
    response = api.get(key, params={"index": str(index), "wait": WATCH_WAIT}, ok404=True)
    new = int(response.headers.get("X-Consul-Index", "0"))
    return new if new >= index else 0  # an index that went backwards restarts the watch


def _hold(api: Client, key: str, session: str, index: int, child: subprocess.Popen) -> str:
    """Watch the lock while the command runs; why it was lost, or "" when the command ended first."""
    while child.poll() is None:
        response = api.get(key, params={"index": str(index), "wait": WATCH_WAIT}, ok404=True)
        if response.status_code == 404:
            return "the lock key was deleted"
        if response.json()[0].get("Session") != session:
            return "the session was invalidated or the lock released"
        index = int(response.headers["X-Consul-Index"])
        try:
            api.put(f"/v1/session/renew/{session}")
        except NotFound:
            return "the session is gone"
    return ""


def _forward_signals(child: subprocess.Popen) -> Any:
    """SIGINT/SIGTERM to `tether lock` go to the command; the lock is let go when it ends."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    return lambda: [signal.signal(sig, handler) for sig, handler in previous.items()]


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(KILL_GRACE)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _let_go(api: Client, key: str, session: str) -> None:
    """Release the key (if still held) and destroy the session; best effort on the way out."""
    try:
        api.put(key, params={"release": session}, content=b"")
        api.put(f"/v1/session/destroy/{session}")
    except TetherError as exc:  # the agent may be gone: the session's TTL ends it anyway
        print(f"tether lock: could not release the lock cleanly ({exc}); its session expires with its TTL",
              file=sys.stderr)
