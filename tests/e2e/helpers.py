"""Shared pieces of the operator's end-to-end tests: objects, polling, an operator process."""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from djangoscale.spec import GROUP, VERSION
from djangoscale_dev.cluster import LocalCluster
from djangoscale_dev.cluster.nodeconfig import NodePaths
from tests.fixtures import operator_log
from tests.fixtures.polling import wait_for
from tests.fixtures.services import free_port, stop_process

API = f"{GROUP}/{VERSION}"
# The local cluster's HPA controller syncs every this many seconds (the `cluster` fixture).
HPA_SYNC_PERIOD = 2


@dataclass
class OperatorProcess:
    """A running `djangoscale run`, its log, and its Prometheus metrics port."""

    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.split("{")[0].split(" ")[0] == name)

    def reconciles(self) -> float:
        """The operator's reconcile counter (creations, changes and resyncs alike)."""
        return self.metric("djangoscale_operator_reconciles_total")

    def wait_for_resyncs(self, objects: Callable[[], int], rounds: int = 2,
                         timeout: float = 60.0) -> float:
        """Wait until every object the operator resyncs could have been reconciled `rounds`
        times from now; how far the counter moved.

        The counter is the operator's, not one object's: it must move by `rounds` times the
        number of objects whose resync runs (`objects()`, asked again at every look, as other
        tests' objects go away), each object's resync having the same period."""
        start = self.reconciles()
        wait_for(f"{rounds} resyncs of every object after {start:.0f} reconciles",
                 lambda: self.reconciles() - start >= rounds * max(1, objects()),
                 timeout=timeout)
        return self.reconciles() - start


@contextlib.contextmanager
def start_operator(
    kubeconfig: Path, log: Path, *args: str, resync_seconds: int = 3,
    module: str = "djangoscale.cli", env: Mapping[str, str] | None = None,
) -> Iterator[OperatorProcess]:
    """`djangoscale run` as a real process, stopped (SIGTERM, then SIGKILL) at the end.

    Its log is then checked (tests/fixtures/operator_log.py): no traceback, no failed handler,
    whatever the exit code. `args` come last, so they override the defaults here; `module`
    runs another entry point with the same arguments (a patched operator)."""
    metrics_port = free_port()
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "run", "--liveness-port", "0",
             "--metrics-port", str(metrics_port), "--metrics-api-port", "0",
             "--bind", "127.0.0.1", *args],
            env={**os.environ, "KUBECONFIG": str(kubeconfig),
                 "DJANGOSCALE_RESYNC_SECONDS": str(resync_seconds), **(env or {})},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield OperatorProcess(process, log, metrics_port)
    except BaseException as error:
        stop_process(process)
        # The test's own failure stays the one reported; the log's problems go with it.
        found = operator_log.problems(log.read_text(errors="replace"))
        if found:
            error.add_note("operator log:\n" + "\n---\n".join(found[:3]))
        raise
    stop_process(process)
    operator_log.assert_clean(log.read_text(errors="replace"))


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


def container_init_pid(cluster: LocalCluster, status: dict[str, Any]) -> int:
    """The host pid of a real-node container's first process (`status`, one of its pod's
    containerStatuses), from its containerd bundle."""
    container_id = status["containerID"].removeprefix("containerd://")
    paths = NodePaths(cluster.dir / "node")
    return int((paths.task_bundles / container_id / "init.pid").read_text())


def pod_is_ready(pod: dict[str, Any]) -> bool:
    """The pod's Ready condition is True (its containers run, so it has its IP)."""
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])
