"""A second real Consul client besides py-consul: the `consul` npm package, unchanged, runs a
smoke script (tests/integration/node_consul_smoke.js) against a dev agent."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tether.testing.deps import missing

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / ".deps" / "node" / "node_modules"
SCRIPT = Path(__file__).with_name("node_consul_smoke.js")


@pytest.mark.skipif(shutil.which("node") is None, reason=missing("node"))
@pytest.mark.skipif(not (NODE_MODULES / "consul").is_dir(), reason=missing("the consul npm package in .deps/node"))
def test_the_consul_npm_package_smoke_run(dev_agent):
    run = subprocess.run(["node", str(SCRIPT)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TETHER_URL": dev_agent.url, "NODE_PATH": str(NODE_MODULES)})
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("ok ") == 10
