"""Rewrite the ACL table in docs/api.md from the routes' own declarations (`needs(...)`).

    .venv/bin/python scripts/acl_table.py

tests/acl/test_route_table.py fails when the table and the routes disagree; this is the fix.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tether import daemon
from tether.api.acl import format_route_table, route_table
from tether.core.agent_config import AclConfig

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"
HEADER = "| method | path | ACL needed |"


async def dev_table() -> str:
    options = daemon.Options(role="dev", http_port=0, dns_port=-1, managed_proxies=False,
                             acl=AclConfig(enabled=True, default_policy="deny"))
    async with daemon.open_runtime(options) as app:
        return format_route_table(route_table(app))


def main() -> int:
    lines = DOCS.read_text().splitlines()
    start = lines.index(HEADER)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    table = asyncio.run(dev_table()).splitlines()
    if not table[0] == HEADER:
        print(f"format_route_table's header changed; expected {HEADER!r}", file=sys.stderr)
        return 1
    DOCS.write_text("\n".join([*lines[:start], *table, *lines[end:]]) + "\n")
    print(f"docs/api.md: {len(table) - 2} routes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
