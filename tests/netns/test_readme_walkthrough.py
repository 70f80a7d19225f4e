"""The README's five-minute walkthrough, run as written (issue 17).

The README's shell blocks are taken from README.md itself, so a change to the README is
tested as it reads. They use the ports a newcomer's laptop has free (8500, 5432, 9191);
here they run in a network namespace of their own, whose loopback is empty, so the
walkthrough keeps its fixed ports without taking them from anything else on the machine.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tether.testing.netns import Topology

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def walkthrough_blocks() -> list[str]:
    """The ```sh blocks of the "Five minutes" section, in order."""
    text = README.read_text()
    section = text.split("## Five minutes", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def test_the_readme_has_the_walkthrough_the_test_runs():
    blocks = walkthrough_blocks()
    assert blocks[0].strip() == "make run" and len(blocks) == 2


def test_the_readme_walkthrough_runs_as_written(tmp_path):
    start, steps = walkthrough_blocks()
    with Topology({"laptop": "198.51.100.10"}) as net:
        laptop = net["laptop"]
        log = (tmp_path / "agent.log").open("w")
        # "In one terminal": the first block, as typed.
        laptop.popen(["bash", "-c", start], cwd=ROOT, stdout=log, stderr=log)
        wait = laptop.run(["bash", "-c", "for i in $(seq 150); do curl -sf 127.0.0.1:8500/v1/status/leader "
                                         ">/dev/null && exit 0; sleep 0.2; done; exit 1"], timeout=60)
        assert wait.returncode == 0, (tmp_path / "agent.log").read_text()
        # "In another": activate the venv, then the second block, as typed.
        run = laptop.run(["bash", "-c", f"cd {ROOT}\nsource .venv/bin/activate\n{steps}\necho WALKTHROUGH-DONE"],
                         timeout=180)
    out = run.stdout
    agent_log = (tmp_path / "agent.log").read_text()
    assert "WALKTHROUGH-DONE" in out, (out, run.stderr, agent_log)
    assert "command not found" not in run.stderr and "Traceback" not in run.stderr + agent_log, run.stderr
    expected = ["Registered service: web", "Registered service: db", "db-sidecar-proxy", "web-sidecar-proxy",
                "<!DOCTYPE HTML>", "Created: web => db (deny)", "curl exit 52", "Denied", "exit 1",
                "Created: web => db (allow)", "Allowed: web -> db", "Decided by: intention web -> db (allow",
                '"Service": "db-sidecar-proxy"', "Success! Data written to: db/max-connections", "100"]
    missing = [line for line in expected if line not in out]
    assert missing == [], (missing, out.replace("\n", " | "), run.stderr)
    # Allowed, denied, allowed: the page appears before the deny and again after the allow.
    assert out.index("<!DOCTYPE HTML>") < out.index("curl exit 52") < out.rindex("<!DOCTYPE HTML>")
    assert run.stderr.count("tether: ") == 0, run.stderr  # no command failed with an error
