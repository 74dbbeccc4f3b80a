"""The custom.metrics.k8s.io server over real TLS: the front-proxy cert gets metrics, others
get nothing; documents and label selectors as the HPA sends them."""

from __future__ import annotations

import datetime
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from djangoscale.autoscaling.apiserver import (
    GROUP_VERSION,
    MetricsStore,
    PodValue,
    build_app,
    generate_serving_cert,
    parse_selector,
    requestheader_settings,
    server_ssl_context,
    start_server,
    write_serving_cert,
)
from djangoscale.contract import RPS_METRIC

NOW = datetime.datetime.now(datetime.UTC)
LABELS = {"app.kubernetes.io/name": "django", "app.kubernetes.io/instance": "shop",
          "app.kubernetes.io/component": "web"}
SELECTOR = ("app.kubernetes.io/component=web,app.kubernetes.io/instance=shop,"
            "app.kubernetes.io/name=django")


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(minutes=5))
            .not_valid_after(NOW + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _client_cert(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], cn: str,
                 directory: Path) -> tuple[Path, Path]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(minutes=5))
            .not_valid_after(NOW + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file, key_file = directory / f"{cn}.crt", directory / f"{cn}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


class Server:
    def __init__(self, port: int, ca_file: Path, tmp: Path, front_proxy_ca, other_ca,
                 store: MetricsStore) -> None:
        self.store = store
        self.base = f"https://127.0.0.1:{port}"
        self.ca_file, self.tmp = ca_file, tmp
        self.front_proxy_ca, self.other_ca = front_proxy_ca, other_ca

    def client_context(self, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if cert is not None:
            context.load_cert_chain(*map(str, cert))
        return context

    async def get_text(self, path: str) -> tuple[int, str]:
        connector = aiohttp.TCPConnector(ssl=self.client_context(None))
        async with (aiohttp.ClientSession(connector=connector) as session,
                    session.get(self.base + path) as response):
            return response.status, await response.text()

    async def get(self, path: str, cert: tuple[Path, Path] | None) -> tuple[int, dict]:
        connector = aiohttp.TCPConnector(ssl=self.client_context(cert))
        timeout = aiohttp.ClientTimeout(total=10)
        async with (aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                    session.get(self.base + path) as response):
            return response.status, json.loads(await response.text())


# The server must run on the test's own loop (the project's default fixture loop is the
# session's).
@pytest_asyncio.fixture(loop_scope="function")
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    front_proxy_ca, other_ca = _ca("front-proxy-ca"), _ca("some-other-ca")
    store = MetricsStore(window_seconds=60)
    store.put("web", "shop", [PodValue("shop-a", LABELS, 12.5), PodValue("shop-b", LABELS, 30)])
    store.put("web", "blog", [PodValue("blog-a", {**LABELS, "app.kubernetes.io/instance": "blog"},
                                       99)])
    store.put("other", "shop", [PodValue("shop-x", LABELS, 7)])
    configmap = {"data": {
        "requestheader-client-ca-file":
            front_proxy_ca[0].public_bytes(serialization.Encoding.PEM).decode(),
        "requestheader-allowed-names": '["front-proxy-client"]',
    }}
    client_ca, allowed = requestheader_settings(configmap)
    serving = generate_serving_cert(("localhost",), ("127.0.0.1",))
    cert_file, key_file = write_serving_cert(serving, tmp_path / "serving")
    assert (key_file.stat().st_mode & 0o077) == 0
    context = server_ssl_context(cert_file, key_file, client_ca)
    store.beat()  # the active replica: its collectors run
    runner, port = await start_server(build_app(store, allowed), context, "127.0.0.1", 0)
    try:
        yield Server(port, tmp_path / "serving" / "ca.crt", tmp_path, front_proxy_ca, other_ca,
                     store)
    finally:
        await runner.cleanup()


def _pods_path(namespace: str, pod: str = "*", selector: str = SELECTOR) -> str:
    from urllib.parse import quote
    return (f"/apis/{GROUP_VERSION}/namespaces/{namespace}/pods/{pod}/{RPS_METRIC}"
            f"?labelSelector={quote(selector)}")


async def test_front_proxy_cert_gets_one_item_per_matching_pod(server: Server) -> None:
    cert = _client_cert(server.front_proxy_ca, "front-proxy-client", server.tmp)
    status, body = await server.get(_pods_path("web"), cert)
    assert status == 200
    assert body["kind"] == "MetricValueList"
    assert body["apiVersion"] == "custom.metrics.k8s.io/v1beta2"
    items = {item["describedObject"]["name"]: item for item in body["items"]}
    assert set(items) == {"shop-a", "shop-b"}  # not blog (selector), not other ns
    assert items["shop-a"]["value"] == "12500m"
    assert items["shop-b"]["value"] == "30000m"
    assert items["shop-a"]["describedObject"] == {
        "kind": "Pod", "namespace": "web", "name": "shop-a", "apiVersion": "/v1"}
    assert items["shop-a"]["metric"]["name"] == RPS_METRIC
    assert items["shop-a"]["windowSeconds"] == 60


async def test_single_pod_and_unknown_metric(server: Server) -> None:
    cert = _client_cert(server.front_proxy_ca, "front-proxy-client", server.tmp)
    status, body = await server.get(_pods_path("web", "shop-b"), cert)
    assert status == 200 and body["kind"] == "MetricValue" and body["value"] == "30000m"
    status, body = await server.get(_pods_path("web", "nope"), cert)
    assert status == 404 and body["kind"] == "Status"
    status, _ = await server.get(
        f"/apis/{GROUP_VERSION}/namespaces/web/pods/*/cpu_usage?labelSelector=", cert)
    assert status == 404


async def test_discovery_lists_the_pods_metric(server: Server) -> None:
    cert = _client_cert(server.front_proxy_ca, "front-proxy-client", server.tmp)
    status, body = await server.get(f"/apis/{GROUP_VERSION}", cert)
    assert status == 200
    assert body["groupVersion"] == GROUP_VERSION
    assert [r["name"] for r in body["resources"]] == [f"pods/{RPS_METRIC}"]


async def test_cert_from_the_right_ca_but_not_an_allowed_name_is_refused(server: Server) -> None:
    cert = _client_cert(server.front_proxy_ca, "someone-else", server.tmp)
    status, body = await server.get(_pods_path("web"), cert)
    assert status == 403
    assert "items" not in body


async def test_cert_from_another_ca_fails_the_handshake(server: Server) -> None:
    cert = _client_cert(server.other_ca, "front-proxy-client", server.tmp)
    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
        await server.get(_pods_path("web"), cert)


async def test_no_client_cert_gets_no_metrics(server: Server) -> None:
    status, body = await server.get(_pods_path("web"), None)
    assert status == 403
    assert "items" not in body


async def test_readyz_needs_no_cert_and_follows_the_collectors(server: Server) -> None:
    server.store.last_beat = None
    status, _ = await server.get_text("/readyz")
    assert status == 503  # no collector has run: a standby replica, out of the Service
    server.store.beat()
    status, text = await server.get_text("/readyz")
    assert (status, text) == (200, "ok")
    server.store.last_beat = time.monotonic() - 60  # collectors stopped (paused by peering)
    status, _ = await server.get_text("/readyz")
    assert status == 503


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ("", {}, True),
    ("a=1", {"a": "1"}, True),
    ("a==1", {"a": "2"}, False),
    ("a!=1", {}, True),
    ("a in (1, 2),b", {"a": "2", "b": ""}, True),
    ("a notin (1,2)", {"a": "2"}, False),
    ("!a", {"a": "x"}, False),
    ("a,!b", {"a": "x"}, True),
])
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(selector)(labels) is expected


def test_requestheader_settings_demand_a_ca() -> None:
    with pytest.raises(ValueError, match="requestheader-client-ca-file"):
        requestheader_settings({"data": {}})
    ca, names = requestheader_settings({"data": {"requestheader-client-ca-file": "PEM"}})
    assert (ca, names) == ("PEM", [])


async def test_a_standby_refuses_metric_reads_and_closes_the_connection(server: Server) -> None:
    """A connection the aggregator made while this replica was briefly Ready must not keep
    reading its empty store: 503 and Connection: close, so the next read goes elsewhere."""
    server.store.last_beat = time.monotonic() - 60  # collectors stopped (paused by peering)
    cert = _client_cert(server.front_proxy_ca, "front-proxy-client", server.tmp)
    connector = aiohttp.TCPConnector(ssl=server.client_context(cert))
    async with (aiohttp.ClientSession(connector=connector) as session,
                session.get(server.base + _pods_path("web")) as response):
        assert response.status == 503
        assert response.headers.get("Connection", "").lower() == "close"
        assert (await response.json())["reason"] == "ServiceUnavailable"
    server.store.beat()
    status, body = await server.get(_pods_path("web"), cert)
    assert status == 200 and len(body["items"]) == 2

