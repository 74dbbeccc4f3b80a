"""The one table of kinds to paths."""

from __future__ import annotations

import pytest

from djangoscale.contract import API_VERSION, KIND
from djangoscale.k8s.kinds import KINDS, UnknownKind, collection_path, lookup, object_path


def test_paths_of_core_grouped_namespaced_and_cluster_scoped_kinds():
    assert object_path("v1", "Secret", "web", "db") == "/api/v1/namespaces/web/secrets/db"
    assert (object_path("apps/v1", "Deployment", "web", "shop")
            == "/apis/apps/v1/namespaces/web/deployments/shop")
    assert object_path("v1", "Namespace", None, "web") == "/api/v1/namespaces/web"
    assert (collection_path(API_VERSION, KIND, "web")
            == "/apis/djangoscale.io/v1alpha1/namespaces/web/djangoservices")
    assert object_path(None, "ClusterRole", None, "x") == (
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/x")


def test_a_kind_is_in_the_table_once_and_an_unknown_one_is_named():
    assert len({kind.kind for kind in KINDS}) == len(KINDS)
    with pytest.raises(UnknownKind, match="v2 Deployment"):
        lookup("v2", "Deployment")
    with pytest.raises(UnknownKind, match="CronJob"):
        lookup(None, "CronJob")
