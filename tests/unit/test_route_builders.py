# ruff: noqa: F811 (the fixtures imported from test_reconcile are parameters here)
"""The Ingress and HTTPRoute builders, and the reconciler writing, pruning and, without the
Gateway API CRDs, refusing them with a condition rather than a retry loop."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from djangoscale import spec
from djangoscale.builders import build_children
from djangoscale.builders.routes import build_http_route, build_ingress
from djangoscale.context import OperatorContext
from tests.fixtures.fake_api import FakeApi
from tests.unit import test_reconcile
from tests.unit.test_migration_gate import run_change
from tests.unit.test_reconcile import api, context, warnings  # noqa: F401 (its fixtures)

INGRESS = {"className": "nginx", "hosts": ["shop.example.com", "*.shop.example.com"],
           "tls": {"secretName": "shop-tls"},
           "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "10m"}}
GATEWAY = {"parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
           "hostnames": ["shop.example.com"]}


def parsed(**fields: Any) -> spec.DjangoService:
    body = copy.deepcopy(test_reconcile.SHOP)
    body["spec"].update(fields)
    return spec.parse(body)


def test_the_ingress_routes_every_host_to_the_service():
    ingress = build_ingress(parsed(ingress=INGRESS))
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["metadata"]["annotations"] == INGRESS["annotations"]
    assert ingress["spec"]["tls"] == [{"hosts": INGRESS["hosts"], "secretName": "shop-tls"}]
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == INGRESS["hosts"]
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["backend"] == {"service": {"name": "shop", "port": {"number": 80}}}
    assert ingress["metadata"]["ownerReferences"][0]["uid"] == "shop-uid"


def test_a_minimal_ingress_leaves_class_and_tls_to_the_cluster():
    ingress = build_ingress(parsed(ingress={"hosts": ["shop.example.com"]}))
    assert "ingressClassName" not in ingress["spec"] and "tls" not in ingress["spec"]
    assert "annotations" not in ingress["metadata"]


def test_the_http_route_attaches_to_its_gateways():
    route = build_http_route(parsed(gateway=GATEWAY))
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == GATEWAY["parentRefs"]
    assert route["spec"]["hostnames"] == ["shop.example.com"]
    (rule,) = route["spec"]["rules"]
    assert rule["backendRefs"] == [{"name": "shop", "port": 80}]
    assert "hostnames" not in build_http_route(parsed(gateway={"parentRefs": [{"name": "g"}]}))[
        "spec"]


def test_render_shows_them_last():
    kinds = [child["kind"] for child in build_children(parsed(ingress=INGRESS, gateway=GATEWAY))]
    assert kinds[-2:] == ["Ingress", "HTTPRoute"]
    assert "Ingress" not in [child["kind"] for child in build_children(parsed())]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"ingress": {"hosts": ["Shop.Example.com"]}}, "spec.ingress.hosts[0]: must match"),
        ({"ingress": {"hosts": []}}, "spec.ingress.hosts: must have at least 1"),
        ({"gateway": {"parentRefs": []}}, "spec.gateway.parentRefs: must have at least 1"),
        ({"gateway": {"parentRefs": [{"name": "g"}], "hostnames": ["shop..example.com"]}},
         "spec.gateway.hostnames[0]: must match"),
    ],
)
def test_bad_routes_are_named(fields, expected):
    body = copy.deepcopy(test_reconcile.SHOP)
    body["spec"].update(fields)
    with pytest.raises(spec.SpecError) as raised:
        spec.parse(body)
    assert any(p.startswith(expected) for p in raised.value.problems), raised.value.problems


def reconcile(context: OperatorContext, api: FakeApi, **spec_fields: Any) -> dict[str, Any]:
    """test_reconcile's spec with `spec_fields` (and nothing else of the last one), reconciled."""
    return run_change(context, api, {**test_reconcile.SHOP["spec"], **spec_fields})


def test_routes_are_written_owned_and_pruned(context, api, warnings):
    reconcile(context, api, ingress=INGRESS, gateway=GATEWAY)
    assert api.get("networking.k8s.io/v1", "Ingress", "web", "shop") is not None
    route = api.get("gateway.networking.k8s.io/v1", "HTTPRoute", "web", "shop")
    assert route is not None and route["metadata"]["ownerReferences"][0]["controller"]
    reconcile(context, api, gateway=GATEWAY)
    assert api.get("networking.k8s.io/v1", "Ingress", "web", "shop") is None
    reconcile(context, api)
    assert api.get("gateway.networking.k8s.io/v1", "HTTPRoute", "web", "shop") is None
    assert warnings == []


def test_without_the_gateway_api_ready_is_false_once_not_a_retry_loop(context, api, warnings):
    api.unserved.add("HTTPRoute")
    live = reconcile(context, api, gateway=GATEWAY)
    ready = next(c for c in live["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "GatewayAPINotInstalled")
    assert "spec.gateway: this cluster does not serve gateway.networking.k8s.io/v1 HTTPRoute" in (
        ready["message"])
    # Everything else is in place; the handler returned (no exception for kopf to retry).
    assert api.get("apps/v1", "Deployment", "web", "shop") is not None
    assert [reason for reason, _ in warnings] == ["GatewayAPINotInstalled"]
    reconcile(context, api, gateway=GATEWAY)
    assert len(warnings) == 1


def test_a_cluster_without_the_gateway_api_is_fine_without_spec_gateway(context, api, warnings):
    api.unserved.add("HTTPRoute")
    live = reconcile(context, api)
    assert all(c["reason"] != "GatewayAPINotInstalled" for c in live["status"]["conditions"])
    assert api.get("apps/v1", "Deployment", "web", "shop") is not None


def test_a_childs_event_does_not_clear_the_missing_gateway_api(context, api, warnings):
    from djangoscale.controller.reconcile import refresh_status

    api.unserved.add("HTTPRoute")
    live = reconcile(context, api, gateway=GATEWAY)
    status = refresh_status(api, live)
    assert status is not None
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "GatewayAPINotInstalled"
