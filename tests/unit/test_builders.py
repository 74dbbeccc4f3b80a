"""The pure builders: children of a DjangoService, checked field by field."""

from __future__ import annotations

import base64
import copy
import json

from djangoscale import spec
from djangoscale.budget import size_pool
from djangoscale.builders import build_children
from djangoscale.builders.deployment import CHECKSUM_ANNOTATION
from djangoscale.builders.pgbouncer import DatabaseCredentials

SHOP = {
    "apiVersion": "djangoscale.io/v1alpha1",
    "kind": "DjangoService",
    "metadata": {"name": "shop", "namespace": "web", "uid": "1234", "generation": 3},
    "spec": {
        "image": "registry.example.com/shop:1.4.2",
        "wsgiApp": "shop.wsgi:application",
        "server": {"type": "cherrypy", "threads": 100, "maxThreads": 150, "queueSize": 1000},
        "replicas": {"min": 10, "max": 60},
        "autoscaling": {"targetRPSPerPod": 120},
        "database": {"secretName": "shop-db", "maxConnections": 400},
        "pgbouncer": {"enabled": True, "poolMode": "transaction"},
    },
}
CREDENTIALS = DatabaseCredentials("db.internal", 5432, "shop", "shop", "s3cret-pa$$word")


def children_by_kind(body=SHOP, credentials=CREDENTIALS):
    return {child["kind"]: child for child in build_children(spec.parse(body), credentials)}


def decoded(secret, key):
    return base64.b64decode(secret["data"][key]).decode()


def test_children_and_their_owner():
    children = children_by_kind()
    assert set(children) == {
        "Secret",
        "Job",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    for child in children.values():
        assert child["metadata"]["namespace"] == "web"
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "djangoscale"
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner["uid"] == "1234" and owner["controller"] is True


def test_pool_is_the_budget_over_max_replicas_plus_surge():
    sizing = size_pool(spec.parse(SHOP))
    # (400 - 3 reserved) // (60 + 1) = 6, less the one a terminating pod keeps: 5 per pod;
    # 5 x 61 running + 1 x 61 draining = 366 <= 397.
    assert sizing.pool_size_per_pod == 5
    assert sizing.connections_at_max == 305
    assert sizing.connections_at_max + 61 <= 400 - 3
    assert sizing.max_client_conn_per_pod == 150 + 10
    ini = decoded(children_by_kind()["Secret"], "pgbouncer.ini")
    assert "default_pool_size = 5\n" in ini
    assert "max_db_connections = 5\n" in ini
    # The app container's user reads SHOW POOLS and shrinks the pool at termination.
    assert "admin_users = shop\n" in ini
    assert "reserve_pool_size = 0\n" in ini
    assert "pool_mode = transaction\n" in ini
    assert "listen_addr = 127.0.0.1\n" in ini
    assert "shop = host=db.internal port=5432 dbname=shop\n" in ini


def test_pool_never_exceeds_what_a_pod_can_use():
    body = copy.deepcopy(SHOP)
    body["spec"]["server"] = {"type": "gunicorn-sync", "workers": 2}
    body["spec"]["replicas"] = {"min": 1, "max": 2}
    assert size_pool(spec.parse(body)).pool_size_per_pod == 2


def test_password_only_in_the_secret():
    children = children_by_kind()
    for kind, child in children.items():
        text = json.dumps(child)
        if kind != "Secret":
            assert "s3cret" not in text, kind
    assert decoded(children["Secret"], "userlist.txt") == '"shop" "s3cret-pa$$word"\n'
    assert decoded(children["Secret"], "DATABASE_URL") == (
        "postgres://shop:s3cret-pa%24%24word@127.0.0.1:6432/shop"
    )


def test_deployment_runs_the_launcher_with_the_spec():
    deployment = children_by_kind()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (app,) = pod["containers"]
    env = {item["name"]: item.get("value") for item in app["env"]}
    assert app["args"] == ["djangoscale", "serve", "shop.wsgi:application"]
    assert env["DJANGOSCALE_SERVER"] == "cherrypy"
    assert (env["DJANGOSCALE_THREADS"], env["DJANGOSCALE_MAX_THREADS"]) == ("100", "150")
    assert env["DJANGOSCALE_QUEUE_SIZE"] == "1000"
    assert (env["DATABASE_HOST"], env["DATABASE_PORT"]) == ("127.0.0.1", "6432")
    # The HPA owns replicas: the operator's applied Deployment must not name them.
    assert "replicas" not in deployment["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["name"] == "pgbouncer" and sidecar["restartPolicy"] == "Always"


def test_pods_pass_the_restricted_pod_security_standard():
    pod = children_by_kind()["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod["containers"] + pod["initContainers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert context.get("privileged") is not True
    for volume in pod["volumes"]:
        assert set(volume) & {"emptyDir", "secret"}, volume  # no hostPath


def test_a_non_root_pgbouncer_can_read_its_config_files():
    # The kubelet gives Secret files to root and to the fsGroup only (mode 0440).
    pod = children_by_kind()["Deployment"]["spec"]["template"]["spec"]
    config = next(v for v in pod["volumes"] if v["name"] == "pgbouncer-config")
    assert config["secret"]["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] not in (None, 0)


def test_a_secret_change_rolls_the_pods():
    before = children_by_kind()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    rotated = DatabaseCredentials("db.internal", 5432, "shop", "shop", "rotated")
    after = children_by_kind(credentials=rotated)["Deployment"]["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert before[CHECKSUM_ANNOTATION] != after[CHECKSUM_ANNOTATION]


def test_hpa_scales_on_rps_between_min_and_max():
    hpa = children_by_kind()["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (10, 60)
    (metric,) = hpa["metrics"]
    assert metric["pods"]["metric"]["name"] == "djangoscale_requests_per_second"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "120"}
    assert hpa["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300


def test_without_autoscaling_the_deployment_holds_min_replicas():
    body = copy.deepcopy(SHOP)
    body["spec"]["autoscaling"] = {"enabled": False}
    children = children_by_kind(body)
    assert "HorizontalPodAutoscaler" not in children
    assert children["Deployment"]["spec"]["replicas"] == 10


def test_without_database_there_is_no_secret_and_no_sidecar():
    body = copy.deepcopy(SHOP)
    del body["spec"]["database"]
    children = children_by_kind(body)
    assert "Secret" not in children
    assert "initContainers" not in children["Deployment"]["spec"]["template"]["spec"]


def test_django_pool_mode_sizes_per_process_and_has_no_sidecar():
    body = copy.deepcopy(SHOP)
    body["spec"]["pooling"] = {"mode": "django"}
    body["spec"]["server"] = {"type": "gunicorn-gthread", "workers": 2, "threads": 8}
    body["spec"]["replicas"] = {"min": 2, "max": 9}
    body["spec"]["database"]["maxConnections"] = 63
    ds = spec.parse(body)
    sizing = size_pool(ds)
    # (63 - 3) // ((9 + 1) pods x 2 processes) = 3 per process, 6 per pod, 60 at max.
    assert (sizing.pool_size_per_process, sizing.pool_size_per_pod) == (3, 6)
    assert sizing.connections_at_max == 60 <= 63 - 3
    children = children_by_kind(body)
    pod = children["Deployment"]["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["DATABASE_POOL_MAX_SIZE"]["value"] == "3"
    assert env["DATABASE_HOST"]["valueFrom"]["secretKeyRef"] == {"name": "shop-db", "key": "host"}
    assert decoded(children["Secret"], "DATABASE_URL") == (
        "postgres://shop:s3cret-pa%24%24word@db.internal:5432/shop"
    )


def test_django_pool_mode_refuses_a_budget_below_one_per_process():
    body = copy.deepcopy(SHOP)
    body["spec"]["pooling"] = {"mode": "django"}
    body["spec"]["server"] = {"type": "gunicorn-gthread", "workers": 4, "threads": 8}
    body["spec"]["replicas"] = {"min": 2, "max": 20}
    body["spec"]["database"]["maxConnections"] = 60
    try:
        spec.parse(body)
    except spec.SpecError as error:
        assert error.problems[0].startswith("spec.pooling.mode: django pools per process")
    else:
        raise AssertionError("accepted a budget of 57 for 21 pods x 4 processes")


def test_conditions_keep_one_order_whoever_writes_them():
    from djangoscale.conditions import Condition, merge_conditions

    theirs = merge_conditions([], [Condition("MetricsAvailable", "True", "Scraped", "ok")], 1, "t0")
    ours = merge_conditions(theirs, [Condition("Ready", "True", "Available", "2/2")], 1, "t1")
    metrics = Condition("MetricsAvailable", "True", "Scraped", "ok")
    again = merge_conditions(ours, [metrics], 1, "t2")
    assert [c["type"] for c in ours] == ["Ready", "MetricsAvailable"]
    assert again == ours  # no change, no new transition time, no reordering


def test_pgbouncer_takes_the_clients_of_the_busiest_pod_web_or_worker():
    body = copy.deepcopy(SHOP)
    body["spec"]["broker"] = {"secretName": "broker"}
    body["spec"]["replicas"] = {"min": 2, "max": 10}
    body["spec"]["workers"] = [{"name": "bulk", "app": "shop.celery", "concurrency": 300,
                                "replicas": {"max": 4}}]
    assert size_pool(spec.parse(body)).max_client_conn_per_pod == 300 + 10


def test_kstatus_reads_reconciling_and_stalled_mirroring_ours():
    from djangoscale.conditions import failed

    by_type = {c.type: c for c in failed("InvalidSpec", "spec.port: must be >= 1")}
    assert by_type["Stalled"].status == by_type["Degraded"].status == "True"
    assert by_type["Reconciling"].status == by_type["Progressing"].status == "False"
    assert by_type["Stalled"].reason == "InvalidSpec"


def app_env(body) -> dict[str, str | None]:
    pod = children_by_kind(body)["Deployment"]["spec"]["template"]["spec"]
    return {item["name"]: item.get("value") for item in pod["containers"][0]["env"]}


def test_threads_keep_their_connection_to_the_local_pgbouncer_only():
    # Behind the pod's own pgbouncer a kept client connection holds no server connection.
    assert app_env(SHOP)["DATABASE_CONN_MAX_AGE"] == "60"
    gevent = copy.deepcopy(SHOP)
    gevent["spec"]["server"] = {"type": "gunicorn-gevent", "threads": 100}
    assert app_env(gevent)["DATABASE_CONN_MAX_AGE"] == "0"  # it would outlive its greenlet
    for mode in ("django", "none", "external"):  # Django's pool needs 0; direct: server conns
        body = copy.deepcopy(SHOP)
        body["spec"]["pooling"] = {"mode": mode}
        body["spec"]["database"]["maxConnections"] = 10000  # none: 61 x 150 threads fit
        assert app_env(body)["DATABASE_CONN_MAX_AGE"] == "0", mode


def test_spec_env_replaces_the_operators_variable_of_the_same_name():
    body = copy.deepcopy(SHOP)
    body["spec"]["env"] = [{"name": "DATABASE_CONN_MAX_AGE", "value": "0"},
                           {"name": "SENTRY_DSN", "value": "https://sentry.example"}]
    pod = children_by_kind(body)["Deployment"]["spec"]["template"]["spec"]
    names = [item["name"] for item in pod["containers"][0]["env"]]
    assert len(names) == len(set(names))  # server-side apply refuses a name twice
    assert app_env(body)["DATABASE_CONN_MAX_AGE"] == "0"
    assert names[-2:] == ["DATABASE_CONN_MAX_AGE", "SENTRY_DSN"]
