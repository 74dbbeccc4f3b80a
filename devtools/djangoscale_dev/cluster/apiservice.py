"""Route an aggregated API (say `custom.metrics.k8s.io`) to a process on this machine.

The obvious ways fail here: endpoint addresses in the loopback range are refused by
EndpointSlice and Endpoints validation, so `--enable-aggregator-routing=true` with a
selectorless Service has nothing valid to point at; a ClusterIP is not routed on this machine.
What works is the aggregator's default *cluster* routing with an `ExternalName` Service: the
aggregator resolves such a Service to `https://<externalName>:<APIService port>`
(k8s.io/apiserver/pkg/util/proxy.ResolveCluster), `externalName` accepts `127.0.0.1` (it only
has to be a DNS-1123 subdomain), and the availability check only looks for endpoints of
ClusterIP Services. The backend's cert is then verified against `<service>.<namespace>.svc`
with the APIService's `caBundle` (see `pki.issue_serving_cert`), or not at all when
`insecure_skip_tls_verify` is set.
"""

from __future__ import annotations

import base64
from typing import Any

from djangoscale_dev.cluster.api import ApiClient


def service_name_for(group: str) -> str:
    """custom.metrics.k8s.io -> custom-metrics-k8s-io-local (a valid Service name)."""
    return (group.replace(".", "-") + "-local")[:63].strip("-")


def apiservice_manifests(
    group: str,
    version: str,
    port: int,
    *,
    host: str = "127.0.0.1",
    namespace: str = "default",
    ca_bundle: bytes | None = None,
    insecure_skip_tls_verify: bool = False,
    group_priority_minimum: int = 100,
    version_priority: int = 100,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ExternalName Service and the APIService that send `/apis/<group>/<version>` to
    `https://<host>:<port>`."""
    if (ca_bundle is None) == (not insecure_skip_tls_verify):
        raise ValueError("give exactly one of ca_bundle and insecure_skip_tls_verify=True")
    name = service_name_for(group)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": "ExternalName", "externalName": host},
    }
    spec: dict[str, Any] = {
        "group": group,
        "version": version,
        "service": {"name": name, "namespace": namespace, "port": port},
        "groupPriorityMinimum": group_priority_minimum,
        "versionPriority": version_priority,
    }
    if ca_bundle is not None:
        spec["caBundle"] = base64.b64encode(ca_bundle).decode()
    else:
        spec["insecureSkipTLSVerify"] = True
    apiservice = {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": f"{version}.{group}"},
        "spec": spec,
    }
    return service, apiservice


def register_local_apiservice(
    client: ApiClient,
    group: str,
    version: str,
    port: int,
    **options: Any,
) -> dict[str, Any]:
    """Create or update (server-side apply) the Service and APIService; return the latter.

    `options` are those of `apiservice_manifests` (host, namespace, ca_bundle,
    insecure_skip_tls_verify, priorities).
    """
    service, apiservice = apiservice_manifests(group, version, port, **options)
    namespace = service["metadata"]["namespace"]
    client.apply(f"/api/v1/namespaces/{namespace}/services/{service['metadata']['name']}", service)
    applied: dict[str, Any] = client.apply(
        f"/apis/apiregistration.k8s.io/v1/apiservices/{apiservice['metadata']['name']}",
        apiservice,
    )
    return applied


def unregister_local_apiservice(
    client: ApiClient, group: str, version: str, namespace: str = "default"
) -> None:
    client.delete(f"/apis/apiregistration.k8s.io/v1/apiservices/{version}.{group}")
    client.delete(f"/api/v1/namespaces/{namespace}/services/{service_name_for(group)}")
