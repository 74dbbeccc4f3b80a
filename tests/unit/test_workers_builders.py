"""Celery worker groups: Deployment, PDB and HPA per group, sharing the web pod's plumbing."""

from __future__ import annotations

import copy

from djangoscale import spec
from djangoscale.budget import size_pool
from djangoscale.builders import build_children
from djangoscale.builders.pgbouncer import DatabaseCredentials
from djangoscale.builders.workers import WORKER_GRACE_SECONDS
from djangoscale.conditions import gevent_warning
from djangoscale.contract import QUEUE_LENGTH_METRIC

SHOP = {
    "apiVersion": "djangoscale.io/v1alpha1",
    "kind": "DjangoService",
    "metadata": {"name": "shop", "namespace": "web", "uid": "1234", "generation": 3},
    "spec": {
        "image": "registry.example.com/shop:1.4.2",
        "wsgiApp": "shop.wsgi:application",
        "replicas": {"min": 2, "max": 20},
        "database": {"secretName": "shop-db", "maxConnections": 200},
        "broker": {"type": "rabbitmq", "secretName": "shop-broker"},
        "workers": [
            {"name": "default", "app": "shop.celery", "queues": ["celery", "mail"],
             "concurrency": 16, "replicas": {"min": 2, "max": 12},
             "targetQueueLengthPerWorker": 30,
             "resources": {"requests": {"cpu": "500m"}}},
            {"name": "reports", "app": "shop.celery:app", "pool": "prefork",
             "prefetchMultiplier": 4, "acksLate": False, "replicas": {"min": 0, "max": 3}},
        ],
    },
}
CREDENTIALS = DatabaseCredentials("db.internal", 5432, "shop", "shop", "s3cret")


def children(body=SHOP):
    return {
        (child["kind"], child["metadata"]["name"]): child
        for child in build_children(spec.parse(body), CREDENTIALS)
    }


def worker_deployment(name="default", body=SHOP):
    return children(body)[("Deployment", f"shop-worker-{name}")]


def test_each_group_gets_a_deployment_pdb_and_hpa_owned_by_the_service():
    built = children()
    for group in ("default", "reports"):
        for kind in ("Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
            child = built[(kind, f"shop-worker-{group}")]
            assert child["metadata"]["ownerReferences"][0]["uid"] == "1234"
            assert child["metadata"]["labels"]["app.kubernetes.io/component"] == (
                f"worker-{group}"
            )
    # The web children are still there and still select only web pods.
    assert built[("PodDisruptionBudget", "shop")]["spec"]["selector"]["matchLabels"][
        "app.kubernetes.io/component"
    ] == "web"


def test_worker_command_threads_fair_prefetch_one_acks_late_by_default():
    container = worker_deployment()["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [
        "djangoscale", "worker", "--app", "shop.celery", "--pool", "threads",
        "--concurrency", "16", "--prefetch-multiplier", "1", "-O", "fair",
        "--queues", "celery,mail", "--acks-late",
    ]
    assert container["resources"] == {"requests": {"cpu": "500m"}}
    other = worker_deployment("reports")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert other[other.index("--pool") + 1] == "prefork"
    assert other[other.index("--prefetch-multiplier") + 1] == "4"
    assert other[other.index("--queues") + 1] == "celery"
    assert other[-1] == "--no-acks-late"


def test_broker_url_only_from_the_secret():
    env = worker_deployment()["spec"]["template"]["spec"]["containers"][0]["env"]
    (broker,) = [item for item in env if item["name"] == "CELERY_BROKER_URL"]
    assert broker == {
        "name": "CELERY_BROKER_URL",
        "valueFrom": {"secretKeyRef": {"name": "shop-broker", "key": "url"}},
    }
    assert all("value" not in item or "amqp" not in item["value"] for item in env)


def test_worker_pod_is_the_web_pod_with_the_worker_container():
    built = children()
    web = built[("Deployment", "shop")]["spec"]["template"]
    worker = built[("Deployment", "shop-worker-default")]["spec"]["template"]
    web_env = {item["name"]: item for item in web["spec"]["containers"][0]["env"]}
    worker_env = {item["name"]: item for item in worker["spec"]["containers"][0]["env"]}
    # Same database plumbing: pgbouncer sidecar on loopback, password from a Secret reference.
    assert worker["spec"]["initContainers"] == web["spec"]["initContainers"]
    assert worker["spec"]["initContainers"][0]["name"] == "pgbouncer"
    assert worker["spec"]["volumes"] == web["spec"]["volumes"]
    for name in ("DATABASE_HOST", "DATABASE_PORT", "DATABASE_PASSWORD", "DATABASE_URL"):
        assert worker_env[name] == web_env[name]
    assert worker["metadata"]["annotations"] == web["metadata"]["annotations"]
    assert worker["spec"]["securityContext"]["runAsNonRoot"] is True
    security = worker["spec"]["containers"][0]["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"] == {"drop": ["ALL"]}
    # The shared budget: one pool size for every pod, counting the worker pods at their max.
    ds = spec.parse(SHOP)
    assert ds.max_pods == (20 + 1) + (12 + 1) + (3 + 1)
    assert size_pool(ds).pool_size_per_pod * ds.max_pods <= 200 - ds.database.reserved_connections


def test_graceful_shutdown_and_cheap_liveness():
    pod = worker_deployment()["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == WORKER_GRACE_SECONDS >= 60
    container = pod["containers"][0]
    # No preStop sleep (no endpoints to leave): only the pgbouncer pool shrinks.
    assert container["lifecycle"] == {"preStop": {"exec": {"command": [
        "djangoscale", "prestop", "--sleep", "0"]}}}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["ports"] == [{"name": "health", "containerPort": 9100, "protocol": "TCP"}]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["DJANGOSCALE_WORKER_HEALTH_BIND"] == "0.0.0.0:9100"


def test_selector_and_replicas_left_to_the_hpa():
    deployment = worker_deployment()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/component"] == "worker-default"
    assert all(labels[key] == value for key, value in selector.items())
    assert "replicas" not in deployment["spec"]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_hpa_on_queue_length_per_worker():
    built = children()
    hpa = built[("HorizontalPodAutoscaler", "shop-worker-default")]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "shop-worker-default"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 12)
    assert hpa["metrics"] == [{
        "type": "Pods",
        "pods": {"metric": {"name": QUEUE_LENGTH_METRIC},
                 "target": {"type": "AverageValue", "averageValue": "30"}},
    }]
    # replicas.min 0 cannot be served by a Pods metric: one pod stays.
    reports = built[("HorizontalPodAutoscaler", "shop-worker-reports")]["spec"]
    assert (reports["minReplicas"], reports["maxReplicas"]) == (1, 3)


def test_pdb_selects_the_group():
    pdb = children()[("PodDisruptionBudget", "shop-worker-reports")]["spec"]
    assert pdb["selector"]["matchLabels"]["app.kubernetes.io/component"] == "worker-reports"
    assert pdb["maxUnavailable"] == 1


def test_without_a_database_no_sidecar_and_no_database_env():
    body = copy.deepcopy(SHOP)
    del body["spec"]["database"]
    pod = worker_deployment(body=body)["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    names = {item["name"] for item in pod["containers"][0]["env"]}
    assert "CELERY_BROKER_URL" in names and not any(n.startswith("DATABASE_") for n in names)


def test_gevent_warning_only_for_an_opted_in_group():
    assert gevent_warning(spec.parse(SHOP)) is None
    body = copy.deepcopy(SHOP)
    body["spec"]["workers"][1].update(pool="gevent", allowGevent=True)
    reason, message = gevent_warning(spec.parse(body))
    assert reason == "GeventOptIn" and message.startswith("worker group(s) reports run gevent")


def test_gevent_condition_in_status_only_with_worker_groups():
    from djangoscale.conditions import worker_conditions

    (threads,) = worker_conditions(spec.parse(SHOP))
    assert (threads.type, threads.status, threads.reason) == ("GeventWorkers", "False",
                                                              "NativeThreads")
    body = copy.deepcopy(SHOP)
    body["spec"]["workers"][0].update(pool="gevent", allowGevent=True)
    (gevent,) = worker_conditions(spec.parse(body))
    assert (gevent.status, gevent.reason) == ("True", "GeventOptIn")
    del body["spec"]["workers"], body["spec"]["broker"]
    assert worker_conditions(spec.parse(body)) == []


def test_worker_children_validate_against_the_kubernetes_schemas():
    import kubernetes_validate

    workers = [child for (_, name), child in children().items() if "-worker-" in name]
    # Both groups' children are in the list: a renamed child must not leave it empty.
    assert {"shop-worker-default", "shop-worker-reports"} <= {
        c["metadata"]["name"] for c in workers}, [c["metadata"]["name"] for c in workers]
    for child in workers:
        kubernetes_validate.validate(child, "1.35", strict=True)


def test_without_autoscaling_worker_groups_hold_min_replicas_and_get_no_hpa():
    body = copy.deepcopy(SHOP)
    body["spec"]["autoscaling"] = {"enabled": False}
    rendered = build_children(spec.parse(body), CREDENTIALS)
    assert not [c for c in rendered if c["kind"] == "HorizontalPodAutoscaler"]
    deployments = {c["metadata"]["name"]: c for c in rendered if c["kind"] == "Deployment"}
    assert deployments["shop-worker-default"]["spec"]["replicas"] == 2
    assert deployments["shop-worker-reports"]["spec"]["replicas"] == 0  # no HPA: zero is fine


def test_ready_waits_for_every_worker_deployment():
    from djangoscale.conditions import rollout_conditions

    def deployment(desired: int, available: int) -> dict:
        return {"metadata": {"generation": 1}, "spec": {"replicas": desired},
                "status": {"observedGeneration": 1, "updatedReplicas": available,
                           "availableReplicas": available, "replicas": desired}}

    ds = spec.parse(SHOP)
    web = deployment(2, 2)
    rolling = {"default": deployment(2, 1), "reports": deployment(1, 1)}
    ready = {c.type: c for c in rollout_conditions(ds, web, rolling)}["Ready"]
    assert (ready.status, ready.reason) == ("False", "WorkersRollingOut")
    assert "default" in ready.message and "reports" not in ready.message
    done = {"default": deployment(2, 2), "reports": deployment(1, 1)}
    assert {c.type: c for c in rollout_conditions(ds, web, done)}["Ready"].status == "True"


def test_workers_open_a_connection_per_task_and_spec_env_wins():
    body = copy.deepcopy(SHOP)
    body["spec"]["workers"][1].update(pool="gevent", allowGevent=True)
    body["spec"]["env"] = [{"name": "DJANGOSCALE_WORKER_HEALTH_BIND", "value": "0.0.0.0:9999"}]

    def env(name: str) -> dict[str, str | None]:
        container = worker_deployment(name, body)["spec"]["template"]["spec"]["containers"][0]
        names = [item["name"] for item in container["env"]]
        assert len(names) == len(set(names))
        return {item["name"]: item.get("value") for item in container["env"]}

    # Unlike the web pods (60): nothing drops a kept connection before a task.
    assert env("default")["DATABASE_CONN_MAX_AGE"] == "0"
    assert env("reports")["DATABASE_CONN_MAX_AGE"] == "0"
    assert env("default")["DJANGOSCALE_WORKER_HEALTH_BIND"] == "0.0.0.0:9999"
