"""Pruning: only children this DjangoService controls and its spec no longer names."""

from __future__ import annotations

from djangoscale import spec
from djangoscale.controller import reconcile
from djangoscale.k8s import ApiError
from tests.fixtures.fake_api import FakeApi

BODY = {
    "apiVersion": "djangoscale.io/v1alpha1",
    "kind": "DjangoService",
    "metadata": {"name": "shop", "namespace": "web", "uid": "owner-uid"},
    "spec": {"image": "shop:1", "wsgiApp": "shop.wsgi:application"},
}
KINDS = {
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
    "Deployment": "apps/v1",
}


def child(kind: str, name: str, owner_uid: str = "owner-uid") -> dict:
    return {
        "apiVersion": KINDS[kind], "kind": kind,
        "metadata": {"name": name, "namespace": "web",
                     "labels": {"app.kubernetes.io/managed-by": "djangoscale",
                                "app.kubernetes.io/instance": "shop"},
                     "ownerReferences": [{"uid": owner_uid, "controller": True}]},
    }


def test_prune_deletes_only_what_the_spec_no_longer_asks_for():
    api = FakeApi()
    for kind in KINDS:
        for name in ("shop", "shop-worker-old"):
            api.put(child(kind, name))
    api.put(child("Deployment", "theirs", owner_uid="someone-else"))
    applied = ["Deployment/shop", "PodDisruptionBudget/shop", "Service/shop"]
    deleted = reconcile.prune(api, spec.parse(BODY), applied)
    assert sorted(deleted) == [
        "Deployment/shop-worker-old",
        "HorizontalPodAutoscaler/shop",  # autoscaling no longer asked for
        "HorizontalPodAutoscaler/shop-worker-old",
        "PodDisruptionBudget/shop-worker-old",
    ]
    assert api.get("apps/v1", "Deployment", "web", "theirs") is not None
    assert api.get("apps/v1", "Deployment", "web", "shop") is not None


def test_an_object_controlled_by_someone_else_is_never_ours():
    theirs = {"metadata": {"ownerReferences": [{"uid": "other", "controller": True}]}}
    ours = {"metadata": {"ownerReferences": [{"uid": "owner-uid", "controller": True}]}}
    assert not reconcile.controlled_by(theirs, "owner-uid")
    assert reconcile.controlled_by(ours, "owner-uid")
    assert not reconcile.controlled_by({"metadata": {}}, "owner-uid")


def test_a_namespace_being_deleted_is_not_an_error_to_retry():
    from djangoscale.controller.handlers import namespace_terminating

    terminating = ApiError(403, "Forbidden",
                           '{"details": {"causes": [{"reason": "NamespaceTerminating"}]}}')
    rbac = ApiError(403, "Forbidden",
                    '{"message": "deployments.apps is forbidden: User \\"x\\" cannot patch"}')
    assert namespace_terminating(terminating)
    assert not namespace_terminating(rbac)
