"""`djangoscale render`: the children of DjangoService documents, as the operator would apply them.

For review in a GitOps pull request or for `kubectl apply`. Validation is the operator's own
(spec.parse), so what renders here is what the operator accepts.
"""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any, TextIO

import yaml

from djangoscale import spec
from djangoscale.builders import build_children
from djangoscale.builders.pgbouncer import CredentialsError, DatabaseCredentials


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
    if filename == "-":
        text = stdin.read()
    else:
        with open(filename, encoding="utf-8") as file:
            text = file.read()
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def _credentials_in(documents: list[tuple[str, Any]]) -> dict[tuple[str, Any], Any]:
    """Secrets given beside the DjangoServices, by (namespace, name), as credentials."""
    found = {}
    for _, document in documents:
        if isinstance(document, dict) and document.get("kind") == "Secret":
            metadata = document.get("metadata") or {}
            data = dict(document.get("data") or {})
            for key, value in (document.get("stringData") or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            found[(metadata.get("namespace") or "default", metadata.get("name"))] = data
    return found


def render(documents: list[tuple[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Children of every valid DjangoService, and one line per problem of the others.

    Other kinds are skipped, but a database Secret in the same input fills in the pgbouncer
    configuration; without one, the configuration shows placeholders.
    """
    children: list[dict[str, Any]] = []
    problems: list[str] = []
    secrets = _credentials_in(documents)
    for where, document in documents:
        if not isinstance(document, dict):
            problems.append(f"{where}: not a YAML mapping")
            continue
        if document.get("kind", spec.KIND) != spec.KIND:
            continue
        try:
            ds = spec.parse(document)
            credentials = None
            if ds.database is not None and ds.database.secret_name is not None:
                data = secrets.get((ds.namespace, ds.database.secret_name))
                if data is not None:
                    credentials = DatabaseCredentials.from_secret_data(
                        data, ds.database.secret_name
                    )
            children += build_children(ds, credentials)
        except spec.SpecError as error:
            problems += [f"{where}: {problem}" for problem in error.problems]
        except CredentialsError as error:
            problems.append(f"{where}: spec.database.secretName: {error}")
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
