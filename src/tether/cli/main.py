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

from tether.core.errors import TetherError

HELP = "Tether: a service mesh. Identity, mutual TLS and name-based authorization between services."

#: Every command: name -> (module in tether.cli, attribute, "command" or "group"). Only the
#: module of the command being run is imported, so `tether kv get` loads no more than it
#: needs (docs/performance.md, "CLI start-up"); help for `tether` itself loads them all.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "agent": ("run_cmds", "agent", "command"),
    "server": ("run_cmds", "server", "command"),
    "members": ("catalog_cmds", "members", "command"),
    "services": ("catalog_cmds", "services_app", "group"),
    "catalog": ("catalog_cmds", "catalog_app", "group"),
    "kv": ("kv_cmds", "kv_app", "group"),
    "intention": ("intention_cmds", "intention_app", "group"),
    "policy": ("policy_cmds", "policy_app", "group"),
    "connect": ("connect_cmds", "connect_app", "group"),
    "apply": ("apply_cmds", "apply", "command"),
    "delete": ("apply_cmds", "delete", "command"),
    "get": ("get_cmds", "get", "command"),
    "external": ("apply_cmds", "external_app", "group"),
    "ca": ("ca_cmds", "ca_app", "group"),
    "proxy": ("gateway_cmds", "proxy", "command"),
    "acl": ("acl_cmds", "acl_app", "group"),
    "lock": ("lock_cmds", "lock", "command"),
    "maint": ("maint_cmds", "maint", "command"),
    "reload": ("maint_cmds", "reload", "command"),
    "config": ("config_cmds", "config_app", "group"),
    "snapshot": ("snapshot_cmds", "snapshot_app", "group"),
    "operator": ("operator_cmds", "operator_app", "group"),
}


def build_app(names: list[str] | None = None) -> typer.Typer:
    """The `tether` Typer app with the given commands (all of them when None)."""
    import importlib

    app = typer.Typer(name="tether", help=HELP, no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False, rich_markup_mode=None,
                      context_settings={"help_option_names": ["-h", "--help", "-help"]})
    app.callback()(lambda: None)  # a group even when one command is loaded
    for name in names if names is not None else list(COMMANDS):
        module, attribute, kind = COMMANDS[name]
        target = getattr(importlib.import_module(f"tether.cli.{module}"), attribute)
        if kind == "command":
            app.command(name)(target)
        else:
            app.add_typer(target, name=name)
    return app


def _command_name(argv: list[str]) -> str | None:
    """The subcommand being run (the first word that is not an option), if it is one of ours."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


def run(argv: list[str] | None = None) -> None:
    """Entry point: translate every outcome into an exit code and at most one line."""
    args = sys.argv[1:] if argv is None else argv
    name = _command_name(args)
    app = build_app([name] if name else None)
    try:
        result = app(args=args, standalone_mode=False)
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
