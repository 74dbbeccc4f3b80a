"""Pruning: only children this DjangoService controls and its spec no longer names."""

from __future__ import annotations

from djangoscale import spec
from djangoscale.controller import kube, reconcile

BODY = {
    "apiVersion": "djangoscale.io/v1alpha1",
    "kind": "DjangoService",
    "metadata": {"name": "shop", "namespace": "web", "uid": "owner-uid"},
    "spec": {"image": "shop:1", "wsgiApp": "shop.wsgi:application"},
}


def test_prune_deletes_only_what_the_spec_no_longer_asks_for(monkeypatch):
    live = {
        "HorizontalPodAutoscaler": ["shop", "shop-worker-old"],
        "PodDisruptionBudget": ["shop", "shop-worker-old"],
        "Deployment": ["shop", "shop-worker-old"],
    }
    deleted: list[tuple[str, str]] = []
    monkeypatch.setattr(
        kube, "list_controlled",
        lambda api, kind, ns, selector, uid: [{"metadata": {"name": n}} for n in live[kind]],
    )
    monkeypatch.setattr(
        kube, "delete_controlled",
        lambda api, kind, ns, name, uid: deleted.append((kind, name)) or True,
    )
    applied = ["Deployment/shop", "PodDisruptionBudget/shop", "Service/shop"]
    reconcile.prune(spec.parse(BODY), applied)
    assert sorted(deleted) == [
        ("Deployment", "shop-worker-old"),
        ("HorizontalPodAutoscaler", "shop"),  # autoscaling no longer asked for
        ("HorizontalPodAutoscaler", "shop-worker-old"),
        ("PodDisruptionBudget", "shop-worker-old"),
    ]


def test_an_object_controlled_by_someone_else_is_never_ours():
    theirs = {"metadata": {"ownerReferences": [{"uid": "other", "controller": True}]}}
    ours = {"metadata": {"ownerReferences": [{"uid": "owner-uid", "controller": True}]}}
    assert not kube.controlled_by(theirs, "owner-uid")
    assert kube.controlled_by(ours, "owner-uid")
    assert not kube.controlled_by({"metadata": {}}, "owner-uid")


def test_a_namespace_being_deleted_is_not_an_error_to_retry():
    from kubernetes.client.exceptions import ApiException

    from djangoscale.controller.handlers import namespace_terminating

    terminating = ApiException(status=403, reason="Forbidden")
    terminating.body = '{"details": {"causes": [{"reason": "NamespaceTerminating"}]}}'
    rbac = ApiException(status=403, reason="Forbidden")
    rbac.body = '{"message": "deployments.apps is forbidden: User \\"x\\" cannot patch"}'
    assert namespace_terminating(terminating)
    assert not namespace_terminating(rbac)
