"""The deploy lifecycle on the local control plane (KWOK nodes, the real job, deployment and
garbage-collector controllers, the operator with exactly the chart's RBAC).

What KWOK does and does not do here: its `pod-complete` stage marks a Job's running pod
Succeeded, and the real Job controller then completes the Job, so a migration "succeeds"
without running `migrate`. A failure is a real one too: the Job's pod cannot be scheduled
(a nodeSelector no node has) and the Job controller fails the Job at its activeDeadlineSeconds.
No container runs, so there is no log to tail (the unit tests cover the tail) and no schema to
look at: tests/e2e/test_real_node_lifecycle.py shows both with real migrations on the real node.
"""

from __future__ import annotations

import time
from typing import Any

from djangoscale import spec
from djangoscale.budget import size_pool
from tests.e2e.helpers import API, condition, djangoservice, ready, secret
from tests.e2e.test_operator import operator  # noqa: F401 (its module-scoped fixture)
from tests.fixtures.polling import wait_for

MIGRATE = "app.kubernetes.io/component=migrate"
# Long enough for several of the operator's resyncs (every 3 s in the e2e tests).
RESYNCS_SECONDS = 10
UNSCHEDULABLE = {"djangoscale.io/e2e": "no-such-node"}


def lifecycle_spec(namespace: str, image: str, **fields: Any) -> dict[str, Any]:
    return djangoservice(namespace, image=image, migrations={"activeDeadlineSeconds": 8},
                         **fields)


def migration_jobs(kube: Any, namespace: str) -> list[dict[str, Any]]:
    return kube.list("batch/v1", "Job", namespace, MIGRATE)


def web_image(kube: Any, namespace: str) -> str:
    deployment = kube.get("apps/v1", "Deployment", namespace, "shop")
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def replica_set_created(kube: Any, namespace: str, image: str) -> str:
    (found,) = [rs for rs in kube.list("apps/v1", "ReplicaSet", namespace,
                                       "app.kubernetes.io/component=web")
                if rs["spec"]["template"]["spec"]["containers"][0]["image"] == image]
    return str(found["metadata"]["creationTimestamp"])


def rolled_out_to(kube: Any, namespace: str, image: str) -> bool:
    return ready(kube, namespace) and web_image(kube, namespace) == image


def migration_failed_events(kube: Any, namespace: str) -> list[dict[str, Any]]:
    events = kube.call("GET", f"/api/v1/namespaces/{namespace}/events")["items"]
    return [e for e in events if e.get("reason") == "MigrationFailed"]


def test_migrations_gate_the_rollout_and_run_once_per_image(kube, operator, namespace):  # noqa: F811
    kube.apply(secret(namespace))
    kube.apply(lifecycle_spec(namespace, "shop:1"))
    wait_for("the first rollout", lambda: rolled_out_to(kube, namespace, "shop:1"))
    (first,) = migration_jobs(kube, namespace)
    assert first["status"]["succeeded"] == 1
    # The pods were created only once the migration had completed.
    assert replica_set_created(kube, namespace, "shop:1") >= first["status"]["completionTime"]

    # The same spec again (a GitOps replay): no new generation, no second Job.
    generation = kube.get(API, "DjangoService", namespace, "shop")["metadata"]["generation"]
    kube.apply(lifecycle_spec(namespace, "shop:1"))
    time.sleep(RESYNCS_SECONDS)
    assert kube.get(API, "DjangoService", namespace, "shop")["metadata"]["generation"] == generation
    assert [j["metadata"]["name"] for j in migration_jobs(kube, namespace)] == [
        first["metadata"]["name"]]

    # A new image: its Job first, then the new pods.
    kube.apply(lifecycle_spec(namespace, "shop:2"))
    wait_for("the rollout of shop:2", lambda: rolled_out_to(kube, namespace, "shop:2"))
    jobs = {j["metadata"]["name"]: j for j in migration_jobs(kube, namespace)}
    assert len(jobs) == 2
    (second,) = [j for name, j in jobs.items() if name != first["metadata"]["name"]]
    assert replica_set_created(kube, namespace, "shop:2") >= second["status"]["completionTime"]
    deployment = kube.get("apps/v1", "Deployment", namespace, "shop")
    assert deployment["metadata"]["annotations"]["djangoscale.io/migration"] == (
        second["metadata"]["annotations"]["djangoscale.io/migration"])


def test_a_failed_migration_keeps_the_old_pods_until_a_spec_change(kube, operator, namespace):  # noqa: F811
    kube.apply(secret(namespace))
    kube.apply(lifecycle_spec(namespace, "shop:1"))
    wait_for("the first rollout", lambda: rolled_out_to(kube, namespace, "shop:1"))
    available = kube.get("apps/v1", "Deployment", namespace, "shop")["status"]["availableReplicas"]

    # A new image whose migration cannot run: the Job fails at its deadline.
    kube.apply(lifecycle_spec(namespace, "shop:broken", nodeSelector=UNSCHEDULABLE))
    wait_for("Migrating", lambda: condition(kube, namespace, "Progressing").get("reason")
             == "Migrating")
    degraded = wait_for("MigrationFailed", lambda: (
        lambda c: c if c.get("reason") == "MigrationFailed" else None)(
            condition(kube, namespace, "Degraded")))
    assert degraded["status"] == "True"
    assert "DeadlineExceeded" in degraded["message"]
    assert "Log tail:" in degraded["message"]
    # The old pods keep serving: the template did not move, no pod went away.
    assert web_image(kube, namespace) == "shop:1"
    deployment = kube.get("apps/v1", "Deployment", namespace, "shop")
    assert deployment["status"]["availableReplicas"] == available
    assert "nodeSelector" not in deployment["spec"]["template"]["spec"]
    wait_for("one Warning event", lambda: migration_failed_events(kube, namespace))

    # Resyncs neither retry the Job nor post another event.
    jobs = [j["metadata"]["name"] for j in migration_jobs(kube, namespace)]
    time.sleep(RESYNCS_SECONDS)
    assert [j["metadata"]["name"] for j in migration_jobs(kube, namespace)] == jobs
    (event,) = migration_failed_events(kube, namespace)
    assert event["type"] == "Warning" and event.get("count", 1) == 1

    # Fixing the spec (same image, placement fixed) retries that Job once, and it rolls out.
    kube.apply(lifecycle_spec(namespace, "shop:broken"))
    wait_for("the rollout of the fixed spec",
             lambda: rolled_out_to(kube, namespace, "shop:broken"))
    assert [j["metadata"]["name"] for j in migration_jobs(kube, namespace)] == jobs
    assert condition(kube, namespace, "Degraded")["status"] == "False"


def test_one_beat_pod_owned_recreated_and_pruned(kube, operator, namespace):  # noqa: F811
    kube.apply(secret(namespace))
    kube.apply(djangoservice(namespace, broker={"secretName": "shop-broker"},
                             beat={"app": "sampleproject.celery"}))
    wait_for("Ready", lambda: ready(kube, namespace))
    beat = wait_for("the beat Deployment's pod", lambda: (
        lambda d: d if d and (d.get("status") or {}).get("readyReplicas") == 1 else None)(
            kube.get("apps/v1", "Deployment", namespace, "shop-beat")))
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    uid = kube.get(API, "DjangoService", namespace, "shop")["metadata"]["uid"]
    assert beat["metadata"]["ownerReferences"][0]["uid"] == uid
    # The budget counts it: (5 + 1) web pods and the beat pod share what the status shows.
    live = kube.get(API, "DjangoService", namespace, "shop")
    parsed = spec.parse(live)
    assert parsed.max_pods == 5 + 1 + 1
    assert live["status"]["database"]["poolSizePerPod"] == size_pool(parsed).pool_size_per_pod
    assert kube.get("autoscaling/v2", "HorizontalPodAutoscaler", namespace, "shop-beat") is None
    kube.apply(djangoservice(namespace, broker={"secretName": "shop-broker"}))
    wait_for("the beat Deployment pruned",
             lambda: kube.get("apps/v1", "Deployment", namespace, "shop-beat") is None)
