"""The certificates and keys a local control plane needs, made with `cryptography`.

Everything a kubeadm cluster has that matters to an operator: a cluster CA that signs the
apiserver's serving cert and the client certs (admin in `system:masters`, one identity per
component so RBAC and logs look like a real cluster), the service-account signing key, and a
separate front-proxy CA + client cert so the aggregation layer can authenticate to aggregated
APIs such as `custom.metrics.k8s.io`.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.x509 import Certificate, Name

VALIDITY = datetime.timedelta(days=365)
FRONT_PROXY_CLIENT_CN = "front-proxy-client"


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate subject: Kubernetes reads CN as the user and O as its groups."""

    name: str
    user: str
    groups: tuple[str, ...] = ()


CLIENTS: tuple[ClientIdentity, ...] = (
    ClientIdentity("admin", "kubernetes-admin", ("system:masters",)),
    ClientIdentity("controller-manager", "system:kube-controller-manager"),
    ClientIdentity("scheduler", "system:kube-scheduler"),
    ClientIdentity("kwok", "kwok-controller", ("system:masters",)),
)

APISERVER_DNS_NAMES: tuple[str, ...] = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class PkiPaths:
    """Where each file of the PKI lives under one directory."""

    root: Path

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"

    @property
    def ca(self) -> Path:
        return self.cert("ca")

    @property
    def sa_key(self) -> Path:
        return self.root / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.root / "sa.pub"


@dataclass
class _Issuer:
    cert: Certificate
    key: EllipticCurvePrivateKey


def _new_key() -> EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _now() -> datetime.datetime:
    # Back-date a little so a cert is valid to a process whose clock reads it a moment early.
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)


def make_ca(common_name: str) -> _Issuer:
    """A self-signed CA that may only sign end-entity certs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = _new_key()
    subject = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now())
        .not_valid_after(_now() + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Issuer(cert, key)


def issue(
    issuer: _Issuer,
    common_name: str,
    *,
    organizations: tuple[str, ...] = (),
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    server: bool = False,
    client: bool = False,
) -> tuple[Certificate, EllipticCurvePrivateKey]:
    """Sign a leaf certificate for a server, a client or both."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = _new_key()
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now())
        .not_valid_after(_now() + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer.key, hashes.SHA256()), key


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _write_pair(
    paths: PkiPaths, name: str, cert: Certificate, key: EllipticCurvePrivateKey
) -> None:
    from cryptography.hazmat.primitives import serialization

    _write(paths.cert(name), cert.public_bytes(serialization.Encoding.PEM))
    _write(
        paths.key(name),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        private=True,
    )


def generate_pki(root: Path, apiserver_ips: tuple[str, ...] = ("127.0.0.1",)) -> PkiPaths:
    """Write a complete PKI under `root` and return where each file is.

    Reuses nothing: a cluster directory gets fresh keys each time it is brought up, so a
    stale cert can never outlive the etcd data it was made for.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    root.mkdir(parents=True, exist_ok=True)
    paths = PkiPaths(root)

    ca = make_ca("djangoscale-local-ca")
    _write_pair(paths, "ca", ca.cert, ca.key)

    cert, key = issue(
        ca,
        "kube-apiserver",
        dns_names=APISERVER_DNS_NAMES,
        ip_addresses=apiserver_ips,
        server=True,
    )
    _write_pair(paths, "apiserver", cert, key)

    for identity in CLIENTS:
        cert, key = issue(ca, identity.user, organizations=identity.groups, client=True)
        _write_pair(paths, identity.name, cert, key)

    front_proxy_ca = make_ca("djangoscale-local-front-proxy-ca")
    _write_pair(paths, "front-proxy-ca", front_proxy_ca.cert, front_proxy_ca.key)
    cert, key = issue(front_proxy_ca, FRONT_PROXY_CLIENT_CN, client=True)
    _write_pair(paths, "front-proxy-client", cert, key)

    # Service-account tokens are signed with RS256 by default, so an RSA key.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(
        paths.sa_key,
        sa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        private=True,
    )
    _write(
        paths.sa_pub,
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return paths


def load_ca(paths: PkiPaths, name: str = "ca") -> _Issuer:
    """The CA written by `generate_pki`, to sign more certs after the cluster is up."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    cert = x509.load_pem_x509_certificate(paths.cert(name).read_bytes())
    key = serialization.load_pem_private_key(paths.key(name).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{paths.key(name)}: expected the EC key generate_pki writes")
    return _Issuer(cert, key)


def issue_serving_cert(
    paths: PkiPaths, name: str, dns_names: tuple[str, ...], ip_addresses: tuple[str, ...] = ()
) -> tuple[Path, Path]:
    """Sign a serving cert with the cluster CA, e.g. for an aggregated API served on the host.

    The aggregator checks an APIService backend's cert against `<service>.<namespace>.svc`,
    so that name belongs in `dns_names`. Returns (cert path, key path).
    """
    cert, key = issue(
        load_ca(paths),
        dns_names[0] if dns_names else name,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        server=True,
    )
    _write_pair(paths, name, cert, key)
    return paths.cert(name), paths.key(name)
