"""`djangoscale dev` on the real node: the product as a user runs it, on this machine.

Under the machine-wide real-node lock: the real node up, the project's images built (or found
cached) and loaded into its containerd, PostgreSQL listening on the node's gateway with the
sample app's tables, the operator installed by the Helm chart with the local operator image,
and the example applied with the sample app image and a Secret pointing at that PostgreSQL.
`RealNodeStack` tears all of it down again (PostgreSQL, then the node) on exit, also after an
error or Ctrl-C.

The e2e tests of the real node use the same stack, so what they prove is what `make dev` runs.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from djangoscale_dev.cluster import nodeconfig
from djangoscale_dev.cluster.local import LocalCluster
from djangoscale_dev.images.project import OPERATOR, PGBOUNCER, SAMPLE_APP, project_root
from djangoscale_dev.postgres import (
    APP_DB,
    APP_PASSWORD,
    APP_USER,
    Postgres,
    migrate_sample_app,
    postgres,
)

Emit = Callable[[str], None]

# One real node per machine (one bridge, one pod range): whoever runs one holds this lock,
# the e2e fixture `real_cluster` included, so runs take turns instead of breaking each other.
REAL_NODE_LOCK = Path("/run/lock/djangoscale-real-node.lock")
# In the repository, as the images' build contexts are.
CHART = project_root() / "charts" / "djangoscale"
HELM_BUILD = project_root() / "tests" / "tools" / "helm" / "build.sh"  # helm from Go modules
SAMPLE_APP_SOURCE = project_root() / "tests" / "sampleapp"
RELEASE = NAMESPACE = "djangoscale"
# The chart with the operator image built here (no registry: the node has it already).
CHART_VALUES = ("--set", "image.repository=" + OPERATOR.split(":")[0],
                "--set", "image.tag=" + OPERATOR.split(":")[1])
APISERVICE = "/apis/apiregistration.k8s.io/v1/apiservices/v1beta2.custom.metrics.k8s.io"
# PostgreSQL's connections: the example's budget (40) plus the operator's and the view's.
PG_MAX_CONNECTIONS = 100
OPERATOR_READY_SECONDS = 240.0


class DevError(RuntimeError):
    pass


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def real_node_lock(emit: Emit = _stderr) -> Iterator[None]:
    """Hold REAL_NODE_LOCK; say so when another run holds it and this one waits."""
    REAL_NODE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(REAL_NODE_LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            emit(f"waiting for {REAL_NODE_LOCK}: another real node runs on this machine")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def host_lacks_for_real_node() -> str | None:
    """What this host lacks for a real node (root, tools), or None. Another run's node is no
    reason: whoever waits for REAL_NODE_LOCK gets the node after it."""
    from djangoscale_dev.cluster.node import missing_for_real_node

    missing = missing_for_real_node()
    return None if missing is None or missing.startswith("another real node") else missing


def real_node_documents(path: Path, pg: Postgres) -> list[dict[str, Any]]:
    """The example's objects made to run on the real node (`on_real_node`)."""
    return on_real_node([doc for doc in yaml.safe_load_all(path.read_text()) if doc], pg)


def on_real_node(objects: list[dict[str, Any]], pg: Postgres) -> list[dict[str, Any]]:
    """Copies of `objects` made to run on the real node: every DjangoService on the sample
    app and pgbouncer images built here, every Secret on the PostgreSQL started here."""
    documents = [copy.deepcopy(doc) for doc in objects]
    for document in documents:
        if document["kind"] == "Secret":
            document["stringData"] = {
                "host": nodeconfig.GATEWAY, "port": str(pg.port), "dbname": APP_DB,
                "user": APP_USER, "password": APP_PASSWORD,
            }
        elif document["kind"] == "DjangoService":
            spec = document["spec"]
            spec["image"] = SAMPLE_APP
            if (spec.get("pgbouncer") or {}).get("enabled"):
                spec["pgbouncer"]["image"] = PGBOUNCER
    return documents


def helm() -> str:
    """The helm binary, built from Go modules on first use (cached)."""
    done = subprocess.run([str(HELM_BUILD)], capture_output=True, text=True)
    if done.returncode != 0:
        raise DevError(f"building helm failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip()


def apiservice_available(cluster: LocalCluster) -> bool:
    from djangoscale_dev.cluster.api import ApiError

    try:
        live = cluster.client().get(APISERVICE)
    except ApiError:
        return False
    return any(c.get("type") == "Available" and c.get("status") == "True"
               for c in (live.get("status") or {}).get("conditions") or [])


def active_operator_ready(cluster: LocalCluster) -> bool:
    """One operator pod Ready: the chart's pods are Ready only while they lead (peering)."""
    pods = cluster.client().get(
        f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app.kubernetes.io/name%3D{RELEASE}")
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for pod in pods.get("items") or []
               for c in (pod.get("status") or {}).get("conditions") or [])


class RealNodeStack:
    """The real node, PostgreSQL and the chart's operator, started in `directory`'s parent
    (the cluster in `directory`); `close` stops them in reverse."""

    def __init__(self, directory: Path, *, hpa_sync_period: str = "5s",
                 emit: Emit = _stderr, chart_values: Sequence[str] = ()) -> None:
        self.cluster = LocalCluster(directory, hpa_sync_period=hpa_sync_period, emit=emit)
        self.chart_values = tuple(chart_values)  # helm arguments after CHART_VALUES
        self.emit = emit
        self.exits = contextlib.ExitStack()
        self.database: Postgres | None = None
        self.timings: dict[str, float] = {}

    def __enter__(self) -> RealNodeStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.exits.close()
        finally:
            self.emit("stopping the real node")
            self.cluster.down()

    def _timed(self, what: str, started: float) -> None:
        self.timings[what] = round(time.monotonic() - started, 1)
        self.emit(f"{what}: {self.timings[what]:.1f}s")

    def up(self) -> Path:
        """Everything up (the operator installed; `wait_for_operator` once a DjangoService is
        applied); returns the admin kubeconfig."""
        started = time.monotonic()
        self.emit("starting the real node (kubelet, containerd, CNI, kube-proxy)...")
        kubeconfig = self.cluster.up(node="real")
        self._timed("real node Ready", started)
        started = time.monotonic()
        self.load_images()
        self._timed("images built or cached, loaded", started)
        started = time.monotonic()
        self.database = self.start_postgres()
        self.emit(f"PostgreSQL on {nodeconfig.GATEWAY}:{self.database.port}, migrated")
        self._timed("PostgreSQL", started)
        started = time.monotonic()
        self.install_operator(kubeconfig)
        self._timed("operator installed by the chart", started)
        return kubeconfig

    def load_images(self) -> None:
        from djangoscale_dev.images import project

        archives = project.project_images(emit=self.emit, only={OPERATOR, SAMPLE_APP, PGBOUNCER})
        for tag in (OPERATOR, SAMPLE_APP, PGBOUNCER):
            self.cluster.load_image(archives[tag])

    def start_postgres(self) -> Postgres:
        """PostgreSQL where pods reach the host (the gateway), password login from the pod
        range, and the sample app's tables (migrated from the host)."""
        workdir = self.cluster.dir.parent / "postgres"
        workdir.mkdir(parents=True, exist_ok=True)
        pg = self.exits.enter_context(postgres(
            workdir, max_connections=PG_MAX_CONNECTIONS,
            listen=("127.0.0.1", nodeconfig.GATEWAY), password_networks=(nodeconfig.POD_CIDR,)))
        migrate_sample_app({
            "DATABASE_HOST": pg.host, "DATABASE_PORT": str(pg.port), "DATABASE_NAME": APP_DB,
            "DATABASE_USER": APP_USER, "DATABASE_PASSWORD": APP_PASSWORD,
        }, SAMPLE_APP_SOURCE, sys.executable)
        return pg

    def install_operator(self, kubeconfig: Path) -> None:
        """`helm install` of the chart, as a user runs it."""
        done = subprocess.run(
            [helm(), "install", RELEASE, str(CHART), "--namespace", NAMESPACE,
             "--create-namespace", *CHART_VALUES, *self.chart_values],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)})
        if done.returncode != 0:
            raise DevError(f"helm install failed:\n{done.stderr[-2000:]}")
        self.emit(f"helm install {RELEASE} {CHART.resolve()} (image {OPERATOR})")

    def wait_for_operator(self) -> None:
        """The leading operator pod Ready and the metrics API it serves to the HPA controller
        Available. The pod is Ready once it has collected RPS (its /readyz), which takes a
        DjangoService: call this after applying one."""
        started = time.monotonic()
        deadline = started + OPERATOR_READY_SECONDS
        while not (active_operator_ready(self.cluster) and apiservice_available(self.cluster)):
            if time.monotonic() > deadline:
                raise DevError(f"the chart's operator was not Ready with the metrics API "
                               f"Available after {OPERATOR_READY_SECONDS:.0f}s")
            time.sleep(1)
        self._timed("operator Ready, metrics API Available", started)
