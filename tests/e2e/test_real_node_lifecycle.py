"""The deploy lifecycle on the real node: migrations that really run, static files really served.

The sample app's images (tests/sampleapp, and its later releases in tests/sampleapp-releases)
run on the kubelet; PostgreSQL on the host at the bridge gateway starts empty, so the first
migration Job is what creates the tables. One DjangoService goes through, in order:

1. its first deploy: the Job migrates an empty database, then the Deployment appears;
2. a release whose migration raises, under load through the Service: the old pods serve on;
3. a fixed release: its Job adds a column, then the pods roll; the same spec again runs nothing;
4. static files collected into the image (WhiteNoise), then by `spec.staticFiles` at pod start,
   both served under the read-only root filesystem;
5. `spec.beat`: one beat pod that sends the sample app's periodic task to Redis on the host.
"""

# The real node's fixtures come from test_real_node and are parameters by the same names.
# ruff: noqa: F811

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from djangoscale_dev.cluster import LocalCluster, nodeconfig
from djangoscale_dev.cluster.api import ApiClient
from djangoscale_dev.cluster.nodeconfig import NodePaths
from tests.e2e.helpers import API, djangoservice
from tests.e2e.test_real_node import (  # noqa: F401 (its module-scoped fixtures)
    WRK_SCRIPT,
    Load,
    api,
    deployment,
    merge_patch,
    operator,
    pods,
    pods_report,
    ready_pods,
    restricted_namespace,
    service_url,
)
from tests.fixtures import brokers, services
from tests.fixtures.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
RELEASES = REPO / "tests" / "sampleapp-releases"
SAMPLE_APP = "djangoscale/sampleapp:dev"
PGBOUNCER = "djangoscale/pgbouncer:dev"
# The sample app's later releases: a new nullable column, and a migration that raises.
NEXT = "djangoscale/sampleapp:next"
BROKEN = "djangoscale/sampleapp:broken"
BROKEN_MIGRATION_FAILURE = "the sample app's broken release cannot migrate"
NAME = "shop"
REPLICAS = 2
MIGRATE = "app.kubernetes.io/component%3Dmigrate"
# Several of the operator's resyncs (every 3 s here): time enough to retry if it were to.
RESYNCS_SECONDS = 10
# The static file the sample app ships (collected under STATIC_URL = /static/).
STATIC_FILE = REPO / "tests/sampleapp/sampleproject/shop/static/shop/lifecycle.txt"
STATIC_PATH = "/static/shop/lifecycle.txt"
# The sample app's beat schedule (CELERY_BEAT_SCHEDULE): this task every 5 s.
BEAT_TASK = "sampleproject.tasks.count_items"
BEAT_SECONDS = 5
# Celery's default queue: a Redis list of that name.
CELERY_QUEUE = "celery"


# -- fixtures ------------------------------------------------------------------------------


def image_archives() -> dict[str, Path]:
    """The sample app, its two later releases and pgbouncer, built or found cached."""
    from djangoscale_dev.images import project
    from djangoscale_dev.images.build import build_image

    built = project.project_images(only={SAMPLE_APP, PGBOUNCER})
    archives = {tag: built[tag] for tag in (SAMPLE_APP, PGBOUNCER)}
    # FROM the sample app image the line above left in the build store.
    for tag, folder in ((NEXT, "next"), (BROKEN, "broken")):
        archives[tag] = build_image(RELEASES / folder, tag)
    return archives


@pytest.fixture(scope="module", autouse=True)
def built_images() -> None:
    """The builds, first (autouse): before the real node's lock is taken, not while holding it."""
    image_archives()


@pytest.fixture(scope="module")
def node_images(real_cluster: LocalCluster) -> list[str]:
    # Again under the lock: found cached in a second, or built again if other checkouts'
    # builds pruned an archive while this run waited for the node.
    names = []
    for archive in image_archives().values():
        names += real_cluster.load_image(archive)
    return names


@pytest.fixture(scope="module")
def empty_postgres(real_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> (
    Iterator[services.Postgres]
):
    """PostgreSQL on the host, reachable from pods at the gateway, with no table yet."""
    services.require(None if (services.PG_BIN / "postgres").exists() else "PostgreSQL missing")
    with services.postgres(
        tmp_path_factory.mktemp("pg"),
        listen=("127.0.0.1", nodeconfig.GATEWAY),
        password_networks=(nodeconfig.POD_CIDR,),
    ) as pg:
        yield pg


@pytest.fixture(scope="module")
def gateway_redis(real_cluster: LocalCluster) -> Iterator[brokers.Redis]:
    """Redis on the host, reachable from pods at the gateway: the beat pod's broker."""
    services.require(brokers.redis_available())
    # In a directory of its own that the redis user can reach (pytest's are root-only).
    with brokers.redis(host=nodeconfig.GATEWAY) as redis:
        yield redis


def shop_spec(namespace: str, image: str) -> dict[str, Any]:
    return djangoservice(
        namespace,
        image=image,
        wsgiApp="sampleproject.wsgi:application",
        server={"type": "cherrypy", "threads": 16, "maxThreads": 24, "queueSize": 400},
        replicas={"min": REPLICAS, "max": 4},
        autoscaling={"targetRPSPerPod": 1000},
        database={"secretName": "shop-db", "maxConnections": 40},
        pgbouncer={"enabled": True, "poolMode": "transaction", "image": PGBOUNCER},
        # No second attempt: a failure shows at once, and its one pod has the log.
        migrations={"backoffLimit": 0, "activeDeadlineSeconds": 300},
    )


@pytest.fixture(scope="module")
def first_deploy(
    api: ApiClient,
    operator: Path,
    node_images: list[str],
    empty_postgres: services.Postgres,
    restricted_namespace: str,
) -> float:
    """The DjangoService created on the empty database; seconds until its pods were Ready."""
    namespace = restricted_namespace
    api.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "shop-db"},
            "stringData": {
                "host": nodeconfig.GATEWAY,
                "port": str(empty_postgres.port),
                "dbname": services.APP_DB,
                "user": services.APP_USER,
                "password": services.APP_PASSWORD,
            },
        },
    )
    started = time.monotonic()
    api.create(f"/apis/{API}/namespaces/{namespace}/djangoservices",
               shop_spec(namespace, SAMPLE_APP))
    try:
        wait_for(f"{REPLICAS} pods Running and Ready",
                 lambda: len(ready_pods(api, namespace)) == REPLICAS, timeout=240)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{pods_report(api, namespace)}\n"
                             f"{job_pods_report(api, namespace)}") from None
    return time.monotonic() - started


# -- helpers -------------------------------------------------------------------------------


def shop_path(namespace: str) -> str:
    return f"/apis/{API}/namespaces/{namespace}/djangoservices/{NAME}"


def migration_jobs(api: ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    items = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs?labelSelector={MIGRATE}")
    return {job["metadata"]["name"]: job for job in items["items"]}


def job_for(api: ApiClient, namespace: str, image: str) -> dict[str, Any]:
    (job,) = [j for j in migration_jobs(api, namespace).values()
              if j["spec"]["template"]["spec"]["containers"][0]["image"] == image]
    return job


def job_pods(api: ApiClient, namespace: str, job_name: str) -> list[dict[str, Any]]:
    selector = f"batch.kubernetes.io/job-name%3D{job_name}"
    return list(api.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")["items"])


def job_pods_report(api: ApiClient, namespace: str) -> str:
    lines = []
    for name in migration_jobs(api, namespace):
        for pod in job_pods(api, namespace, name):
            statuses = pod.get("status", {}).get("containerStatuses", [])
            lines.append(f"{pod['metadata']['name']}: {[s.get('state') for s in statuses]}")
    return "\n".join(lines)


def condition(api: ApiClient, namespace: str, type_: str) -> dict[str, Any]:
    live = api.get(shop_path(namespace))
    found = next((c for c in live.get("status", {}).get("conditions", [])
                  if c["type"] == type_), {})
    return dict(found)


def web_replica_set_created(api: ApiClient, namespace: str, image: str) -> str:
    selector = f"app.kubernetes.io/instance%3D{NAME},app.kubernetes.io/component%3Dweb"
    (found,) = [rs for rs in api.get(
        f"/apis/apps/v1/namespaces/{namespace}/replicasets?labelSelector={selector}")["items"]
        if rs["spec"]["template"]["spec"]["containers"][0]["image"] == image]
    return str(found["metadata"]["creationTimestamp"])


def migration_failed_events(api: ApiClient, namespace: str) -> list[dict[str, Any]]:
    events = api.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    return [e for e in events if e.get("reason") == "MigrationFailed"]


def rolled_out_to(api: ApiClient, namespace: str, image: str) -> bool:
    current = ready_pods(api, namespace)
    return (len(current) == REPLICAS == len(pods(api, namespace))
            and all(p["spec"]["containers"][0]["image"] == image for p in current))


def job_seconds(job: dict[str, Any]) -> float:
    start, end = (datetime.fromisoformat(job["status"][key].replace("Z", "+00:00"))
                  for key in ("startTime", "completionTime"))
    return (end - start).total_seconds()


def static_file(api: ApiClient, namespace: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(service_url(api, namespace, STATIC_PATH), timeout=10) as reply:
        return reply.status, reply.read()


# -- tests ---------------------------------------------------------------------------------


def test_the_first_deploy_migrates_the_empty_database_before_any_pod(
    api: ApiClient, first_deploy: float, restricted_namespace: str,
    empty_postgres: services.Postgres,
) -> None:
    namespace = restricted_namespace
    job = job_for(api, namespace, SAMPLE_APP)
    assert job["status"].get("succeeded") == 1 and not job["status"].get("failed")
    # It ran as a pod on the node, to completion, under the restricted profile.
    (pod,) = job_pods(api, namespace, job["metadata"]["name"])
    assert pod["spec"]["nodeName"] == nodeconfig.NODE_NAME
    (state,) = pod["status"]["containerStatuses"]
    assert state["state"]["terminated"]["exitCode"] == 0
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    # Its work is in PostgreSQL: the table and the rows of the sample app's first migration.
    assert empty_postgres.execute("SELECT count(*) FROM shop_item", services.APP_DB) == [(10,)]
    applied = empty_postgres.execute(
        "SELECT name FROM django_migrations WHERE app = 'shop'", services.APP_DB)
    assert applied == [("0001_initial",)]
    # The Deployment, and so every pod, came after the Job completed.
    live = deployment(api, namespace)
    assert live["metadata"]["creationTimestamp"] >= job["status"]["completionTime"]
    print(f"first deploy: migration Job {job_seconds(job):.0f}s, pods Ready after "
          f"{first_deploy:.1f}s")


def test_a_failing_migration_under_load_keeps_the_old_pods_serving(
    api: ApiClient, first_deploy: float, restricted_namespace: str,
    tmp_path: Path,
) -> None:
    namespace = restricted_namespace
    before = sorted(p["metadata"]["name"] for p in ready_pods(api, namespace))
    script = tmp_path / "count.lua"
    script.write_text(WRK_SCRIPT)
    load = Load(service_url(api, namespace, "/items/"), 50, 60, script)
    load.start()
    time.sleep(3)
    started = time.monotonic()
    merge_patch(api, shop_path(namespace), {"spec": {"image": BROKEN}})
    degraded = wait_for("MigrationFailed", lambda: (
        lambda c: c if c.get("reason") == "MigrationFailed" else None)(
            condition(api, namespace, "Degraded")), timeout=120)
    failed_after = time.monotonic() - started
    assert degraded["status"] == "True"
    # The tail of the migration pod's log, read from the kubelet: the exception it raised.
    assert "Log tail:" in degraded["message"]
    assert BROKEN_MIGRATION_FAILURE in degraded["message"], degraded["message"]
    job = job_for(api, namespace, BROKEN)
    assert job["status"].get("failed") == 1 and not job["status"].get("succeeded")
    wait_for("one Warning event", lambda: migration_failed_events(api, namespace))

    # Resyncs neither retry the Job nor post another event.
    time.sleep(RESYNCS_SECONDS)
    assert len(job_pods(api, namespace, job["metadata"]["name"])) == 1
    assert len(migration_jobs(api, namespace)) == 2
    (event,) = migration_failed_events(api, namespace)
    assert event["type"] == "Warning" and event.get("count", 1) == 1
    # The old pods kept serving: same pods, same template, every request answered.
    assert deployment(api, namespace)["spec"]["template"]["spec"]["containers"][0][
        "image"] == SAMPLE_APP
    assert sorted(p["metadata"]["name"] for p in ready_pods(api, namespace)) == before
    assert load.is_alive(), "the load ended before the failure was seen"
    load.join()
    print(f"failed migration: MigrationFailed {failed_after:.1f}s after the patch; "
          f"load {load.report}")
    assert load.report["requests"] > 0
    assert load.errors() == dict.fromkeys(load.errors(), 0), load.report


def test_a_fixed_release_migrates_once_then_rolls(
    api: ApiClient, first_deploy: float, restricted_namespace: str,
    empty_postgres: services.Postgres,
) -> None:
    namespace = restricted_namespace
    started = time.monotonic()
    merge_patch(api, shop_path(namespace), {"spec": {"image": NEXT}})
    wait_for("the rollout of the fixed release", lambda: rolled_out_to(api, namespace, NEXT),
             timeout=240)
    rolled_after = time.monotonic() - started
    job = job_for(api, namespace, NEXT)
    # Once: one pod, no failure.
    assert job["status"].get("succeeded") == 1 and not job["status"].get("failed")
    assert len(job_pods(api, namespace, job["metadata"]["name"])) == 1
    # The new column is in PostgreSQL, and the new pods came after the Job completed.
    columns = empty_postgres.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'shop_item'",
        services.APP_DB)
    assert ("sku",) in columns
    assert web_replica_set_created(api, namespace, NEXT) >= job["status"]["completionTime"]
    wait_for("Degraded cleared", lambda: condition(api, namespace, "Degraded").get("status")
             == "False", timeout=30)
    print(f"fixed release: migration Job {job_seconds(job):.0f}s, rolled out "
          f"{rolled_after:.1f}s after the patch")

    # The same spec again (a GitOps replay): no new generation, no new Job.
    generation = api.get(shop_path(namespace))["metadata"]["generation"]
    jobs = sorted(migration_jobs(api, namespace))
    merge_patch(api, shop_path(namespace), {"spec": shop_spec(namespace, NEXT)["spec"]})
    time.sleep(RESYNCS_SECONDS)
    assert api.get(shop_path(namespace))["metadata"]["generation"] == generation
    assert sorted(migration_jobs(api, namespace)) == jobs


def test_static_files_collected_in_the_image_are_served_read_only(
    api: ApiClient, first_deploy: float, restricted_namespace: str,
) -> None:
    namespace = restricted_namespace
    for pod in ready_pods(api, namespace):
        assert "collectstatic" not in [c["name"] for c in pod["spec"]["initContainers"]]
        assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert static_file(api, namespace) == (200, STATIC_FILE.read_bytes())


def test_static_files_collected_at_pod_start_are_served_read_only(
    api: ApiClient, first_deploy: float, restricted_namespace: str,
    real_cluster: LocalCluster,
) -> None:
    namespace = restricted_namespace
    before = {p["metadata"]["name"] for p in pods(api, namespace)}
    merge_patch(api, shop_path(namespace), {"spec": {"staticFiles": {"enabled": True}}})

    def rolled() -> list[dict[str, Any]] | None:
        current = ready_pods(api, namespace)
        names = {p["metadata"]["name"] for p in current}
        done = len(current) == REPLICAS == len(pods(api, namespace)) and not names & before
        return current if done else None

    current = wait_for("the pods replaced", rolled, timeout=180)
    kubelet = NodePaths(real_cluster.dir / "node").kubelet_root
    for pod in current:
        collector = next(s for s in pod["status"]["initContainerStatuses"]
                         if s["name"] == "collectstatic")
        assert collector["state"]["terminated"]["exitCode"] == 0
        app = pod["spec"]["containers"][0]
        assert app["securityContext"]["readOnlyRootFilesystem"] is True
        root = next(e["value"] for e in app["env"] if e["name"] == "STATIC_ROOT")
        mount = next(m for m in app["volumeMounts"] if m["mountPath"] == root)
        assert mount["readOnly"] is True
        # The files are in the pod's emptyDir on the node, written there by the init container.
        volume = (kubelet / "pods" / pod["metadata"]["uid"] / "volumes"
                  / "kubernetes.io~empty-dir" / mount["name"])
        assert (volume / "shop" / "lifecycle.txt").read_bytes() == STATIC_FILE.read_bytes()
    assert static_file(api, namespace) == (200, STATIC_FILE.read_bytes())


def queued_tasks(redis: brokers.Redis) -> list[str]:
    """The task names of the messages waiting in Celery's default queue."""
    import redis as redis_client

    with redis_client.Redis.from_url(redis.url) as client:
        return [json.loads(message)["headers"]["task"]
                for message in client.lrange(CELERY_QUEUE, 0, -1)]


def test_one_beat_pod_sends_the_periodic_task(
    api: ApiClient, first_deploy: float, restricted_namespace: str,
    gateway_redis: brokers.Redis,
) -> None:
    namespace = restricted_namespace
    api.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shop-broker"},
         "stringData": {"url": gateway_redis.url}},
    )
    merge_patch(api, shop_path(namespace), {"spec": {
        "broker": {"type": "redis", "secretName": "shop-broker"},
        "beat": {"app": "sampleproject.celery"},
    }})
    selector = f"app.kubernetes.io/instance%3D{NAME},app.kubernetes.io/component%3Dbeat"

    def beat_pods() -> list[dict[str, Any]]:
        return list(api.get(
            f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")["items"])

    try:
        (pod,) = wait_for("the beat pod Running", lambda: (
            lambda found: found if len(found) == 1 and found[0]["status"].get("phase")
            == "Running" else None)(beat_pods()), timeout=180)
        # It schedules: the task lands in Redis, again at the schedule's period.
        first = wait_for("the first periodic task in Redis", lambda: (
            lambda tasks: tasks if tasks else None)(queued_tasks(gateway_redis)), timeout=90)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{beat_pods()}") from None
    assert set(first) == {BEAT_TASK}
    started = time.monotonic()
    more = wait_for("the next sends", lambda: (
        lambda tasks: tasks if len(tasks) >= len(first) + 2 else None)(
            queued_tasks(gateway_redis)), timeout=4 * BEAT_SECONDS)
    elapsed = time.monotonic() - started
    # Two more sends take about two periods (not less: a second scheduler would halve it).
    assert elapsed >= BEAT_SECONDS, (elapsed, more)
    assert pod["spec"]["nodeName"] == nodeconfig.NODE_NAME
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert len(beat_pods()) == 1
    print(f"beat: {len(more)} sends of {BEAT_TASK}, two in {elapsed:.1f}s")
