"""The ways in: an Ingress and a Gateway API HTTPRoute, both to the web Service's HTTP port.

Optional children like the others: written, owned and pruned by the operator. Every path goes
to the app (Django's URLconf routes it), so there is one rule: prefix `/`.
"""

from __future__ import annotations

from typing import Any, Final

from djangoscale.builders.labels import child_metadata
from djangoscale.builders.service import SERVICE_PORT
from djangoscale.spec import DjangoService

HTTP_ROUTE_API_VERSION: Final = "gateway.networking.k8s.io/v1"


def build_ingress(ds: DjangoService) -> dict[str, Any]:
    assert ds.ingress is not None
    backend = {"service": {"name": ds.name, "port": {"number": SERVICE_PORT}}}
    paths = [{"path": "/", "pathType": "Prefix", "backend": backend}]
    spec: dict[str, Any] = {}
    if ds.ingress.class_name:
        spec["ingressClassName"] = ds.ingress.class_name
    if ds.ingress.tls_secret_name:
        spec["tls"] = [{"hosts": list(ds.ingress.hosts),
                        "secretName": ds.ingress.tls_secret_name}]
    spec["rules"] = [{"host": host, "http": {"paths": paths}} for host in ds.ingress.hosts]
    metadata = child_metadata(ds, ds.name)
    if ds.ingress.annotations:
        metadata["annotations"] = dict(ds.ingress.annotations)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata,
            "spec": spec}


def build_http_route(ds: DjangoService) -> dict[str, Any]:
    assert ds.gateway is not None
    spec: dict[str, Any] = {"parentRefs": [dict(ref) for ref in ds.gateway.parent_refs]}
    if ds.gateway.hostnames:
        spec["hostnames"] = list(ds.gateway.hostnames)
    spec["rules"] = [{
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "backendRefs": [{"name": ds.name, "port": SERVICE_PORT}],
    }]
    return {"apiVersion": HTTP_ROUTE_API_VERSION, "kind": "HTTPRoute",
            "metadata": child_metadata(ds, ds.name), "spec": spec}
