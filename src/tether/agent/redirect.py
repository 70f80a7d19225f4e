"""Applying the transparent-proxy rules in the current network namespace (I/O side of
core/redirect.py): privilege check, iptables-save to read the state, one atomic
iptables-restore to change it.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from tether.core.errors import InvalidInput, PermissionDenied
from tether.core.redirect import RedirectConfig, format_cleanup, format_install

CAP_NET_ADMIN = 12


def has_net_admin() -> bool:
    """True when this process may change netfilter rules (root or CAP_NET_ADMIN)."""
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except OSError:
        pass
    return False


def _require_tools() -> None:
    if not has_net_admin():
        raise PermissionDenied("redirect-traffic changes iptables rules: run it as root or with CAP_NET_ADMIN")
    for tool in ("iptables-save", "iptables-restore"):
        if shutil.which(tool) is None:
            raise InvalidInput(f"{tool} not found: install iptables (Debian: apt-get install iptables)")


def _run(args: list[str], stdin: str | None = None) -> str:
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise InvalidInput(f"{args[0]} failed: {detail[0] if detail else f'exit {result.returncode}'}")
    return result.stdout


def current_nat_rules() -> str:
    return _run(["iptables-save", "-t", "nat"])


def install_redirect(config: RedirectConfig) -> str:
    """Install (or refresh) the rules atomically; return the script that was applied."""
    _require_tools()
    script = format_install(config, current_nat_rules())
    _run(["iptables-restore", "--noflush"], stdin=script)
    return script


def cleanup_redirect() -> str:
    """Remove our rules and chains atomically; '' when there was nothing to remove."""
    _require_tools()
    script = format_cleanup(current_nat_rules())
    if script:
        _run(["iptables-restore", "--noflush"], stdin=script)
    return script
