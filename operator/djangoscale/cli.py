"""The `djangoscale` command.

Each subcommand lives in its own module so that `djangoscale serve`, which runs inside the
user's Django image, never imports kopf or the Kubernetes client. A command module exposes
`configure(parser)` (argparse only, no heavy imports at module level) and `main(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("djangoscale.controller.cli", "run the operator"),
    "render": ("djangoscale.render", "validate DjangoService documents and print their children"),
    "serve": ("djangoscale.serve.cli", "serve a Django WSGI app under the chosen server"),
    "cluster": ("djangoscale.cluster.cli", "start or stop the local control plane"),
    "dev": ("djangoscale.dev", "local cluster + operator + example, one command"),
    "worker": ("djangoscale.celery.worker", "run a Celery worker (threads, fair, acks late)"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="djangoscale")
    sub = parser.add_subparsers(dest="command", required=True)
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module_name, help_text) in COMMANDS.items():
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
    args = build_parser(argv).parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
