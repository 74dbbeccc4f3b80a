"""spec.ingress and spec.gateway on the local control plane: an Ingress and an HTTPRoute
written, owned and pruned by the operator (with the chart's RBAC), and a clear Ready=False
while the cluster lacks the Gateway API CRDs (from their Go module, tests/tools/gateway-api)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from djangoscale.contract import API_VERSION
from tests.e2e.helpers import condition, djangoservice, ready, secret
from tests.e2e.test_operator import operator  # noqa: F401 (its module-scoped fixture)
from tests.fixtures.polling import wait_for

FETCH = Path(__file__).resolve().parents[1] / "tools" / "gateway-api" / "fetch.sh"
HTTP_ROUTES_CRD = "httproutes.gateway.networking.k8s.io"
CRD = "apiextensions.k8s.io/v1"
INGRESS = {"className": "nginx", "hosts": ["shop.example.com"], "tls": {"secretName": "shop-tls"}}
GATEWAY = {"parentRefs": [{"name": "public"}], "hostnames": ["shop.example.com"]}


def http_routes_crd() -> dict[str, Any]:
    directory = subprocess.run([str(FETCH)], check=True, capture_output=True, text=True)
    path = Path(directory.stdout.strip()) / "gateway.networking.k8s.io_httproutes.yaml"
    found: dict[str, Any] = yaml.safe_load(path.read_text())
    return found


def established(kube: Any) -> bool:
    live = kube.get(CRD, "CustomResourceDefinition", None, HTTP_ROUTES_CRD) or {}
    return any(c["type"] == "Established" and c["status"] == "True"
               for c in (live.get("status") or {}).get("conditions") or [])


def test_ingress_and_http_route_are_owned_and_pruned(kube, operator, namespace):  # noqa: F811
    crd = http_routes_crd()
    if kube.get(CRD, "CustomResourceDefinition", None, HTTP_ROUTES_CRD) is not None:
        kube.delete(CRD, "CustomResourceDefinition", None, HTTP_ROUTES_CRD)
        wait_for("the HTTPRoute CRD to go", lambda: kube.get(
            CRD, "CustomResourceDefinition", None, HTTP_ROUTES_CRD) is None)
    kube.apply(secret(namespace))
    kube.apply(djangoservice(namespace, ingress=INGRESS, gateway=GATEWAY))

    # Without the CRD: a reason that says what to do, and everything else in place.
    refused = wait_for("GatewayAPINotInstalled", lambda: (
        lambda c: c if c.get("reason") == "GatewayAPINotInstalled" else None)(
            condition(kube, namespace)))
    assert refused["status"] == "False"
    assert "install the Gateway API CRDs" in refused["message"]
    wait_for("the Ingress", lambda: kube.get("networking.k8s.io/v1", "Ingress", namespace, "shop"))

    kube.apply(crd)
    wait_for("the HTTPRoute CRD", lambda: established(kube))
    wait_for("Ready once the CRD is there (the resync)", lambda: ready(kube, namespace))
    uid = kube.get(API_VERSION, "DjangoService", namespace, "shop")["metadata"]["uid"]
    for api_version, kind in (("networking.k8s.io/v1", "Ingress"),
                              ("gateway.networking.k8s.io/v1", "HTTPRoute")):
        child = kube.get(api_version, kind, namespace, "shop")
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid, kind
    route = kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", namespace, "shop")
    assert route["spec"]["rules"][0]["backendRefs"][0]["name"] == "shop"

    kube.apply(djangoservice(namespace))
    wait_for("both pruned", lambda: kube.get("networking.k8s.io/v1", "Ingress", namespace, "shop")
             is None and kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", namespace,
                                  "shop") is None)
