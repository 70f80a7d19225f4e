"""`make bench`: run every benchmark in turn. Select some with BENCH=control_plane,identity."""

from __future__ import annotations

import importlib
import os
import sys

ORDER = ["control_plane", "acl", "cli", "identity", "authz", "proxy_chain", "egress"]


def main() -> int:
    wanted = [b for b in os.environ.get("BENCH", "").split(",") if b] or ORDER
    failed = []
    for name in wanted:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.{name}":
                print(f"(bench {name}: not present, skipped)")
                continue
            raise
        print(f"\n# bench: {name}", flush=True)
        try:
            module.main()
        except Exception as exc:  # one broken benchmark must not hide the others' tables
            print(f"bench {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
