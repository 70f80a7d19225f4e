"""`make mutants`: break what the suite exists to protect, and check that tests notice.

Each mutant is one textual change to a copy of src/ (the worktree is never touched), run
with the tests that guard it: the copy comes first on PYTHONPATH, so the tests and every
process they start (agents, proxies) run the mutant. A mutant must make at least one test
fail (pytest exit code 1); one that survives (exit 0) or breaks the run (any other code)
fails the check. The same tests are first run on the unmutated copy, which must pass.

Results are recorded in docs/testing.md ("Mutation check").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # under src/tether
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = (
    Mutant("the proxy's listener stops verifying client certificates", "proxy/tls.py",
           "        server.options |= ssl.OP_NO_TICKET\n",
           "        server.options |= ssl.OP_NO_TICKET\n        server.verify_mode = ssl.CERT_NONE\n",
           ("tests/proxy/test_faults.py", "tests/proxy/test_authorize.py")),
    Mutant("the SDK's server stops verifying client certificates", "sdk/tls.py",
           "    return _base(ssl.Purpose.CLIENT_AUTH, material)\n",
           "    ctx = _base(ssl.Purpose.CLIENT_AUTH, material)\n    ctx.verify_mode = ssl.CERT_NONE\n    return ctx\n",
           ("tests/sdk/test_native.py",)),
    Mutant("the authorizer allows everything", "core/authz.py",
           "    if explain:\n        return _explain(snapshot, source, destination, port)\n",
           "    return Decision(True, False, None, 'mutant: allow everything')\n",
           ("tests/core/test_decide.py", "tests/proxy/test_authorize.py")),
    Mutant("blocking queries return at once", "store/cached.py",
           "        if current != index or timeout <= 0:\n            return current\n",
           "        return current\n",
           ("tests/store/test_conformance.py", "tests/control/test_http_api.py",
            "tests/integration/test_intentions_api.py")),
    Mutant("any web page may drive the API", "core/browserguard.py",
           "    # 1. Host names this API (or is absent).\n",
           "    return None  # mutant: no Origin or Host check\n",
           ("tests/core/test_browserguard.py", "tests/api/test_browser_guard.py")),
    Mutant("the database is created under the umask (its WAL readable by others)", "store/sqlite.py",
           "        create_private_file(self.path)\n",
           "",
           ("tests/store/test_datadir.py",)),
    Mutant("JSON nesting is not limited", "api/common.py",
           "    check_json_depth(body)  # before parsing: the parser recurses once per level\n",
           "",
           ("tests/api/test_bad_input.py",)),
)


def pytest(src: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    """(exit code, the first failing test's ID or "")."""
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-rf", "-p", "no:cacheprovider", "-o", "addopts=", *tests]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    failed = next((line.split()[1] for line in run.stdout.splitlines() if line.startswith("FAILED ")), "")
    return run.returncode, failed


def main() -> int:
    failed = 0
    with tempfile.TemporaryDirectory(prefix="tether-mutants-") as tmp:
        for m in MUTANTS:
            src = Path(tmp) / m.name.replace(" ", "-")
            shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
            target = src / "tether" / m.path
            text = target.read_text()
            if text.count(m.old) != 1:
                print(f"{m.name}: STALE: the text to change is not in src/tether/{m.path} exactly once; update MUTANTS")
                failed += 1
                continue
            started = time.monotonic()
            rc, first = pytest(src, m.tests)
            if rc != 0:
                print(f"{m.name}: BROKEN: the tests fail without the mutant (exit {rc}, {first})")
                failed += 1
                continue
            target.write_text(text.replace(m.old, m.new))
            rc, first = pytest(src, m.tests)
            verdict = {1: f"KILLED   by {first}"}.get(rc, "SURVIVED" if rc == 0 else f"ERROR {rc}")
            print(f"{m.name}: {verdict} ({time.monotonic() - started:.0f}s)")
            failed += rc != 1
    print("mutation check:", "every mutant was caught" if not failed else f"{failed} mutant(s) not caught")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
