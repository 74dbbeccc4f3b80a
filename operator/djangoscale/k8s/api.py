"""The Kubernetes API as the operator, the chart tools and the tests use it.

`Api` is the interface: handlers and the reconciler receive one (through kopf's memo) and never
build requests themselves, so unit tests pass an in-memory fake. `KubernetesApi` is the real
one, over the kubernetes client's connection handling (credentials, TLS, proxies); it is the
only module that imports that client. It is synchronous: kopf runs sync handlers in threads,
and async code calls it through `asyncio.to_thread`.

Children are written with server-side apply under one field manager, so a re-apply of the same
object is a no-op (no new resourceVersion) and fields owned by others (the HPA's replicas) are
left alone.
"""

from __future__ import annotations

import json
from typing import Any, Final, Protocol

from djangoscale.contract import FIELD_MANAGER
from djangoscale.k8s.kinds import collection_path, object_path

# Seconds one request may take before it fails (and kopf retries the handler).
REQUEST_TIMEOUT_SECONDS: Final = 30
# Connections kept to the API server: kopf's 16 reconcile threads, 8 resync workers and the
# operator-wide loops may all call at once.
CONNECTION_POOL_SIZE: Final = 32
APPLY_PATCH: Final = "application/apply-patch+yaml"
MERGE_PATCH: Final = "application/merge-patch+json"
JSON: Final = "application/json"
# pods/log answers plain text, but the apiserver first negotiates Accept against its object
# serializers (JSON, YAML, protobuf) and refuses `text/plain` alone with 406 Not Acceptable;
# kubectl asks the same way.
LOG_ACCEPT: Final = "application/json, */*"
# Query parameters, in order; and a list answer's items.
Query = list[tuple[str, str]]
Items = list[dict[str, Any]]


class ApiError(Exception):
    """A request the API server refused (or a connection that failed: status 0)."""

    def __init__(self, status: int, reason: str, body: str = "") -> None:
        self.status, self.reason, self.body = status, reason, body
        super().__init__(f"{status} {reason}: {body[:500]}")


class Api(Protocol):
    def get(
        self, api_version: str | None, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """The live object, or None when it does not exist."""

    def list(
        self,
        api_version: str | None,
        kind: str,
        namespace: str | None,
        label_selector: str | None = None,
    ) -> Items:
        """The objects of a kind in a namespace, matching the selector if one is given."""

    def apply(
        self,
        obj: dict[str, Any],
        field_manager: str = FIELD_MANAGER,
        strict: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Server-side apply (forced) as `field_manager`; the live object. `strict` refuses
        unknown fields, as `kubectl apply` does."""

    def patch_status(
        self,
        api_version: str | None,
        kind: str,
        namespace: str | None,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> None:
        """Merge `status` into the object's status subresource; with `resource_version`,
        only if the object is still at that version (else ApiError 409)."""

    def scale(
        self, api_version: str | None, kind: str, namespace: str | None, name: str,
        replicas: int, field_manager: str,
    ) -> None:
        """Set replicas through the scale subresource, as the HPA does."""

    def delete(
        self, api_version: str | None, kind: str, namespace: str | None, name: str,
        propagation_policy: str | None = None,
    ) -> bool:
        """Delete the object; False when it was already gone. `propagation_policy`
        (Background, Foreground, Orphan) overrides the kind's default for its dependents."""

    def read_log(self, namespace: str, pod: str, container: str, tail_lines: int) -> str:
        """The last `tail_lines` lines a container of a pod wrote (pods/log)."""

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Query | None = None,
        content_type: str = JSON,
    ) -> Any:
        """One raw request (the JSON answer): for the paths the methods above do not cover."""


class KubernetesApi:
    """`Api` over the kubernetes client: in-cluster credentials in a pod, else a kubeconfig."""

    def __init__(self, kubeconfig: str | None = None) -> None:
        from kubernetes import client, config

        configuration = client.Configuration()
        loaded = False
        if kubeconfig is None:
            try:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                loaded = True
            except config.ConfigException:
                pass
        if not loaded:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
        # The client's default pool is 5 connections per CPU (10 on 2 cores), fewer than the
        # reconcile threads and loops that call at once: urllib3 then drops and reopens them.
        configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
        self._client = client.ApiClient(configuration)

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Query | None = None,
        content_type: str = JSON,
    ) -> Any:
        data = self.request_bytes(method, path, body, query, content_type)
        return self.decode(data) if data else None

    @staticmethod
    def decode(data: bytes) -> Any:
        """A JSON answer (ValueError when the answer is not JSON)."""
        return json.loads(data)

    def request_bytes(
        self, method: str, path: str, body: Any = None, query: Query | None = None,
        content_type: str = JSON, accept: str = JSON,
    ) -> bytes:
        """One request, its answer as sent (for the few paths that answer text)."""
        from urllib3.exceptions import HTTPError

        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        method, url, headers, body, _ = self._client.param_serialize(
            method=method, resource_path=path, query_params=query or [],
            header_params=headers, body=body, auth_settings=["BearerToken"],
        )
        try:
            response = self._client.call_api(
                method, url, header_params=headers, body=body,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
            response.read()  # type: ignore[no-untyped-call]
        except HTTPError as error:
            raise ApiError(0, type(error).__name__, str(error)) from error
        if not 200 <= response.status <= 299:
            data = response.data.decode("utf-8", "replace") if response.data else ""
            raise ApiError(response.status, str(response.reason), data)
        return bytes(response.data or b"")

    def get(
        self, api_version: str | None, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.call(
                "GET", object_path(api_version, kind, namespace, name))
            return found
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def list(
        self,
        api_version: str | None,
        kind: str,
        namespace: str | None,
        label_selector: str | None = None,
    ) -> Items:
        query = [("labelSelector", label_selector)] if label_selector else []
        result = self.call("GET", collection_path(api_version, kind, namespace), query=query)
        items: Items = result.get("items") or []
        return items

    def apply(
        self,
        obj: dict[str, Any],
        field_manager: str = FIELD_MANAGER,
        strict: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        metadata = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], metadata.get("namespace"),
                           metadata["name"])
        query = [("fieldManager", field_manager), ("force", "true")]
        if strict:
            query.append(("fieldValidation", "Strict"))
        if dry_run:
            query.append(("dryRun", "All"))
        live: dict[str, Any] = self.call("PATCH", path, body=obj, query=query,
                                         content_type=APPLY_PATCH)
        return live

    def patch_status(
        self,
        api_version: str | None,
        kind: str,
        namespace: str | None,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> None:
        path = object_path(api_version, kind, namespace, name) + "/status"
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            # A merge patch carrying resourceVersion is a precondition: 409 if it moved on.
            body["metadata"] = {"resourceVersion": resource_version}
        self.call("PATCH", path, body=body, content_type=MERGE_PATCH)

    def scale(
        self, api_version: str | None, kind: str, namespace: str | None, name: str,
        replicas: int, field_manager: str,
    ) -> None:
        path = object_path(api_version, kind, namespace, name) + "/scale"
        self.call("PATCH", path, body={"spec": {"replicas": replicas}},
                  query=[("fieldManager", field_manager)], content_type=MERGE_PATCH)

    def delete(
        self, api_version: str | None, kind: str, namespace: str | None, name: str,
        propagation_policy: str | None = None,
    ) -> bool:
        options = None if propagation_policy is None else {
            "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation_policy}
        try:
            self.call("DELETE", object_path(api_version, kind, namespace, name), body=options)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def read_log(self, namespace: str, pod: str, container: str, tail_lines: int) -> str:
        path = object_path("v1", "Pod", namespace, pod) + "/log"
        query = [("container", container), ("tailLines", str(tail_lines))]
        return self.request_bytes("GET", path, None, query, JSON, accept=LOG_ACCEPT).decode(
            "utf-8", "replace")
