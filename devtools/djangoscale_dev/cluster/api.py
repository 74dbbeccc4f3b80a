"""Path-based API calls for the dev tooling, over the operator's one API layer.

The local cluster, its tests and benches speak in API paths (`/api/v1/namespaces/...`), which
suits a tool that creates namespaces, APIServices and nodes of its own. The requests
themselves go through `djangoscale.k8s.KubernetesApi` (one transport, one error type, one
place that imports the kubernetes client), with the cluster's admin kubeconfig.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from djangoscale.k8s import ApiError, KubernetesApi
from djangoscale.k8s.api import APPLY_PATCH, JSON

__all__ = ["ApiClient", "ApiError"]

# The field manager of what the dev tooling applies (never the operator's).
FIELD_MANAGER = "djangoscale-cluster"


class ApiClient:
    """`get`, `create`, `apply`, `delete` and raw `request`s by path, as the cluster admin."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self._api = KubernetesApi(str(kubeconfig))

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = JSON
    ) -> Any:
        """The answer as JSON, or as text for the paths that answer text (`/readyz`)."""
        path, _, query = path.partition("?")
        raw = self._api.request_bytes(method, path, body, parse_qsl(query), content_type)
        text = raw.decode("utf-8", "replace")
        try:
            return self._api.decode(raw) if raw else None
        except ValueError:
            return text

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def create(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, body)

    def apply(self, path: str, body: dict[str, Any], manager: str = FIELD_MANAGER) -> Any:
        """Server-side apply of `body` at its own object path."""
        return self.request("PATCH", f"{path}?fieldManager={manager}&force=true", body,
                            content_type=APPLY_PATCH)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
