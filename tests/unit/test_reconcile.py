"""The reconciler and the kopf handlers against an in-memory API (`tests/fixtures/fake_api.py`):
what they write, and what they leave alone."""

from __future__ import annotations

import base64
import copy
import logging
from typing import Any

import kopf
import pytest

from djangoscale.context import OperatorContext
from djangoscale.contract import API_VERSION, INITIAL_SCALE_FIELD_MANAGER, KIND
from djangoscale.controller import handlers
from djangoscale.k8s import ApiError
from djangoscale.settings import OperatorSettings
from tests.fixtures.fake_api import FakeApi

LOGGER = logging.getLogger("test")
SHOP: dict[str, Any] = {
    "apiVersion": API_VERSION,
    "kind": KIND,
    "metadata": {"name": "shop", "namespace": "web", "uid": "shop-uid", "generation": 1},
    "spec": {
        "image": "shop:1",
        "wsgiApp": "shop.wsgi:application",
        "replicas": {"min": 2, "max": 6},
        "database": {"secretName": "shop-db", "maxConnections": 100},
        # The migration gate has its own tests (test_migration_gate.py).
        "migrations": {"enabled": False},
    },
}
CHILDREN = [
    ("apply", "Secret", "shop-database"),
    ("apply", "Deployment", "shop"),
    ("apply", "Service", "shop"),
    ("apply", "PodDisruptionBudget", "shop"),
    ("apply", "HorizontalPodAutoscaler", "shop"),
]


def database_secret() -> dict[str, Any]:
    values = {"host": "db", "port": "5432", "dbname": "shop", "user": "shop", "password": "pw"}
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "shop-db", "namespace": "web"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


@pytest.fixture
def api() -> FakeApi:
    fake = FakeApi()
    fake.put(database_secret())
    return fake


@pytest.fixture
def context(api: FakeApi) -> OperatorContext:
    return OperatorContext.create(OperatorSettings(), api)


@pytest.fixture
def warnings(api: FakeApi) -> list[tuple[str, str]]:
    """(reason, message) of the Warning events the handlers post, in order."""
    return api.events


def change(context: OperatorContext, api: FakeApi, body: dict[str, Any]) -> dict[str, Any]:
    """Run the create/update handler on `body` as stored; return the stored object after."""
    if api.get(API_VERSION, KIND, "web", "shop") is None:
        api.put(body)
    handlers.on_change(body=kopf.Body(copy.deepcopy(body)), logger=LOGGER, memo=context)
    live = api.get(API_VERSION, KIND, "web", "shop")
    assert live is not None
    return live


def ready(live: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in live["status"]["conditions"] if c["type"] == "Ready")


def test_create_applies_every_child_scales_to_the_minimum_and_reports(context, api, warnings):
    live = change(context, api, SHOP)
    assert api.written("apply") == CHILDREN
    assert api.written("scale") == [("scale", "Deployment", "shop")]
    deployment = api.get("apps/v1", "Deployment", "web", "shop")
    assert deployment["spec"]["replicas"] == 2  # replicas.min, outside the applied config
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "shop-uid"
    assert api.written("patch_status") == [("patch_status", KIND, "shop")]
    assert ready(live)["status"] == "False" and ready(live)["reason"] == "RollingOut"
    assert live["status"]["observedGeneration"] == 1
    assert live["status"]["database"]["poolSizePerPod"] == (100 - 3) // (6 + 1) - 1
    assert warnings == []
    assert ("web", "shop") in context.managed
    assert INITIAL_SCALE_FIELD_MANAGER != "djangoscale"


def test_an_unchanged_object_writes_nothing(context, api, warnings):
    live = change(context, api, SHOP)
    before = list(api.writes)
    change(context, api, live)  # the resync: same spec, the status it already shows
    assert api.writes == before


def test_an_update_reapplies_only_what_changed(context, api, warnings):
    live = change(context, api, SHOP)
    updated = copy.deepcopy(live)
    updated["spec"]["server"] = {"type": "gunicorn-gthread", "threads": 8}
    updated["metadata"]["generation"] = 2
    api.put(updated)
    before = len(api.writes)
    live = change(context, api, updated)
    new = api.writes[before:]
    # The database Secret's pool sizing and the Deployment's env change; nothing else.
    assert [w for w in new if w[0] == "apply"] == [
        ("apply", "Secret", "shop-database"), ("apply", "Deployment", "shop")]
    assert ("scale", "Deployment", "shop") not in new  # the HPA owns replicas by now
    env = {e["name"]: e.get("value") for e in api.get("apps/v1", "Deployment", "web", "shop")
           ["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["DJANGOSCALE_SERVER"], env["DJANGOSCALE_THREADS"]) == ("gunicorn-gthread", "8")
    assert live["status"]["observedGeneration"] == 2


def test_an_invalid_spec_applies_nothing_and_warns_once(context, api, warnings):
    body = copy.deepcopy(SHOP)
    body["spec"]["port"] = 0
    live = change(context, api, body)
    assert api.written("apply") == []
    assert ready(live)["reason"] == "InvalidSpec"
    assert "spec.port: must be >= 1" in ready(live)["message"]
    assert warnings == [("InvalidSpec", ready(live)["message"])]
    writes = list(api.writes)
    change(context, api, live)  # the next resync: same failure
    assert len(warnings) == 1
    assert api.writes == writes


def test_a_missing_secret_is_a_condition_naming_the_field(context, api, warnings):
    api.delete("v1", "Secret", "web", "shop-db")
    live = change(context, api, SHOP)
    assert api.written("apply") == []
    assert ready(live)["reason"] == "DatabaseSecretNotFound"
    assert ready(live)["message"].startswith("spec.database.secretName: Secret shop-db not found")
    assert [reason for reason, _ in warnings] == ["DatabaseSecretNotFound"]


def test_children_the_spec_no_longer_asks_for_are_pruned(context, api, warnings):
    body = copy.deepcopy(SHOP)
    body["spec"]["workers"] = [{"name": "mail", "app": "shop.celery", "queues": ["mail"]}]
    body["spec"]["broker"] = {"type": "redis", "secretName": "broker"}
    live = change(context, api, body)
    assert api.get("apps/v1", "Deployment", "web", "shop-worker-mail") is not None
    smaller = copy.deepcopy(live)
    del smaller["spec"]["workers"], smaller["spec"]["broker"]
    smaller["spec"]["autoscaling"] = {"enabled": False}
    smaller["metadata"]["generation"] = 2  # as the API server does on a spec change
    api.put(smaller)
    change(context, api, smaller)
    assert sorted(api.written("delete")) == [
        ("delete", "Deployment", "shop-worker-mail"),
        ("delete", "HorizontalPodAutoscaler", "shop"),
        ("delete", "HorizontalPodAutoscaler", "shop-worker-mail"),
        ("delete", "PodDisruptionBudget", "shop-worker-mail"),
    ]
    assert api.get("apps/v1", "Deployment", "web", "shop") is not None


def test_a_resync_of_an_unchanged_object_lists_nothing_to_prune(context, api, warnings):
    """Only a new spec (or a new operator process) can make a child obsolete."""
    listed: list[str] = []
    list_of = api.list

    def counting_list(api_version, kind, namespace, label_selector=None):  # type: ignore[no-untyped-def]
        # Pods are listed for the kubelet's reason while a Deployment has not rolled out (the
        # fake's never does): that is status, not pruning.
        if kind != "Pod":
            listed.append(kind)
        return list_of(api_version, kind, namespace, label_selector)

    api.list = counting_list  # type: ignore[method-assign]
    live = change(context, api, SHOP)
    assert "Deployment" in listed  # the first reconcile prunes
    listed.clear()
    handlers._reconcile_live(context, ("web", "shop"))  # the resync
    assert listed == []
    no_autoscaling = copy.deepcopy(live)
    no_autoscaling["spec"]["autoscaling"] = {"enabled": False}
    no_autoscaling["metadata"]["generation"] = 2
    api.put(no_autoscaling)
    change(context, api, no_autoscaling)
    # A new generation prunes: the HPA the spec no longer asks for.
    assert "HorizontalPodAutoscaler" in listed
    assert ("delete", "HorizontalPodAutoscaler", "shop") in api.written("delete")
    handlers.on_delete(namespace="web", name="shop", memo=context)
    assert ("web", "shop") not in context.pruned


def test_an_api_error_is_retried_and_a_terminating_namespace_is_not(context, api, warnings):
    api.put(SHOP)
    api.failure = ApiError(500, "InternalError", "etcd timeout")
    with pytest.raises(kopf.TemporaryError):
        handlers.on_change(body=kopf.Body(SHOP), logger=LOGGER, memo=context)
    api.failure = ApiError(403, "Forbidden", '{"reason": "NamespaceTerminating"}')
    handlers.on_change(body=kopf.Body(SHOP), logger=LOGGER, memo=context)  # no raise


def child_event(context: OperatorContext, api: FakeApi, generation: int) -> None:
    deployment = api.get("apps/v1", "Deployment", "web", "shop")
    deployment["metadata"]["generation"] = generation
    handlers.on_child_event(body=kopf.Body(deployment), event={"type": "MODIFIED"},
                            namespace="web", logger=LOGGER, memo=context)


def test_a_hand_edit_of_a_child_is_put_back_and_status_follows_the_children(
        context, api, warnings):
    change(context, api, SHOP)
    child_event(context, api, generation=1)  # first sight: remembered, status refreshed
    deployment = api.get("apps/v1", "Deployment", "web", "shop")
    deployment["spec"]["template"]["spec"]["containers"][0]["args"] = ["sleep", "infinity"]
    api.put(deployment)
    child_event(context, api, generation=2)  # a spec edit: reconciled, our args are back
    args = api.get("apps/v1", "Deployment", "web", "shop")["spec"]["template"]["spec"][
        "containers"][0]["args"]
    assert args == ["djangoscale", "serve", "shop.wsgi:application"]
    # Status progress of a child (same generation) rewrites the status only if it changed.
    deployment = api.get("apps/v1", "Deployment", "web", "shop")
    deployment["status"] = {"observedGeneration": deployment["metadata"]["generation"],
                            "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
                            "readyReplicas": 2}
    api.put(deployment)
    child_event(context, api, generation=deployment["metadata"]["generation"])
    live = api.get(API_VERSION, KIND, "web", "shop")
    assert ready(live)["status"] == "True"
    writes = list(api.writes)
    child_event(context, api, generation=deployment["metadata"]["generation"])
    assert api.writes == writes


def test_handlers_need_the_context_djangoscale_run_builds():
    from djangoscale.context import context_of

    with pytest.raises(RuntimeError, match="djangoscale run"):
        context_of(kopf.Memo())


def test_the_entry_module_registers_every_handler_module():
    import djangoscale.entry  # noqa: F401

    registry = kopf.get_default_registry()
    names = {handler.fn.__module__ for handler in registry._activities.get_all_handlers()}
    names |= {handler.fn.__module__ for handler in registry._changing.get_all_handlers()}
    assert {"djangoscale.controller.handlers", "djangoscale.autoscaling.handlers",
            "djangoscale.celery.handlers"} <= names


def test_no_handler_brings_kopf_finalizer():
    """Daemons and timers always bring kopf's finalizer, and so does a delete handler that is
    not optional: with any of them, a stopped operator would block every deletion."""
    import djangoscale.entry  # noqa: F401

    registry = kopf.get_default_registry()
    assert registry._spawning.get_all_handlers() == []
    changing = registry._changing.get_all_handlers()
    assert changing
    assert [handler.id for handler in changing if handler.requires_finalizer] == []
    # The loops read every DjangoService from this index instead.
    assert "djangoscale.background" in {
        handler.fn.__module__ for handler in registry._indexing.get_all_handlers()}


def web_pod(name: str, waiting: dict[str, str] | None, container: str = "app",
            last_exit: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pod of shop's Deployment; its `container` waits for `waiting` (None: running)."""
    state = {"waiting": waiting} if waiting else {"running": {"startedAt": "2026-11-30T09:00:00Z"}}
    status = {"name": container, "state": state, "ready": False, "restartCount": 0,
              **({"lastState": {"terminated": last_exit}} if last_exit else {})}
    other = {"name": "pgbouncer" if container == "app" else "app",
             "state": {"running": {}}, "ready": True, "restartCount": 0}
    init, main = ([status], [other]) if container == "pgbouncer" else ([other], [status])
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "web", "labels": {
                "app.kubernetes.io/name": "django", "app.kubernetes.io/instance": "shop",
                "app.kubernetes.io/component": "web"}},
            "status": {"phase": "Pending", "initContainerStatuses": init,
                       "containerStatuses": main}}


PULL_MESSAGE = 'Back-off pulling image "djangoscale/does-not-exist:dev"'


@pytest.mark.parametrize("container", ["app", "pgbouncer"])
def test_an_image_the_kubelet_cannot_pull_is_the_reason_with_one_warning(
        context, api, warnings, container):
    change(context, api, SHOP)
    api.put(web_pod("shop-a", {"reason": "ImagePullBackOff", "message": PULL_MESSAGE},
                    container))
    live = change(context, api, api.get(API_VERSION, KIND, "web", "shop"))
    conditions = {c["type"]: c for c in live["status"]["conditions"]}
    for type_ in ("Ready", "Degraded", "Stalled"):
        assert conditions[type_]["reason"] == "ImagePullBackOff", type_
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Degraded"]["status"] == "True"
    assert conditions["Degraded"]["message"] == (
        f"pod shop-a, container {container}: ImagePullBackOff: {PULL_MESSAGE}")
    assert warnings == [("ImagePullBackOff", conditions["Degraded"]["message"])]
    # The kubelet alternates ErrImagePull and ImagePullBackOff: the same failure, no new event.
    api.put(web_pod("shop-a", {"reason": "ErrImagePull", "message": "not found"}, container))
    live = change(context, api, live)
    assert ready(live)["reason"] == "ErrImagePull"
    assert len(warnings) == 1


def test_a_crashing_app_says_how_it_exited_and_a_fixed_one_clears_it(context, api, warnings):
    change(context, api, SHOP)
    api.put(web_pod("shop-b", {"reason": "CrashLoopBackOff", "message": "back-off 20s"},
                    last_exit={"exitCode": 3, "reason": "Error"}))
    api.put(web_pod("shop-a", None))  # a healthy pod beside it: the failing one is named
    live = change(context, api, api.get(API_VERSION, KIND, "web", "shop"))
    assert ready(live)["reason"] == "CrashLoopBackOff"
    assert ready(live)["message"] == ("pod shop-b, container app: CrashLoopBackOff: "
                                      "back-off 20s (last exit: code 3, Error)")
    assert [reason for reason, _ in warnings] == ["CrashLoopBackOff"]
    api.delete("v1", "Pod", "web", "shop-b")
    live = change(context, api, live)
    degraded = next(c for c in live["status"]["conditions"] if c["type"] == "Degraded")
    assert (ready(live)["reason"], degraded["status"]) == ("RollingOut", "False")


def test_pods_still_starting_are_progress_not_a_failure(context, api, warnings):
    change(context, api, SHOP)
    api.put(web_pod("shop-a", {"reason": "ContainerCreating"}))
    live = change(context, api, api.get(API_VERSION, KIND, "web", "shop"))
    assert ready(live)["reason"] == "RollingOut"
    assert warnings == []


def test_a_rolled_out_deployment_lists_no_pods(context, api, warnings):
    """The pods are read only while the Deployment has not rolled out."""
    live = change(context, api, SHOP)
    deployment = api.get("apps/v1", "Deployment", "web", "shop")
    deployment["status"] = {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                            "availableReplicas": 2, "readyReplicas": 2}
    api.put(deployment)
    listed: list[str] = []
    original = api.list

    def counting_list(api_version, kind, namespace, label_selector=None):
        listed.append(kind)
        return original(api_version, kind, namespace, label_selector)

    api.list = counting_list
    api.put(web_pod("shop-a", {"reason": "CrashLoopBackOff", "message": "old pod"}))
    live = change(context, api, live)
    assert "Pod" not in listed
    assert ready(live)["reason"] == "Available"


def test_a_childs_status_refresh_waits_for_a_running_reconcile_and_reads_after_it(
        context, api, warnings):
    """Else a status computed before a reconcile's write lands after it and undoes it."""
    import threading

    change(context, api, SHOP)
    child_event(context, api, generation=1)
    deployment = api.get("apps/v1", "Deployment", "web", "shop")
    deployment["status"] = {"observedGeneration": deployment["metadata"]["generation"],
                            "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
                            "readyReplicas": 2}
    api.put(deployment)
    writes = len(api.written("patch_status"))
    lock = context.reconcile_lock("web", "shop")
    with lock:  # a reconcile runs
        refresh = threading.Thread(target=child_event, args=(context, api, 1))
        refresh.start()
        refresh.join(timeout=0.5)
        assert refresh.is_alive() and len(api.written("patch_status")) == writes
    refresh.join(timeout=5)
    assert not refresh.is_alive() and len(api.written("patch_status")) == writes + 1
