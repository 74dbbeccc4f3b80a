"""The connection budget on the real node, through the transitions that can break it.

PostgreSQL on the host gets `max_connections = budget + reservedConnections + 2`, and a
sampler reads pg_stat_activity every 100 ms through each scenario. The sample DjangoService runs
at replicas.max with its pgbouncer sidecars, under load through the Service that keeps every
pool full:

- a rolling update at replicas.max;
- a scale from max down to min and back up within the grace period (the old pods still drain
  while their replacements start);
- a migration Job started during a rolling update (its connection is one of the reserve);
- a rolling update of pods whose app ignores SIGTERM, each old pod holding a server connection
  until the kubelet kills it at the end of its grace period.

Each must stay at or under the budget, with no "too many clients" in PostgreSQL's log. Then
the contrast: the same rollout under the old sizing (pool = budget // max_pods, and no pool
shrink at preStop), on a copy of the operator's Deployment; its peak is printed beside the new
one (docs/pooling.md records the figures).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import re
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from djangoscale.contract import DRAINING_POOL_SIZE
from djangoscale_dev.cluster import LocalCluster, nodeconfig
from djangoscale_dev.cluster.api import ApiClient, ApiError
from tests.e2e.helpers import API, djangoservice, pod_is_ready, start_operator
from tests.e2e.test_real_node import (
    PGBOUNCER,
    SAMPLE_APP,
    WRK_SCRIPT,
    Load,
    merge_patch,
    pods,
    service_url,
    with_crd,
)
from tests.fixtures import services
from tests.fixtures.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
NAME = "shop"
MAX_REPLICAS, MIN_REPLICAS = 3, 1
MAX_PODS = MAX_REPLICAS + 1  # the rollout's surge pod
RESERVED = 3
BUDGET = 12  # the smallest that pgbouncer admits at this max is 2 x MAX_PODS = 8
MAX_CONNECTIONS = BUDGET + RESERVED
# What PostgreSQL allows: the budget, the reserve and 2 more. Of those, its 3
# superuser_reserved_connections are the sampler's; the app's role gets BUDGET + 2.
PG_MAX_CONNECTIONS = MAX_CONNECTIONS + 2
NEW_POOL = BUDGET // MAX_PODS - 1  # budget.pool_size_per_pod with the draining allowance
OLD_POOL = BUDGET // MAX_PODS  # before it: no allowance, and no shrink at preStop
# Enough requests of the 50 ms database view in flight to keep every pool full.
LOAD_CONNECTIONS = 48
# PostgreSQL's refusals: all slots taken, or only superuser slots left.
TOO_MANY = re.compile(r"too many clients|remaining connection slots are reserved")


@pytest.fixture(scope="module")
def api(real_cluster: LocalCluster) -> ApiClient:
    return with_crd(real_cluster.client())


@pytest.fixture(scope="module")
def node_images(real_cluster: LocalCluster) -> None:
    from djangoscale_dev.images import project

    archives = project.project_images(only={SAMPLE_APP, PGBOUNCER})
    for tag in (SAMPLE_APP, PGBOUNCER):
        real_cluster.load_image(archives[tag])


@pytest.fixture(scope="module")
def postgres(real_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[services.Postgres]:
    services.require(None if (services.PG_BIN / "postgres").exists() else "PostgreSQL missing")
    with services.postgres(
        tmp_path_factory.mktemp("pg"), max_connections=PG_MAX_CONNECTIONS,
        listen=("127.0.0.1", nodeconfig.GATEWAY), password_networks=(nodeconfig.POD_CIDR,),
    ) as pg:
        services.migrate_sample_app({
            "DATABASE_HOST": pg.host, "DATABASE_PORT": str(pg.port),
            "DATABASE_NAME": services.APP_DB, "DATABASE_USER": services.APP_USER,
            "DATABASE_PASSWORD": services.APP_PASSWORD,
        }, REPO / "tests" / "sampleapp", sys.executable)
        yield pg


def too_many_clients(pg: services.Postgres) -> int:
    """How often PostgreSQL has refused a connection so far (its log)."""
    log = pg.datadir.parent / "postgres.log"
    return len(TOO_MANY.findall(log.read_text(errors="replace")))


@pytest.fixture(scope="module")
def operator(real_cluster: LocalCluster, api: ApiClient,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # No metrics API: nothing here autoscales; replicas follow spec.replicas.min.
    with start_operator(real_cluster.kubeconfig,
                        tmp_path_factory.mktemp("operator") / "operator.log",
                        "--metrics-api-port", "-1"):
        yield


@pytest.fixture(scope="module")
def budget_namespace(api: ApiClient) -> Iterator[str]:
    name = f"budget-{time.monotonic_ns() % 10**8}"
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": name}})
    yield name
    api.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="module")
def shop(api: ApiClient, operator: None, node_images: None, postgres: services.Postgres,
         budget_namespace: str) -> str:
    """The sample DjangoService at replicas.max, without autoscaling (replicas = min)."""
    namespace = budget_namespace
    api.create(f"/api/v1/namespaces/{namespace}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shop-db"},
        "stringData": {"host": nodeconfig.GATEWAY, "port": str(postgres.port),
                       "dbname": services.APP_DB, "user": services.APP_USER,
                       "password": services.APP_PASSWORD}})
    body = djangoservice(
        namespace, image=SAMPLE_APP, wsgiApp="sampleproject.wsgi:application",
        server={"type": "cherrypy", "threads": 16, "maxThreads": 24, "queueSize": 400},
        replicas={"min": MAX_REPLICAS, "max": MAX_REPLICAS},
        autoscaling={"enabled": False},
        database={"secretName": "shop-db", "maxConnections": MAX_CONNECTIONS,
                  "reservedConnections": RESERVED},
        pgbouncer={"enabled": True, "poolMode": "transaction", "image": PGBOUNCER},
    )
    api.create(f"/apis/{API}/namespaces/{namespace}/djangoservices", body)
    settled(api, namespace, MAX_REPLICAS)
    live = api.get(f"/apis/{API}/namespaces/{namespace}/djangoservices/{NAME}")
    assert live["status"]["database"]["poolSizePerPod"] == NEW_POOL
    return namespace


def settled(api: ApiClient, namespace: str, replicas: int, name: str = NAME) -> None:
    """`replicas` pods of the Deployment's latest template Ready, none terminating.

    For the DjangoService's own Deployment, only once the operator has applied the latest
    spec: right after a patch, the old pods would look settled until the operator acts.
    """
    def done() -> bool:
        if name == NAME:
            ds = api.get(ds_path(namespace))
            if (ds.get("status") or {}).get("observedGeneration") != ds["metadata"]["generation"]:
                return False
        try:
            live = api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        except ApiError as error:
            if error.status == 404:
                return False  # not written yet
            raise
        status = live.get("status", {})
        everything = pods_of(api, namespace, name)
        return (status.get("observedGeneration") == live["metadata"]["generation"]
                and status.get("updatedReplicas") == replicas
                and status.get("readyReplicas") == replicas
                and len(everything) == replicas
                and not any(p["metadata"].get("deletionTimestamp") for p in everything)
                # The Deployment's status can lag its pods: a new pod may not have started yet.
                and all(pod_is_ready(p) for p in everything))

    wait_for(f"{replicas} pods of {name} settled", done, timeout=240)


def pods_of(api: ApiClient, namespace: str, name: str) -> list[dict[str, Any]]:
    if name == NAME:
        return pods(api, namespace)
    return list(api.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector="
                        f"legacy%3D{name}")["items"])


class Scenario:
    """Load through the Service and pg_stat_activity sampled every 100 ms, around a change."""

    def __init__(self, api: ApiClient, pg: services.Postgres, namespace: str, service: str,
                 script: Path, seconds: int) -> None:
        self.pg = pg
        self.refused_before = too_many_clients(pg)
        self.sampler = services.PeakSampler(pg, interval=0.1)
        url = (service_url(api, namespace, "/slow/") if service == NAME
               else legacy_url(api, namespace, service))
        self.load = Load(url, LOAD_CONNECTIONS, seconds, script)

    def __enter__(self) -> Scenario:
        self.sampler.start()
        self.load.start()
        time.sleep(3)  # the pools fill
        return self

    def __exit__(self, *_: object) -> None:
        self.load.join()
        self.peak = self.sampler.stop()
        self.samples = self.sampler.samples
        self.refused = too_many_clients(self.pg) - self.refused_before

    def report(self, what: str) -> str:
        return (f"{what}: peak {self.peak} server connections (budget {BUDGET}, "
                f"{self.samples} samples), {self.refused} refusals in PostgreSQL's log, "
                f"load {self.load.report}")


def legacy_url(api: ApiClient, namespace: str, name: str) -> str:
    service = api.get(f"/api/v1/namespaces/{namespace}/services/{name}")
    return f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}/slow/"


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "count.lua"
    path.write_text(WRK_SCRIPT)
    return path


def ds_path(namespace: str) -> str:
    return f"/apis/{API}/namespaces/{namespace}/djangoservices/{NAME}"


def test_a_rolling_update_at_max_replicas_stays_in_the_budget(
    api: ApiClient, shop: str, postgres: services.Postgres, script: Path,
) -> None:
    namespace = shop
    settled(api, namespace, MAX_REPLICAS)
    with Scenario(api, postgres, namespace, NAME, script, 60) as run:
        merge_patch(api, ds_path(namespace), {"spec": {"server": {"threads": 20}}})
        settled(api, namespace, MAX_REPLICAS)
    print(run.report(f"rolling update at max ({MAX_REPLICAS} pods, pool {NEW_POOL})"))
    assert 0 < run.peak <= BUDGET
    assert run.refused == 0
    assert run.load.report["requests"] > 0
    assert run.load.errors() == dict.fromkeys(run.load.errors(), 0), run.load.report


def test_max_to_min_and_back_within_the_grace_period_stays_in_the_budget(
    api: ApiClient, shop: str, postgres: services.Postgres, script: Path,
) -> None:
    namespace = shop
    settled(api, namespace, MAX_REPLICAS)
    with Scenario(api, postgres, namespace, NAME, script, 40) as run:
        merge_patch(api, ds_path(namespace), {"spec": {"replicas": {"min": MIN_REPLICAS}}})
        wait_for("pods terminating", lambda: any(
            p["metadata"].get("deletionTimestamp") for p in pods(api, namespace)), timeout=30)
        # Back up while the old ones still drain (their grace period is far longer).
        merge_patch(api, ds_path(namespace), {"spec": {"replicas": {"min": MAX_REPLICAS}}})
        draining = sum(bool(p["metadata"].get("deletionTimestamp")) for p in pods(api, namespace))
        settled(api, namespace, MAX_REPLICAS)
    print(run.report(f"max -> min -> max ({draining} pods draining when scaled back up)"))
    assert draining > 0
    assert 0 < run.peak <= BUDGET
    assert run.refused == 0


# A migration that holds its connection a while before it migrates: long enough to run
# beside the rollout's steps.
MIGRATION_SECONDS = 15
LONG_MIGRATION = [
    "python", "manage.py", "shell", "-c",
    "from django.core.management import call_command; from django.db import connection; "
    f"connection.cursor().execute('SELECT pg_sleep({MIGRATION_SECONDS})'); "
    "call_command('migrate', interactive=False)",
]
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def test_a_migration_job_during_a_rolling_update_stays_in_the_budget(
    api: ApiClient, shop: str, postgres: services.Postgres, script: Path,
) -> None:
    """The Job's connection is one of reservedConnections: beside a rollout at replicas.max
    the pods still stay within the budget, and the Job adds its one connection."""
    namespace = shop
    settled(api, namespace, MAX_REPLICAS)
    job_addresses: set[str] = set()

    def job_running() -> bool:
        found = api.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector="
                        f"app.kubernetes.io/instance%3D{NAME},"
                        "app.kubernetes.io/component%3Dmigrate")["items"]
        for pod in found:
            if (pod["spec"]["containers"][0].get("command") == LONG_MIGRATION
                    and pod["status"].get("podIP")):
                job_addresses.add(pod["status"]["podIP"])
        return bool(job_addresses)

    def job_succeeded() -> bool:
        jobs = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
        return any(job["spec"]["template"]["spec"]["containers"][0].get("command")
                   == LONG_MIGRATION and (job.get("status") or {}).get("succeeded")
                   for job in jobs)

    with Scenario(api, postgres, namespace, NAME, script, 60) as run:
        merge_patch(api, ds_path(namespace), {"spec": {"server": {"threads": 18}}})
        wait_for("a pod of the rollout terminating", lambda: any(
            p["metadata"].get("deletionTimestamp") for p in pods(api, namespace)), timeout=60)
        # The shop runs without migrations (the e2e default): turning them on with a new
        # command is a migration the Deployment's pods have not had, so the Job runs.
        merge_patch(api, ds_path(namespace), {"spec": {"migrations": {
            "enabled": True, "command": LONG_MIGRATION}}})
        try:
            wait_for("the migration Job's pod running", job_running, timeout=120)
            wait_for("the migration Job succeeded", job_succeeded, timeout=120)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{migration_state(api, namespace)}") from error
        settled(api, namespace, MAX_REPLICAS)
        rollout_done = time.time()
    history = run.sampler.history
    job_times = [t for t, counts in history if any(a in counts for a in job_addresses)]
    pods_peak = max(sum(n for a, n in counts.items() if a not in job_addresses)
                    for _, counts in history)
    job_peak = run.sampler.peak_of(job_addresses)
    print(run.report(f"migration Job ({MIGRATION_SECONDS} s on its connection) during a "
                     f"rolling update at max: the pods' peak {pods_peak}, the Job's {job_peak}, "
                     f"the Job connected {rollout_done - min(job_times):.1f} s before the "
                     "rollout settled"))
    assert job_times and min(job_times) < rollout_done  # it ran beside the rollout
    assert job_peak == 1  # one process, one connection, out of reservedConnections
    assert 0 < pods_peak <= BUDGET
    assert run.peak <= BUDGET + RESERVED
    assert run.refused == 0
    assert run.load.errors() == dict.fromkeys(run.load.errors(), 0), run.load.report


def migration_state(api: ApiClient, namespace: str) -> str:
    """What a stuck migration looks like: the Jobs, their pods, the DjangoService's conditions."""
    jobs = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
    found = api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
    conditions = (api.get(ds_path(namespace)).get("status") or {}).get("conditions") or []
    return "\n".join(
        [f"job {j['metadata']['name']}: {(j.get('status') or {}).get('conditions')}"
         for j in jobs]
        + [f"pod {p['metadata']['name']}: {p['status'].get('phase')} "
           f"{p['status'].get('podIP')} {p['status'].get('conditions')}" for p in found
           if "migrate" in p["metadata"]["name"]]
        + [f"{c['type']}={c['status']} {c.get('reason')}: {c.get('message')}"
           for c in conditions])


# On PYTHONPATH, tests/sampleapp/sigterm_ignored makes the app's processes ignore SIGTERM.
IGNORES_SIGTERM = {"name": "PYTHONPATH", "value": "/app/sigterm_ignored:/app"}
# A preStop hook (a Python process) has shrunk the pool within this many seconds of deletion.
SHRUNK_WITHIN_SECONDS = 8
# How far the pod's time on the API may fall short of its grace period: the watch polls.
GRACE_MARGIN_SECONDS = 5


@dataclass
class Seen:
    ip: str = ""
    deleting_since: float | None = None  # when the watch first saw its deletionTimestamp
    last: float = 0.0


class PodWatch(threading.Thread):
    """Every web pod of the DjangoService, polled every 0.5 s: its address, when it began
    terminating and when it was last seen."""

    def __init__(self, api: ApiClient, namespace: str) -> None:
        super().__init__(daemon=True)
        self.api, self.namespace = api, namespace
        self.seen: dict[str, Seen] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            now = time.time()
            for pod in pods(self.api, self.namespace):
                seen = self.seen.setdefault(pod["metadata"]["name"], Seen())
                seen.ip = seen.ip or pod["status"].get("podIP") or ""
                seen.last = now
                if pod["metadata"].get("deletionTimestamp") and seen.deleting_since is None:
                    seen.deleting_since = now
            self._stop_event.wait(0.5)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def hold_connection(ip: str, port: int, seconds: float) -> threading.Thread:
    """A request of the view that holds a server connection `seconds`, straight to one pod
    (it ends with an error when the pod is killed first)."""
    def run() -> None:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://{ip}:{port}/hold/?s={seconds}",
                                   timeout=seconds + 30).read()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_pods_that_ignore_sigterm_stay_their_grace_period_within_the_budget(
    api: ApiClient, shop: str, postgres: services.Postgres, script: Path,
    real_cluster: LocalCluster,
) -> None:
    """An app that ignores SIGTERM keeps its pod Terminating for the whole grace period, and
    a request still holds a server connection till the kubelet's SIGKILL; the preStop hook
    has shrunk its pgbouncer all the same, so the rollout stays within the budget."""
    namespace = shop
    settled(api, namespace, MAX_REPLICAS)
    merge_patch(api, ds_path(namespace), {"spec": {"env": [IGNORES_SIGTERM]}})
    try:
        settled(api, namespace, MAX_REPLICAS)
        old = pods(api, namespace)
        grace = old[0]["spec"]["terminationGracePeriodSeconds"]
        port = old[0]["spec"]["containers"][0]["ports"][0]["containerPort"]
        addresses = {p["metadata"]["name"]: p["status"]["podIP"] for p in old}
        watch = PodWatch(api, namespace)
        watch.start()
        with Scenario(api, postgres, namespace, NAME, script, 2 * grace) as run:
            for ip in addresses.values():  # outlives the grace period
                hold_connection(ip, port, grace + 30)
            time.sleep(2)
            merge_patch(api, ds_path(namespace), {"spec": {"server": {"threads": 22}}})
            settled(api, namespace, MAX_REPLICAS)
        watch.stop()
        print(f"the kubelet's readiness probes answered 503 by the draining app: "
              f"{draining_probes(real_cluster, addresses)}")
        rows = []
        for name, ip in addresses.items():
            seen = watch.seen[name]
            assert seen.deleting_since is not None, name
            stayed = seen.last - seen.deleting_since
            shrunk = seen.deleting_since + SHRUNK_WITHIN_SECONDS
            before = run.sampler.peak_of({ip}, until=seen.deleting_since)
            after = run.sampler.peak_of({ip}, since=shrunk, until=seen.last)
            near_the_end = run.sampler.peak_of({ip}, since=seen.last - 5, until=seen.last)
            rows.append((name, stayed, before, after, near_the_end))
            # Nearly the whole grace period on the API (one that drains leaves in ~11 s).
            assert stayed >= grace - GRACE_MARGIN_SECONDS, (name, stayed, grace)
            # The held request's connection, and no more (DRAINING_POOL_SIZE), till the end.
            assert after <= DRAINING_POOL_SIZE, (name, after)
            assert near_the_end >= 1, (name, near_the_end)
        print(run.report(
            f"pods that ignore SIGTERM, rolling update at max (grace {grace} s); per old pod "
            "(name, s Terminating, server connections before deletion, most after the "
            f"shrink, in its last 5 s): {rows}"))
        assert 0 < run.peak <= BUDGET
        assert run.refused == 0
        assert run.load.errors() == dict.fromkeys(run.load.errors(), 0), run.load.report
    finally:
        merge_patch(api, ds_path(namespace), {"spec": {"env": None}})
        settled(api, namespace, MAX_REPLICAS)


def draining_probes(cluster: LocalCluster, names: Iterable[str]) -> dict[str, str]:
    """Per pod, the first and last time (kubelet log) its readiness probe got the draining
    app's 503: the app still answered for that long after its preStop hook."""
    path = cluster.dir / "logs" / "kubelet.log"
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    spans = {}
    for name in names:
        times = [line.split()[1] for line in lines
                 if f"/{name}\"" in line and "statuscode: 503" in line]
        spans[name] = f"{times[0]} .. {times[-1]} ({len(times)} probes)" if times else "none"
    return spans


def legacy_copy(api: ApiClient, namespace: str, legacy: str) -> None:
    """The operator's Deployment and pgbouncer Secret, copied under another name with the old
    sizing: pool = budget // max_pods (no draining allowance) and a preStop that drains the
    server but leaves the pool as it is."""
    secret = api.get(f"/api/v1/namespaces/{namespace}/secrets/{NAME}-database")
    ini = base64.b64decode(secret["data"]["pgbouncer.ini"]).decode()
    for key in ("default_pool_size", "max_db_connections", "max_user_connections"):
        ini, count = re.subn(rf"^{key} = {NEW_POOL}$", f"{key} = {OLD_POOL}", ini, flags=re.M)
        assert count == 1, key
    api.create(f"/api/v1/namespaces/{namespace}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{legacy}-database"},
        "data": {**secret["data"], "pgbouncer.ini": base64.b64encode(ini.encode()).decode()}})
    source = api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{NAME}")
    template = copy.deepcopy(source["spec"]["template"])
    template["metadata"] = {"labels": {"legacy": legacy}}
    spec = template["spec"]
    for volume in spec.get("volumes", []):
        if volume.get("secret", {}).get("secretName") == f"{NAME}-database":
            volume["secret"]["secretName"] = f"{legacy}-database"
    for container in spec["containers"] + spec.get("initContainers", []):
        for variable in container.get("env", []):
            ref = (variable.get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name") == f"{NAME}-database":
                ref["name"] = f"{legacy}-database"
        hook = ((container.get("lifecycle") or {}).get("preStop") or {}).get("exec")
        if hook:
            # The old hook: the same drain, the pool kept whole.
            hook["command"] = [*hook["command"], "--pool-size", str(OLD_POOL)]
    api.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": legacy},
        "spec": {**{k: v for k, v in source["spec"].items() if k not in ("template", "selector")},
                 "replicas": MAX_REPLICAS, "selector": {"matchLabels": {"legacy": legacy}},
                 "template": template}})
    api.create(f"/api/v1/namespaces/{namespace}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": legacy},
        "spec": {"selector": {"legacy": legacy},
                 "ports": [{"port": 80, "targetPort": "http"}]}})


def test_the_old_sizing_goes_over_the_budget_in_the_same_rollout(
    api: ApiClient, shop: str, postgres: services.Postgres, script: Path,
) -> None:
    """Not a guarantee but the contrast: printed, and recorded in docs/pooling.md."""
    namespace, legacy = shop, "legacy"
    settled(api, namespace, MAX_REPLICAS)  # the plain sample app again, none draining
    legacy_copy(api, namespace, legacy)
    api.delete(ds_path(namespace))  # its pods go with it: the budget is the legacy copy's
    wait_for("the DjangoService's pods gone", lambda: not pods(api, namespace), timeout=120)
    settled(api, namespace, MAX_REPLICAS, legacy)
    with Scenario(api, postgres, namespace, legacy, script, 60) as run:
        merge_patch(api, f"/apis/apps/v1/namespaces/{namespace}/deployments/{legacy}",
                    {"spec": {"template": {"metadata": {"annotations": {"roll": "1"}}}}})
        settled(api, namespace, MAX_REPLICAS, legacy)
    print(run.report(f"OLD sizing, rolling update at max (pool {OLD_POOL}, no preStop "
                     "shrink)"))
    # The old sizing fits only while no pod drains: MAX_PODS full pools are the budget.
    assert OLD_POOL * MAX_PODS == BUDGET
    assert run.peak > 0
