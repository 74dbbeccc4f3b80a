"""`djangoscale render`: the children of DjangoService documents, as the operator would apply them.

For review in a GitOps pull request or for `kubectl apply`. Validation is the operator's own
(spec.parse), so what renders here is what the operator accepts.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import yaml

from djangoscale import spec
from djangoscale.builders import build_children


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE",
        help="a YAML file of DjangoService documents; '-' reads standard input",
    )


def _read(filename: str, stdin: TextIO) -> list[Any]:
    text = stdin.read() if filename == "-" else open(filename, encoding="utf-8").read()
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def render(documents: list[tuple[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Children of every valid document, and one line per problem of the others."""
    children: list[dict[str, Any]] = []
    problems: list[str] = []
    for where, document in documents:
        if not isinstance(document, dict):
            problems.append(f"{where}: not a YAML mapping")
            continue
        try:
            children += build_children(spec.parse(document))
        except spec.SpecError as error:
            problems += [f"{where}: {problem}" for problem in error.problems]
    return children, problems


def main(args: argparse.Namespace) -> int:
    documents: list[tuple[str, Any]] = []
    for filename in args.filename:
        try:
            loaded = _read(filename, sys.stdin)
        except (OSError, yaml.YAMLError) as error:
            print(f"{filename}: {error}".replace("\n", " "), file=sys.stderr)
            return 2
        label = "<stdin>" if filename == "-" else filename
        documents += [(f"{label}#{index}", doc) for index, doc in enumerate(loaded)]
    children, problems = render(documents)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1
    yaml.safe_dump_all(children, sys.stdout, sort_keys=False)
    return 0
