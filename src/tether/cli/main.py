"""The `tether` command. Exit codes: 0 ok, 1 a negative answer (denied, missing, CAS lost),
2 an error (bad input, unreachable agent), with one line on stderr saying what to do.
"""

from __future__ import annotations

import sys

import typer

try:  # typer 0.2x vendors its own click; older releases use click itself
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import ClickException, UsageError

from tether.cli import apply_cmds, ca_cmds, catalog_cmds, connect_cmds, kv_cmds, run_cmds
from tether.cli import intention_cmds, policy_cmds
from tether.cli import acl_cmds, gateway_cmds
from tether.core.errors import TetherError

app = typer.Typer(
    name="tether",
    help="Tether: a service mesh. Identity, mutual TLS and name-based authorization between services.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help", "-help"]},
)
app.command("agent")(run_cmds.agent)
app.command("server")(run_cmds.server)
app.command("members")(catalog_cmds.members)
app.add_typer(catalog_cmds.services_app, name="services")
app.add_typer(catalog_cmds.catalog_app, name="catalog")
app.add_typer(kv_cmds.kv_app, name="kv")
app.add_typer(intention_cmds.intention_app, name="intention")
app.add_typer(policy_cmds.policy_app, name="policy")
app.add_typer(connect_cmds.connect_app, name="connect")
app.command("apply")(apply_cmds.apply)
app.add_typer(apply_cmds.external_app, name="external")
app.add_typer(ca_cmds.ca_app, name="ca")
app.command("proxy")(gateway_cmds.proxy)
app.add_typer(acl_cmds.acl_app, name="acl")


def run(argv: list[str] | None = None) -> None:
    """Entry point: translate every outcome into an exit code and at most one line."""
    try:
        result = app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("tether: interrupted", file=sys.stderr)
        sys.exit(130)
    except UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "tether"
        print(f"{command}: {exc.format_message()} (see '{command} --help')", file=sys.stderr)
        sys.exit(2)
    except ClickException as exc:
        print(f"tether: {exc.format_message()}", file=sys.stderr)
        sys.exit(2)
    except TetherError as exc:
        print(f"tether: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # e.g. the API port is taken
        print(f"tether: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    run()
