"""pooling.mode pooler: the pgbouncer Deployment, its Service, PDB and HPA, and the budget it
divides over its own pods."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from djangoscale import budget, spec
from djangoscale.builders import build_children
from djangoscale.builders.pgbouncer import DatabaseCredentials
from djangoscale.controller.status import database_status

GOLDEN_SPEC = Path(__file__).parent / "data" / "golden-specs" / "pooler.yaml"


def pooler_case() -> tuple[dict[str, Any], DatabaseCredentials]:
    case = yaml.safe_load(GOLDEN_SPEC.read_text())
    return case["djangoservice"], DatabaseCredentials(**case["credentials"])


def children_by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    _, credentials = pooler_case()
    children = build_children(spec.parse(body), credentials)
    return {f"{c['kind']}/{c['metadata']['name']}": c for c in children}


def ini_of(children: dict[str, dict[str, Any]]) -> dict[str, str]:
    text = base64.b64decode(children["Secret/shop-database"]["data"]["pgbouncer.ini"]).decode()
    return {key.strip(): value.strip() for key, _, value in
            (line.partition("=") for line in text.splitlines() if "=" in line)}


def test_the_budget_is_divided_over_the_pooler_pods_not_the_app_pods():
    body, _ = pooler_case()
    ds = spec.parse(body)
    sizing = budget.size_pool(ds)
    # 397 connections over 6 pooler pods + 1 surge pod, one kept for each terminating one.
    assert (sizing.max_pods, sizing.pool_size_per_pod) == (7, 397 // 7 - 1)
    assert budget.peak_server_connections(sizing.pool_size_per_pod, 7, 7) <= 397
    status = database_status(ds)
    assert status is not None
    assert status["poolingMode"] == "pooler" and status["connectionsAtMaxReplicas"] == 55 * 7
    # The same 600 web pods with a sidecar each are refused, naming the mode that fits.
    sidecar = dict(body, spec={**body["spec"], "pooling": {}})
    with pytest.raises(spec.SpecError) as refused:
        spec.parse(sidecar)
    assert any("budget 397 cannot give 642 pods a connection each" in p
               and p.endswith("use pooling.mode: pooler)") for p in refused.value.problems)


def test_the_pooler_children_and_the_app_pods_that_connect_to_them():
    body, _ = pooler_case()
    children = children_by_name(body)
    ini = ini_of(children)
    assert ini["max_db_connections"] == ini["default_pool_size"] == "55"
    assert ini["max_client_conn"] == "30000"
    deployment = children["Deployment/shop-pooler"]
    assert "replicas" not in deployment["spec"]  # the pooler's HPA owns them
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"]["cpu"]  # what CPU utilization is measured against
    terms = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0]["podAffinityTerm"]["labelSelector"]["matchLabels"][
        "app.kubernetes.io/component"] == "pooler"
    # The pooler runs no app code: no migration holds it.
    assert "djangoscale.io/migration" not in str(deployment["metadata"].get("annotations"))
    hpa = children["HorizontalPodAutoscaler/shop-pooler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (4, 6)
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert children["PodDisruptionBudget/shop-pooler"]["spec"]["maxUnavailable"] == 1
    service = children["Service/shop-pooler"]["spec"]
    assert service["ports"][0]["port"] == 6432
    for name in ("Deployment/shop", "Deployment/shop-worker-default"):
        app_pod = children[name]["spec"]["template"]["spec"]
        assert "initContainers" not in app_pod  # no sidecar
        env = {e["name"]: e.get("value") for e in app_pod["containers"][0]["env"]}
        assert (env["DATABASE_HOST"], env["DATABASE_PORT"]) == ("shop-pooler", "6432")
        assert "DJANGOSCALE_PGBOUNCER" not in env  # its preStop hook leaves the pooler be
        # The web launcher exports the pooler's SHOW POOLS for the database ceiling.
        assert env.get("DJANGOSCALE_POOLER_STATS") == (
            "shop-pooler:6432" if name == "Deployment/shop" else None)
    url = base64.b64decode(children["Secret/shop-database"]["data"]["DATABASE_URL"]).decode()
    assert "@shop-pooler:6432/shop" in url
    # Order: the Secret, then the pooler, before any pod that connects to it.
    names = list(children)
    assert names.index("Deployment/shop-pooler") < names.index("Deployment/shop")


def test_a_terminating_pooler_pod_reloads_with_the_draining_pool():
    body, _ = pooler_case()
    children = children_by_name(body)
    pod = children["Deployment/shop-pooler"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    text = base64.b64decode(children["Secret/shop-database"]["data"]["pgbouncer.ini"]).decode()
    assert text.rstrip().endswith("%include /tmp/pgbouncer-drain.ini")
    assert ": > /tmp/pgbouncer-drain.ini && exec pgbouncer" in container["command"][-1]
    hook = container["lifecycle"]["preStop"]["exec"]["command"][-1]
    assert "default_pool_size = 1\\n" in hook and "max_db_connections = 1\\n" in hook
    assert "kill -HUP 1" in hook


def test_switching_back_to_the_sidecar_leaves_no_pooler_child():
    body, _ = pooler_case()
    small = {**body["spec"], "replicas": {"min": 2, "max": 20}, "pooling": {}}
    children = children_by_name(dict(body, spec=small))
    assert not [name for name in children if "pooler" in name]
    assert "initContainers" in children["Deployment/shop"]["spec"]["template"]["spec"]
