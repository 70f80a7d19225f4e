"""What a newcomer meets first (issue 17): help that reads at 80 columns and in a pipe, with
an example for every command; errors that name what to do next."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from tether.cli.main import build_app

BOX = re.compile("[\u2500-\u257f]")  # box-drawing characters (Rich's panels)


def leaf_commands(command, path=()):
    """Every runnable command path under a click group."""
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        yield path
        return
    for name, sub in sorted(subcommands.items()):
        yield from leaf_commands(sub, path + (name,))


COMMANDS = sorted(leaf_commands(typer.main.get_command(build_app())))


def test_every_command_is_listed():
    assert len(COMMANDS) > 40 and ("kv", "get") in COMMANDS and ("acl", "token", "create") in COMMANDS


@pytest.mark.parametrize("path", [p for p in COMMANDS if p != ("connect", "proxy")], ids=" ".join)
def test_help_reads_at_80_columns_with_an_example(path):
    result = CliRunner().invoke(build_app(), [*path, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert not BOX.search(text), f"box art in {' '.join(path)} --help"
    too_long = [line for line in text.splitlines() if len(line) > 80]
    assert too_long == [], too_long
    assert "Example" in text, f"{' '.join(path)} --help shows no example"


def test_the_proxy_help_reads_at_80_columns_in_a_pipe():
    result = subprocess.run([sys.executable, "-m", "tether.cli.main", "connect", "proxy", "--help"],
                            capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"}, timeout=60)
    assert result.returncode == 0 and "examples:" in result.stdout
    assert not BOX.search(result.stdout) and max(len(line) for line in result.stdout.splitlines()) <= 80


def test_an_unreachable_agent_names_every_way_to_point_at_one():
    with socket.socket() as held:  # a port nobody listens on, held so nothing else takes it
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "tether.cli.main", "kv", "get", "x", "-http-addr",
                                 f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    for word in ("-http-addr", "TETHER_HTTP_ADDR", "CONSUL_HTTP_ADDR", "tether agent -dev"):
        assert word in result.stderr, result.stderr


def test_a_consul_1_2_proxy_id_gets_a_hint(dev_agent):
    result = subprocess.run([sys.executable, "-m", "tether.cli.main", "connect", "proxy", "-proxy-id", "web-proxy",
                             "-http-addr", dev_agent.addr], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "'web-sidecar-proxy'" in result.stderr and "-sidecar-for" in result.stderr, result.stderr
