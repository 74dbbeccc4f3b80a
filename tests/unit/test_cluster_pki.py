"""The generated PKI must be what kube-apiserver and its clients expect."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from djangoscale_dev.cluster.pki import (
    CLIENTS,
    FRONT_PROXY_CLIENT_CN,
    generate_pki,
    issue_serving_cert,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    return generate_pki(tmp_path_factory.mktemp("pki"))


def load(path: Path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def common_name(cert) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def organizations(cert) -> list[str]:
    return [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def usages(cert) -> set:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_apiserver_cert_names_loopback_and_in_cluster_names(pki) -> None:
    cert = load(pki.cert("apiserver"))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    dns = san.get_values_for_type(x509.DNSName)
    assert "localhost" in dns and "kubernetes.default.svc" in dns
    assert usages(cert) == {ExtendedKeyUsageOID.SERVER_AUTH}


def test_every_leaf_is_signed_by_its_ca(pki) -> None:
    ca = load(pki.ca)
    for name in ["apiserver", *(c.name for c in CLIENTS)]:
        load(pki.cert(name)).verify_directly_issued_by(ca)
    front_proxy_ca = load(pki.cert("front-proxy-ca"))
    load(pki.cert("front-proxy-client")).verify_directly_issued_by(front_proxy_ca)
    with pytest.raises((ValueError, InvalidSignature)):
        load(pki.cert("front-proxy-client")).verify_directly_issued_by(ca)


def test_admin_is_in_system_masters_and_components_are_not(pki) -> None:
    admin = load(pki.cert("admin"))
    assert organizations(admin) == ["system:masters"]
    assert usages(admin) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    cm = load(pki.cert("controller-manager"))
    assert common_name(cm) == "system:kube-controller-manager"
    assert organizations(cm) == []


def test_front_proxy_client_cn_matches_requestheader_allowed_names(pki) -> None:
    assert common_name(load(pki.cert("front-proxy-client"))) == FRONT_PROXY_CLIENT_CN


def test_private_keys_are_private(pki) -> None:
    assert pki.sa_key.stat().st_mode & 0o077 == 0
    assert pki.key("admin").stat().st_mode & 0o077 == 0
    assert b"PUBLIC KEY" in pki.sa_pub.read_bytes()


def test_serving_cert_for_an_aggregated_api(pki) -> None:
    cert_path, key_path = issue_serving_cert(
        pki, "metrics", ("custom-metrics.default.svc",), ("127.0.0.1",)
    )
    cert = load(cert_path)
    cert.verify_directly_issued_by(load(pki.ca))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["custom-metrics.default.svc"]
    assert key_path.is_file()
