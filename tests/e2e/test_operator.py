"""The operator on the real local control plane: children, status, admission, GC, no drift."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from djangoscale.contract import INITIAL_SCALE_FIELD_MANAGER
from djangoscale.k8s import ApiError
from tests.e2e.helpers import (
    API,
    OperatorProcess,
    condition,
    djangoservice,
    ready,
    secret,
    start_operator,
)
from tests.fixtures.invalid_specs import INVALID_FIELDS, UNKNOWN_FIELDS
from tests.fixtures.polling import wait_for
from tests.tools.chart_install import operator_kubeconfig

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def operator(kube, cluster, tmp_path_factory) -> Iterator[OperatorProcess]:
    """The operator with exactly the Helm chart's RBAC: its ServiceAccount's token."""
    directory = tmp_path_factory.mktemp("operator")
    log = directory / "operator.log"
    kubeconfig = operator_kubeconfig(cluster.kubeconfig, directory / "sa" / "kubeconfig")
    with start_operator(kubeconfig, log) as running:
        yield running
    text = log.read_text(errors="replace")
    # The operator never logs a password, whatever happened in the tests.
    assert "e2e-secret-password" not in text
    # The chart's RBAC was enough for every scenario.
    # (A 403 for writing into a terminating namespace is the namespace's doing, not RBAC's.)
    refused = [line for line in text.splitlines() if "is forbidden: User" in line]
    assert not refused, "\n".join(refused[:10])


def test_djangoservice_becomes_ready_with_its_children(kube, operator, namespace):
    kube.apply(secret(namespace))
    kube.apply(djangoservice(namespace))
    wait_for("Ready=True", lambda: ready(kube, namespace))

    live = kube.get(API, "DjangoService", namespace, "shop")
    for api_version, kind, name in [
        ("apps/v1", "Deployment", "shop"),
        ("v1", "Service", "shop"),
        ("policy/v1", "PodDisruptionBudget", "shop"),
        ("autoscaling/v2", "HorizontalPodAutoscaler", "shop"),
        ("v1", "Secret", "shop-database"),
    ]:
        child = kube.get(api_version, kind, namespace, name)
        assert child is not None, kind
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner["uid"] == live["metadata"]["uid"]
    deployment = kube.get("apps/v1", "Deployment", namespace, "shop")
    # Started at replicas.min, not at the API's default of 1; KWOK runs the pods.
    assert deployment["status"]["readyReplicas"] >= 2
    database = live["status"]["database"]
    assert {key: database[key] for key in (
        "poolingMode", "poolSizePerPod", "maxClientConnPerPod", "connectionsAtMaxReplicas",
        "maxConnections", "budget", "guarded")} == {
        "poolingMode": "pgbouncer",
        "poolSizePerPod": 5,  # (40 - 3) // (5 + 1) - 1 kept for a terminating pod
        "maxClientConnPerPod": 40,
        "connectionsAtMaxReplicas": 30,
        "maxConnections": 40,
        "budget": 37,
        "guarded": True,
    }
    for type_ in ("Progressing", "Degraded"):
        assert condition(kube, namespace, type_)["status"] == "False"
    # Status and children never carry the password.
    text = str(live) + str(deployment)
    assert "e2e-secret-password" not in text


def test_pooler_mode_runs_a_pgbouncer_deployment_the_pods_connect_to(kube, operator, namespace):
    kube.apply(secret(namespace))
    kube.apply(djangoservice(namespace, pooling={"mode": "pooler"}))
    wait_for("Ready=True", lambda: ready(kube, namespace))
    # Started at pooling.pooler.replicas.min (2), then its own HPA owns the replicas.
    wait_for("2 pooler pods ready", lambda: (kube.get(
        "apps/v1", "Deployment", namespace, "shop-pooler") or {}).get("status", {}).get(
        "readyReplicas") == 2)
    hpa = kube.get("autoscaling/v2", "HorizontalPodAutoscaler", namespace, "shop-pooler")
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 3)
    service = kube.get("v1", "Service", namespace, "shop-pooler")
    assert service["spec"]["ports"][0]["port"] == 6432
    assert kube.get("policy/v1", "PodDisruptionBudget", namespace, "shop-pooler") is not None
    app = kube.get("apps/v1", "Deployment", namespace, "shop")["spec"]["template"]["spec"]
    assert "initContainers" not in app
    env = {item["name"]: item.get("value") for item in app["containers"][0]["env"]}
    assert env["DATABASE_HOST"] == "shop-pooler"
    database = kube.get(API, "DjangoService", namespace, "shop")["status"]["database"]
    # 37 over 3 pooler pods + 1 surge pod, one kept for a terminating one: 8 each.
    assert (database["poolingMode"], database["poolSizePerPod"],
            database["connectionsAtMaxReplicas"]) == ("pooler", 8, 32)
    # Back to the sidecar: the pooler's children go.
    kube.apply(djangoservice(namespace))
    wait_for("pooler pruned", lambda: all(kube.get(api_version, kind, namespace, "shop-pooler")
                                          is None for api_version, kind in [
        ("apps/v1", "Deployment"), ("v1", "Service"), ("policy/v1", "PodDisruptionBudget"),
        ("autoscaling/v2", "HorizontalPodAutoscaler")]))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"replicas": {"min": 40, "max": 20}},
         "spec.replicas.min: must be <= spec.replicas.max"),
        ({"replicas": {"min": 2, "max": 60}},
         "the largest spec.replicas.max it supports is maxConnections - reservedConnections - 1"),
        ({"server": {"type": "gunicorn-sync", "threads": 8}},
         "spec.server.threads: gunicorn-sync and bjoern serve one request at a time"),
        ({"port": 70000}, "spec.port"),
    ],
)
def test_admission_refuses_bad_specs_naming_the_field(kube, namespace, spec, message):
    with pytest.raises(ApiError) as raised:
        kube.apply(djangoservice(namespace, **spec))
    assert raised.value.status == 422
    assert message in json.loads(raised.value.body)["message"]
    # The Python validator refuses the same object with the same words.
    from djangoscale import spec as spec_module

    with pytest.raises(spec_module.SpecError) as parsed:
        spec_module.parse(djangoservice(namespace, **spec))
    if "port" not in spec:
        assert any(message in problem for problem in parsed.value.problems)


@pytest.mark.parametrize(("fields", "expected"), INVALID_FIELDS)
def test_the_api_server_refuses_every_invalid_spec_naming_the_field(
    kube, namespace, fields, expected
):
    body = djangoservice(namespace)
    body["spec"] = {"image": "shop:1", "wsgiApp": "shop.wsgi:application", **fields}
    with pytest.raises(ApiError) as raised:
        kube.call(
            "POST", f"/apis/{API}/namespaces/{namespace}/djangoservices", body=body,
            query=[("fieldValidation", "Strict")],
        )
    assert raised.value.status == 422
    message = json.loads(raised.value.body)["message"]
    field = expected.split(":")[0]
    assert field in message or field.replace("[0]", "[]") in message, message


@pytest.mark.parametrize(("fields", "path"), UNKNOWN_FIELDS)
def test_unknown_fields_are_refused_with_strict_validation(kube, namespace, fields, path):
    body = djangoservice(namespace)
    body["spec"] = {"image": "shop:1", "wsgiApp": "shop.wsgi:application", **fields}
    with pytest.raises(ApiError) as raised:
        kube.call(
            "POST", f"/apis/{API}/namespaces/{namespace}/djangoservices", body=body,
            query=[("fieldValidation", "Strict")],
        )
    assert f'unknown field "{path}"' in json.loads(raised.value.body)["message"]


def test_pods_are_admitted_in_a_restricted_namespace(kube, operator, namespace):
    kube.call(
        "PATCH", f"/api/v1/namespaces/{namespace}",
        body={"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
        content_type="application/merge-patch+json",
    )
    kube.apply(secret(namespace))
    kube.apply(djangoservice(namespace))
    wait_for("Ready under the restricted Pod Security Standard", lambda: ready(kube, namespace))
    pods = kube.call("GET", f"/api/v1/namespaces/{namespace}/pods")["items"]
    assert len(pods) >= 2 and all(p["status"]["phase"] == "Running" for p in pods)


def test_invalid_secret_is_judged_by_the_operator_others_keep_working(kube, operator, namespace):
    broken = secret(namespace)
    del broken["data"]["password"]
    broken["metadata"]["name"] = "broken-db"
    kube.apply(broken)
    kube.apply(secret(namespace))
    kube.apply(djangoservice(namespace, name="bad", database={"secretName": "broken-db",
                                                              "maxConnections": 40}))
    kube.apply(djangoservice(namespace, name="good"))
    found = wait_for(
        "InvalidDatabaseSecret",
        lambda: (c := condition(kube, namespace, name="bad")).get("reason")
        == "InvalidDatabaseSecret" and c,
    )
    assert "no key(s) password" in found["message"]
    wait_for("the valid one Ready", lambda: ready(kube, namespace, name="good"))


def test_missing_secret_is_a_condition_and_an_event_then_recovers(kube, operator, namespace):
    kube.apply(djangoservice(namespace))
    found = wait_for(
        "Ready=False DatabaseSecretNotFound",
        lambda: (c := condition(kube, namespace)).get("reason") == "DatabaseSecretNotFound" and c,
    )
    assert found["status"] == "False" and "spec.database.secretName" in found["message"]
    assert condition(kube, namespace, "Degraded")["status"] == "True"
    events = wait_for(
        "a Warning event",
        lambda: [
            e for e in kube.call("GET", f"/api/v1/namespaces/{namespace}/events")["items"]
            if e["type"] == "Warning" and e["reason"] == "DatabaseSecretNotFound"
        ],
    )
    assert events[0]["involvedObject"]["name"] == "shop"
    assert kube.get("apps/v1", "Deployment", namespace, "shop") is None
    kube.apply(secret(namespace))
    wait_for("Ready=True once the Secret exists", lambda: ready(kube, namespace))


def test_changes_roll_out_and_secret_rotation_rolls_pods(kube, operator, namespace):
    kube.apply(secret(namespace))
    kube.apply(djangoservice(namespace))
    wait_for("Ready", lambda: ready(kube, namespace))

    def template() -> dict[str, Any]:
        deployment = kube.get("apps/v1", "Deployment", namespace, "shop")
        return deployment["spec"]["template"]

    def env(name: str) -> str | None:
        (app,) = template()["spec"]["containers"]
        return next((e.get("value") for e in app["env"] if e["name"] == name), None)

    def replicasets() -> set[str]:
        items = kube.call(
            "GET", f"/apis/apps/v1/namespaces/{namespace}/replicasets",
            query=[("labelSelector", "app.kubernetes.io/instance=shop")],
        )["items"]
        return {item["metadata"]["name"] for item in items}

    first = replicasets()
    kube.apply(djangoservice(namespace, server={"type": "cherrypy", "threads": 24,
                                                "maxThreads": 30}))
    wait_for("the new thread count", lambda: env("DJANGOSCALE_THREADS") == "24")
    wait_for("a new ReplicaSet", lambda: replicasets() - first)
    wait_for("Ready after the rollout", lambda: ready(kube, namespace))
    assert condition(kube, namespace)["observedGeneration"] == 2

    kube.apply(djangoservice(namespace, server={"type": "gunicorn-gthread", "threads": 8}))
    wait_for("the new server type", lambda: env("DJANGOSCALE_SERVER") == "gunicorn-gthread")
    assert env("DJANGOSCALE_THREADS") == "8"

    checksum = template()["metadata"]["annotations"]["djangoscale.io/config-checksum"]
    kube.apply(secret(namespace, password="rotated-password"))
    wait_for(
        "a new checksum after the Secret rotated",
        lambda: template()["metadata"]["annotations"]["djangoscale.io/config-checksum"]
        != checksum,
    )
    wait_for("Ready after the rollout", lambda: ready(kube, namespace))


def test_deleted_child_is_recreated_and_deleting_the_owner_collects_all(kube, operator, namespace):
    kube.apply(secret(namespace))
    kube.apply(djangoservice(namespace))
    wait_for("Ready", lambda: ready(kube, namespace))
    uid = kube.get("v1", "Service", namespace, "shop")["metadata"]["uid"]
    kube.call("DELETE", f"/api/v1/namespaces/{namespace}/services/shop")
    wait_for(
        "the Service to come back",
        lambda: (s := kube.get("v1", "Service", namespace, "shop")) and s["metadata"]["uid"] != uid,
    )

    kube.call("DELETE", f"/apis/{API}/namespaces/{namespace}/djangoservices/shop")
    wait_for(
        "garbage collection of every child",
        lambda: all(
            kube.get(a, k, namespace, n) is None
            for a, k, n in [("apps/v1", "Deployment", "shop"), ("v1", "Service", "shop"),
                            ("autoscaling/v2", "HorizontalPodAutoscaler", "shop"),
                            ("v1", "Secret", "shop-database")]
        ),
    )
    # The user's own Secret is theirs: never deleted.
    assert kube.get("v1", "Secret", namespace, "shop-db") is not None


def gitops_apply(kube: Any, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
    """Server-side apply under a GitOps tool's own field manager (as Argo CD or Flux do)."""
    result: dict[str, Any] = kube.apply(body, field_manager="gitops", dry_run=dry_run)
    return result


def without_bookkeeping(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the user's file sets it: the status (the operator writes it on its own
    schedule, say a collection round between two reads) and its resourceVersion left out."""
    metadata = {k: v for k, v in obj["metadata"].items()
                if k not in ("managedFields", "resourceVersion")}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": metadata}


def resynced(kube: Any) -> Callable[[], int]:
    """How many DjangoServices the operator resyncs now: every one not being deleted (kopf
    stops an object's resync once it has a deletionTimestamp)."""
    return lambda: sum(
        1 for item in kube.call("GET", f"/apis/{API}/djangoservices")["items"]
        if not item["metadata"].get("deletionTimestamp"))


def test_no_drift_and_no_fight_with_the_hpa(kube, operator, namespace):
    kube.apply(secret(namespace))
    body = djangoservice(namespace)
    gitops_apply(kube, body)
    wait_for("Ready", lambda: ready(kube, namespace))
    operator.wait_for_resyncs(resynced(kube), 1)  # the object settled by a resync of its own

    def versions() -> dict[str, str]:
        return {
            kind: kube.get(api, kind, namespace, "shop")["metadata"]["resourceVersion"]
            for api, kind in [(API, "DjangoService"), ("apps/v1", "Deployment"),
                              ("v1", "Service")]
        }

    settled = wait_for("a settled object", lambda: (v := versions()) == versions() and v)
    # What `kubectl diff --server-side` computes: the same file, dry-run applied, changes
    # nothing of the live object.
    live = kube.get(API, "DjangoService", namespace, "shop")
    assert without_bookkeeping(gitops_apply(kube, body, dry_run=True)) == without_bookkeeping(live)
    # The same file applied again, as a GitOps tool does: nothing changes.
    gitops_apply(kube, copy.deepcopy(body))
    # Not a sleep: no resync in the wait would make "nothing changed" true by default.
    assert operator.wait_for_resyncs(resynced(kube), 2) >= 2
    # The DjangoService's own resourceVersion moves with each status write; what the user's
    # file sets (and the operator's annotations) must not.
    assert without_bookkeeping(kube.get(API, "DjangoService", namespace, "shop")) == (
        without_bookkeeping(live))
    assert versions()["Service"] == settled["Service"]

    # Replicas belong to the HPA (here set through the scale subresource, as the HPA does):
    # the operator's resyncs leave them alone.
    kube.scale("apps/v1", "Deployment", namespace, "shop", 4, INITIAL_SCALE_FIELD_MANAGER)
    assert operator.wait_for_resyncs(resynced(kube), 2) >= 2
    deployment = kube.get("apps/v1", "Deployment", namespace, "shop")
    # (The local cluster's HPA scale-down window is 30 s, longer than two 3 s resyncs.)
    assert deployment["spec"]["replicas"] == 4
    managers = {m["manager"] for m in deployment["metadata"]["managedFields"]}
    assert "djangoscale" in managers
    applied = next(m for m in deployment["metadata"]["managedFields"]
                   if m["manager"] == "djangoscale" and m["operation"] == "Apply")
    assert "f:replicas" not in applied["fieldsV1"]["f:spec"]


def test_hand_edits_of_owned_fields_are_put_back(kube, operator, namespace):
    kube.apply(secret(namespace))
    kube.apply(djangoservice(namespace))
    wait_for("Ready", lambda: ready(kube, namespace))

    def args() -> list[str]:
        deployment = kube.get("apps/v1", "Deployment", namespace, "shop")
        return deployment["spec"]["template"]["spec"]["containers"][0]["args"]

    owned = args()
    kube.call(
        "PATCH",
        f"/apis/apps/v1/namespaces/{namespace}/deployments/shop",
        body=[{"op": "replace", "path": "/spec/template/spec/containers/0/args",
               "value": ["sleep", "infinity"]}],
        query=[("fieldManager", "kubectl-edit")], content_type="application/json-patch+json",
    )
    wait_for("the operator to put its args back", lambda: args() == owned, timeout=30)


def test_turning_autoscaling_off_prunes_the_hpa_and_holds_min(kube, operator, namespace):
    kube.apply(secret(namespace))
    kube.apply(djangoservice(namespace))
    wait_for("the HPA", lambda: kube.get("autoscaling/v2", "HorizontalPodAutoscaler",
                                         namespace, "shop"))
    kube.apply(djangoservice(namespace, autoscaling={"enabled": False},
                             replicas={"min": 3, "max": 5}))
    wait_for("the HPA to be pruned", lambda: kube.get(
        "autoscaling/v2", "HorizontalPodAutoscaler", namespace, "shop") is None)
    wait_for("replicas.min pods", lambda: kube.get(
        "apps/v1", "Deployment", namespace, "shop")["spec"]["replicas"] == 3)
    wait_for("Ready", lambda: ready(kube, namespace))
