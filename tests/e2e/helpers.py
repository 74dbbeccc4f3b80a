"""Shared pieces of the operator's end-to-end tests: objects, polling, an operator process."""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from djangoscale.spec import GROUP, VERSION
from tests.fixtures.services import stop_process

API = f"{GROUP}/{VERSION}"




@contextlib.contextmanager
def start_operator(
    kubeconfig: Path, log: Path, *args: str, resync_seconds: int = 3,
    module: str = "djangoscale.cli", env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`djangoscale run` as a real process, stopped (SIGTERM, then SIGKILL) at the end.

    `module` runs another entry point with the same arguments (a patched operator)."""
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "run", "--liveness-port", "0",
             "--metrics-port", "0", "--metrics-api-port", "0", "--bind", "127.0.0.1", *args],
            env={**os.environ, "KUBECONFIG": str(kubeconfig),
                 "DJANGOSCALE_RESYNC_SECONDS": str(resync_seconds), **(env or {})},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        stop_process(process)


def secret(namespace: str, password: str = "e2e-secret-password") -> dict[str, Any]:
    values = {"host": "127.0.0.1", "port": "5432", "dbname": "shop", "user": "shop",
              "password": password}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "shop-db", "namespace": namespace},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def djangoservice(namespace: str, name: str = "shop", **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": API,
        "kind": "DjangoService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "image": "registry.example.com/shop:1.4.2",
            "wsgiApp": "shop.wsgi:application",
            "server": {"type": "cherrypy", "threads": 20, "maxThreads": 30},
            "replicas": {"min": 2, "max": 5},
            "autoscaling": {"targetRPSPerPod": 20},
            "database": {"secretName": "shop-db", "maxConnections": 40},
            # KWOK runs no Job pod: test_lifecycle.py drives the migration gate itself.
            "migrations": {"enabled": False},
        },
    }
    body["spec"].update(spec)
    return body


def condition(
    kube: Any, namespace: str, type_: str = "Ready", name: str = "shop"
) -> dict[str, Any]:
    live = kube.get(API, "DjangoService", namespace, name) or {}
    status = live.get("status", {})
    found = next((c for c in status.get("conditions", []) if c["type"] == type_), {})
    return {**found, "generation": live.get("metadata", {}).get("generation"),
            "observedGeneration": status.get("observedGeneration")}


def ready(kube: Any, namespace: str, name: str = "shop") -> bool:
    found = condition(kube, namespace, name=name)
    return found.get("status") == "True" and found["observedGeneration"] == found["generation"]
