"""The operator's `custom.metrics.k8s.io/v1beta2` server, which the HPA reads through the API
aggregation layer.

Why in the operator: it already knows every pod's RPS, so serving it directly removes
Prometheus and prometheus-adapter (and their scrape interval + rate window + relist delays)
from the scaling loop.

Who may ask: only the kube-apiserver's aggregator. It connects with its front-proxy client
certificate, so TLS requires a client certificate signed by the request-header CA published
in `kube-system/extension-apiserver-authentication`, and its common name must be one of
`requestheader-allowed-names` (when that list is not empty), as every aggregated API server
checks. The aggregator has already authenticated and authorized the end user (the HPA
controller's RBAC covers `custom.metrics.k8s.io`), so this server does no SubjectAccessReview.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import ssl
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from djangoscale.autoscaling.windows import quantity
from djangoscale.contract import RPS_METRIC

GROUP = "custom.metrics.k8s.io"
VERSION = "v1beta2"
GROUP_VERSION = f"{GROUP}/{VERSION}"
REQUESTHEADER_CONFIGMAP = ("kube-system", "extension-apiserver-authentication")
# A generated serving cert lasts a year (the operator makes a new one at every start) and is
# valid from a few minutes back, so a client whose clock lags a little accepts it.
GENERATED_CERT_DAYS = 365
CLOCK_SKEW_MINUTES = 5


@dataclass(frozen=True)
class PodValue:
    pod: str
    labels: dict[str, str]
    value: float


@dataclass
class MetricsStore:
    """The latest per-pod values of every DjangoService, written by the collectors."""

    window_seconds: int = 60
    services: dict[tuple[str, str], list[PodValue]] = field(default_factory=dict)
    updated: dict[tuple[str, str], datetime.datetime] = field(default_factory=dict)
    last_beat: float | None = None  # time.monotonic() of a collector's latest round

    def beat(self) -> None:
        """A collector ran: this replica is the active one (kopf pauses a standby's daemons)."""
        self.last_beat = time.monotonic()

    def fresh(self, max_age: float) -> bool:
        return self.last_beat is not None and time.monotonic() - self.last_beat <= max_age

    def put(self, namespace: str, service: str, values: list[PodValue]) -> None:
        self.services[(namespace, service)] = values
        self.updated[(namespace, service)] = datetime.datetime.now(datetime.UTC)

    def drop(self, namespace: str, service: str) -> None:
        self.services.pop((namespace, service), None)
        self.updated.pop((namespace, service), None)

    def pods(self, namespace: str) -> Iterable[tuple[PodValue, datetime.datetime]]:
        for (ns, service), values in self.services.items():
            if ns == namespace:
                for value in values:
                    yield value, self.updated[(ns, service)]


# -- label selectors (the HPA sends its target's selector in this string form) ---------------

_SET_RE = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_requirements(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


Labels = dict[str, str]


def _requirement(text: str) -> Callable[[Labels], bool]:
    found = _SET_RE.match(text)
    if found:
        key, op, raw = found.groups()
        values = {v.strip() for v in raw.split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if "!=" in text:
        key, value = (s.strip() for s in text.split("!=", 1))
        return lambda labels: labels.get(key) != value
    if "=" in text:
        key, value = (s.strip() for s in re.split("==?", text, maxsplit=1))
        return lambda labels: labels.get(key) == value
    if text.startswith("!"):
        absent = text[1:].strip()
        return lambda labels: absent not in labels
    if re.fullmatch(r"[A-Za-z0-9._/-]+", text):
        return lambda labels: text in labels
    raise ValueError(f"cannot parse label selector requirement {text!r}")


def parse_selector(selector: str) -> Callable[[Labels], bool]:
    """A predicate on labels for a Kubernetes label selector string; ValueError if malformed."""
    tests = [_requirement(part) for part in _split_requirements(selector or "")]
    return lambda labels: all(test(labels) for test in tests)


# -- documents ----------------------------------------------------------------------------------

def resource_list(extra_metrics: Iterable[str] = ()) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [{
            "name": f"pods/{metric}",
            "singularName": "",
            "namespaced": True,
            "kind": "MetricValueList",
            "verbs": ["get"],
        } for metric in [RPS_METRIC, *extra_metrics]],
    }


def api_group() -> dict[str, Any]:
    version = {"groupVersion": GROUP_VERSION, "version": VERSION}
    return {"kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": [version],
            "preferredVersion": version}


def metric_value(namespace: str, item: PodValue, at: datetime.datetime,
                 window_seconds: int, metric: str = RPS_METRIC) -> dict[str, Any]:
    return {
        "describedObject": {"kind": "Pod", "namespace": namespace, "name": item.pod,
                            "apiVersion": "/v1"},
        "metric": {"name": metric},
        "timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "windowSeconds": window_seconds,
        "value": quantity(item.value),
    }


def status_error(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    return web.json_response(body, status=code)


# -- the server -----------------------------------------------------------------------------------

def client_common_name(request: web.Request) -> str | None:
    peer = request.transport.get_extra_info("peercert") if request.transport else None
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def build_app(store: MetricsStore, allowed_names: Iterable[str] = (),
              ready_max_age: float = 10.0,
              extra: Mapping[str, MetricsStore] | None = None) -> web.Application:
    """`store` holds RPS; `extra` the pod metrics served beside it, by name (the Celery queue
    length keeps its per-pod values in a store of its own). `ready_max_age`: /readyz fails
    unless a collector ran this recently (see `readyz`)."""
    allowed = set(allowed_names)
    extra = dict(extra or {})

    @web.middleware
    async def front_proxy_only(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/readyz":
            return await readyz(request)
        # TLS verified any cert against the request-header CA; this demands one, and checks
        # whose it is.
        name = client_common_name(request)
        if name is None or (allowed and name not in allowed):
            return status_error(403, "Forbidden", "only the API server's front proxy may ask")
        response: web.StreamResponse = await handler(request)
        return response

    async def readyz(_: web.Request) -> web.Response:
        # For the kubelet (no client cert). With kopf peering only the active replica runs
        # collectors; a standby's store is empty, so it must leave the Service, else the
        # aggregator sends it every other HPA read and gets an empty list back.
        if store.fresh(ready_max_age):
            return web.Response(text="ok")
        return web.Response(status=503, text="no collector running here (standby or no "
                                             "DjangoService)")

    async def discovery(_: web.Request) -> web.Response:
        return web.json_response(resource_list(extra))

    async def group(_: web.Request) -> web.Response:
        return web.json_response(api_group())

    async def pod_metric(request: web.Request) -> web.Response:
        if not store.fresh(ready_max_age):
            # Both replicas collect for a moment at start, until peering pauses one, so both
            # may be Ready then; the aggregator keeps its connection to whichever it reached,
            # and kube-proxy keeps that connection on the standby after it leaves the
            # Service: it would read empty lists for good. Refuse and close it, so the next
            # read reconnects through the Service to the active replica.
            refused = status_error(503, "ServiceUnavailable",
                                   "no collector running here (standby): ask again")
            refused.force_close()
            return refused
        namespace = request.match_info["namespace"]
        pod, metric = request.match_info["pod"], request.match_info["metric"]
        source = store if metric == RPS_METRIC else extra.get(metric)
        if source is None:
            return status_error(404, "NotFound", f"metric {metric} is not served here")
        try:
            matches = parse_selector(request.query.get("labelSelector", ""))
        except ValueError as error:
            return status_error(400, "BadRequest", str(error))
        found = [
            metric_value(namespace, item, at, source.window_seconds, metric)
            for item, at in source.pods(namespace)
            if (pod == "*" or item.pod == pod) and matches(item.labels)
        ]
        found.sort(key=lambda entry: entry["describedObject"]["name"])
        if pod != "*":
            if not found:
                return status_error(404, "NotFound", f"no {metric} for pod {namespace}/{pod}")
            return web.json_response({"kind": "MetricValue", "apiVersion": GROUP_VERSION,
                                      **found[0]})
        return web.json_response({"kind": "MetricValueList", "apiVersion": GROUP_VERSION,
                                  "metadata": {}, "items": found})

    app = web.Application(middlewares=[front_proxy_only])
    base = f"/apis/{GROUP_VERSION}"
    app.router.add_get(f"/apis/{GROUP}", group)
    app.router.add_get(base, discovery)
    app.router.add_get(base + "/namespaces/{namespace}/pods/{pod}/{metric}", pod_metric)
    return app


def requestheader_settings(configmap: dict[str, Any]) -> tuple[str, list[str]]:
    """(CA bundle PEM, allowed client names) from `extension-apiserver-authentication`."""
    data = configmap.get("data") or {}
    ca = data.get("requestheader-client-ca-file")
    if not ca:
        raise ValueError(
            "kube-system/extension-apiserver-authentication has no requestheader-client-ca-file:"
            " the API server runs without --requestheader-client-ca-file (no aggregation layer)"
        )
    names = json.loads(data.get("requestheader-allowed-names") or "[]")
    return ca, [str(name) for name in names]


def server_ssl_context(cert_file: Path, key_file: Path, client_ca_pem: str) -> ssl.SSLContext:
    """TLS that verifies a client certificate against the request-header CA.

    Optional at the TLS layer only so the kubelet's readiness probe (no client cert) gets
    through; every other path refuses a request without one (`build_app`), and a cert from
    another CA fails the handshake.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    context.load_verify_locations(cadata=client_ca_pem)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


@dataclass(frozen=True)
class ServingCert:
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes  # what an APIService's caBundle must hold to trust this server


def generate_serving_cert(dns_names: tuple[str, ...], ip_addresses: tuple[str, ...] = (),
                          days: int = GENERATED_CERT_DAYS) -> ServingCert:
    """A throwaway CA and a serving cert it signs, for when no cert files are given."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=CLOCK_SKEW_MINUTES)
    until = now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "djangoscale-metrics-ca")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                    dns_names[0] if dns_names else "metrics")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return ServingCert(
        cert_pem=cert.public_bytes(pem),
        key_pem=key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
        ca_pem=ca.public_bytes(pem),
    )


def write_serving_cert(cert: ServingCert, directory: Path | None = None) -> tuple[Path, Path]:
    """Write the pair for `ssl` (which only loads files); the key is readable by us only."""
    root = Path(directory or tempfile.mkdtemp(prefix="djangoscale-metrics-"))
    root.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = root / "tls.crt", root / "tls.key"
    cert_file.write_bytes(cert.cert_pem)
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(cert.key_pem)
    (root / "ca.crt").write_bytes(cert.ca_pem)
    return cert_file, key_file


async def start_server(app: web.Application, context: ssl.SSLContext, host: str,
                       port: int) -> tuple[web.AppRunner, int]:
    """Serve `app` over TLS; return the runner (to clean up) and the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context)
    await site.start()
    bound = port
    for address in runner.addresses:  # the real port when `port` was 0
        bound = int(address[1])
    return runner, bound
