"""`KubernetesApi.read_log` against a local server that negotiates Accept as the apiserver does.

The apiserver checks a pods/log request's Accept header against its object serializers before
it streams the log as plain text: `Accept: text/plain` alone gets 406 Not Acceptable (the
migration gate's log tail read so on the real node, never the log).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from djangoscale.k8s import KubernetesApi
from djangoscale.k8s.api import ApiError

LOG = b"Applying shop.0002_fails...\nRuntimeError: the release cannot migrate\n"
SERIALIZED = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")


def acceptable(accept: str) -> bool:
    """What the apiserver's output negotiation lets through: a serializer's type or a wildcard."""
    types = [part.split(";")[0].strip() for part in accept.split(",")]
    return any(kind in SERIALIZED or kind in ("*/*", "application/*") for kind in types)


class LogServer(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        accept = self.headers.get("Accept", "")
        self.seen.append((self.path, accept))
        status, body = (200, LOG) if acceptable(accept) else (406, b"{}")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if status == 200 else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api(tmp_path: Path) -> Iterator[KubernetesApi]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LogServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "local",
        "clusters": [{"name": "local", "cluster": {
            "server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "local", "user": {}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "local"}}],
    }))
    LogServer.seen = []
    client = KubernetesApi(str(kubeconfig))
    try:
        yield client
    finally:
        client.close()
        server.shutdown()
        server.server_close()


def test_the_negotiation_refuses_plain_text_alone():
    assert not acceptable("text/plain")
    assert acceptable("application/json, */*")


def test_read_log_asks_so_the_apiserver_answers_the_text(api: KubernetesApi):
    text = api.read_log("web", "shop-migrate-abc-x1", "migrate", 20)
    assert text == LOG.decode()
    ((path, accept),) = LogServer.seen
    assert path == ("/api/v1/namespaces/web/pods/shop-migrate-abc-x1/log"
                    "?container=migrate&tailLines=20")
    assert acceptable(accept)


def test_a_refused_log_is_an_api_error_with_the_status(api: KubernetesApi):
    with pytest.raises(ApiError) as error:
        api.request_bytes("GET", "/api/v1/namespaces/web/pods/x/log", accept="text/plain")
    assert error.value.status == 406


def test_the_client_keeps_a_connection_for_every_caller(api: KubernetesApi):
    """Not the client's 5 per CPU: the reconcile threads and loops call at once."""
    from djangoscale.k8s.api import CONNECTION_POOL_SIZE

    pool = api._client.rest_client.pool_manager  # type: ignore[attr-defined]
    assert pool.connection_pool_kw["maxsize"] == CONNECTION_POOL_SIZE >= 16 + 8
    assert api.read_log("web", "shop-migrate-x", "migrate", 5) == LOG.decode()
