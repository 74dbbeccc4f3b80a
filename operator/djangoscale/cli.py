"""The `djangoscale` command.

Each subcommand lives in its own module so that `djangoscale serve`, which runs inside the
user's Django image, never imports kopf or the Kubernetes client. A command module exposes
`configure(parser)` (argparse only, no heavy imports at module level) and `main(args) -> int`.

Other installed packages add commands through the `djangoscale.commands` entry points: the
developer tooling in `devtools/` (`cluster`, `dev`) joins that way, so the product never
imports it and the operator image, which lacks it, simply lists fewer commands.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "djangoscale.commands"

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("djangoscale.controller.cli", "run the operator"),
    "doctor": ("djangoscale.doctor", "check a cluster for djangoscale's health (exit 1: findings)"),
    "render": ("djangoscale.render", "validate DjangoService documents and print their children"),
    "serve": ("djangoscale.serve.cli", "serve a Django WSGI app under the chosen server"),
    "worker": ("djangoscale.celery.worker", "run a Celery worker (threads, fair, acks late)"),
    "prestop": ("djangoscale.serve.prestop",
                "a terminating pod's preStop hook: shrink its pgbouncer's pool, then wait"),
}


# The extra that brings a built-in command's dependencies (`pip install 'djangoscale[...]'`).
# `render` needs none: it runs from the base install.
COMMAND_EXTRAS: dict[str, str] = {
    "run": "operator", "doctor": "operator", "serve": "serve", "worker": "celery",
    "prestop": "serve",
}


def available_commands() -> dict[str, tuple[str, str]]:
    """The built-in commands, plus those that installed plugins declare."""
    commands = dict(COMMANDS)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        origin = entry.dist.name if entry.dist else "a plugin"
        commands.setdefault(entry.name, (entry.value, f"(from {origin})"))
    return commands


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="djangoscale")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = available_commands()
    wanted = argv[0] if argv and argv[0] in commands else None
    for name, (module_name, help_text) in commands.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        # Only import the module of the command being run: the others may need extras
        # (kopf, kubernetes) that are not installed in a Django image.
        if name == wanted:
            module = importlib.import_module(module_name)
            module.configure(command)
            command.set_defaults(handler=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(argv).parse_args(argv)
        return int(args.handler(args) or 0)
    except ModuleNotFoundError as error:
        missing = (error.name or "").partition(".")[0]
        if not missing or missing == "djangoscale":
            raise  # a bug of ours, not a missing extra
        print(missing_dependency(argv[0] if argv else "", missing), file=sys.stderr)
        return 2


def missing_dependency(command: str, module: str) -> str:
    """One line: what is missing and what installs it."""
    extra = COMMAND_EXTRAS.get(command)
    remedy = (f"pip install 'djangoscale[{extra}]'" if extra
              else "install the package that provides this command")
    return f"djangoscale {command}: the Python module {module!r} is not installed: {remedy}"


if __name__ == "__main__":
    sys.exit(main())
