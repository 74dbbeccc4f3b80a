"""Register the operator's metrics API with the local control plane (`djangoscale dev`, e2e).

On the local cluster the operator runs on the host, not in a pod, so the APIService points at
it through an ExternalName Service to 127.0.0.1 (see `djangoscale_dev.cluster.apiservice` for
why the usual Service + EndpointSlice cannot work here).
The serving cert is signed by the cluster CA for `<service>.<namespace>.svc`, the name the
aggregator verifies, and the APIService's caBundle is that CA: TLS is verified both ways.

A real install does the same with a ClusterIP Service in front of the operator's pod (the
chart's `metrics-api.yaml`).
"""

from __future__ import annotations

from pathlib import Path

from djangoscale.autoscaling.apiserver import GROUP, VERSION
from djangoscale_dev.cluster.api import ApiClient
from djangoscale_dev.cluster.apiservice import (
    register_local_apiservice,
    service_name_for,
    unregister_local_apiservice,
)
from djangoscale_dev.cluster.pki import PkiPaths, issue_serving_cert

CERT_NAME = "djangoscale-metrics-api"


def register_metrics_apiservice(client: ApiClient, cluster_dir: Path, port: int,
                                namespace: str = "default") -> tuple[Path, Path]:
    """Issue the serving cert, register the APIService for `https://127.0.0.1:<port>`, and
    return (cert file, key file) for `djangoscale run --metrics-api-cert-file/--key-file`."""
    pki = PkiPaths(Path(cluster_dir) / "pki")
    cert, key = issue_serving_cert(
        pki, CERT_NAME, (f"{service_name_for(GROUP)}.{namespace}.svc",), ("127.0.0.1",))
    register_local_apiservice(client, GROUP, VERSION, port, namespace=namespace,
                              ca_bundle=pki.ca.read_bytes())
    return cert, key


def unregister_metrics_apiservice(client: ApiClient, namespace: str = "default") -> None:
    unregister_local_apiservice(client, GROUP, VERSION, namespace)
