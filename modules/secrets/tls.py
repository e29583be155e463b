"""A stack's own certificate authority and the server certificates it signs, as dynamic resources.

For services only the platform's own clients talk to (the queue's Redis on its VPS): the clients get the
CA certificate from a stack output and verify the server by it; nobody else needs to trust it. Public names
(mail hosts, MTA-STS) use ACME instead. Private keys are drawn here with :mod:`cryptography` and kept only
as Pulumi secrets (``additional_secret_outputs``). A server certificate is replaced when its names change
and, at the next preview or up, once it is within ``renew_before_days`` of expiring.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic as dynamic
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def not_after(cert_pem: str) -> dt.datetime:
    return x509.load_pem_x509_certificate(cert_pem.encode()).not_valid_after_utc


@dataclass(frozen=True)
class CaSpec:
    common_name: str
    validity_days: int = 3650

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> CaSpec:
        return cls(str(props["common_name"]), int(props.get("validity_days") or 3650))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if not self.common_name.strip() or len(self.common_name) > 64:
            found.append(("common_name", "must be 1 to 64 characters"))
        if not 30 <= self.validity_days <= 7300:
            found.append(("validity_days", f"must be between 30 and 7300, got {self.validity_days}"))
        return found


def make_ca(spec: CaSpec) -> tuple[str, str]:
    """(certificate PEM, private key PEM) of a CA that may sign server certificates and nothing deeper."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=spec.validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _cert_pem(cert), _key_pem(key)


@dataclass(frozen=True)
class ServerCertSpec:
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    validity_days: int = 397
    renew_before_days: int = 30

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> ServerCertSpec:
        return cls(
            tuple(str(n) for n in props.get("dns_names") or ()),
            tuple(str(a) for a in props.get("ip_addresses") or ()),
            int(props.get("validity_days") or 397),
            int(props.get("renew_before_days") or 30),
        )

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if not self.dns_names and not self.ip_addresses:
            found.append(("dns_names", "name at least one DNS name or IP address"))
        for address in self.ip_addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                found.append(("ip_addresses", f"{address!r} is not an IP address"))
        for name in self.dns_names:
            if not name or len(name) > 253 or " " in name:
                found.append(("dns_names", f"{name!r} is not a DNS name"))
        if not 2 <= self.validity_days <= 825:
            found.append(("validity_days", f"must be between 2 and 825, got {self.validity_days}"))
        if not 1 <= self.renew_before_days < self.validity_days:
            found.append(("renew_before_days", "must be at least 1 and less than validity_days"))
        return found


def issue(spec: ServerCertSpec, ca_cert_pem: str, ca_key_pem: str) -> tuple[str, str]:
    """(certificate PEM, private key PEM) for ``spec``'s names, signed by the CA."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in spec.dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in spec.ip_addresses]
    subject = spec.dns_names[0] if spec.dns_names else spec.ip_addresses[0]
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=spec.validity_days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _cert_pem(cert), _key_pem(key)


def _check(props: dict[str, Any], problems: list[tuple[str, str]]) -> dynamic.CheckResult:
    return dynamic.CheckResult(props, [dynamic.CheckFailure(field, reason) for field, reason in problems])


class PrivateCaProvider(dynamic.ResourceProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        try:
            return _check(news, CaSpec.from_props(news).problems())
        except (KeyError, TypeError, ValueError) as exc:
            return _check(news, [("common_name", f"invalid: {exc}")])

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        replaces = [k for k in ("common_name", "validity_days") if olds.get(k) != news.get(k)]
        return dynamic.DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        cert, key = make_ca(CaSpec.from_props(props))
        return dynamic.CreateResult(secrets.token_hex(8), {**props, "cert_pem": cert, "key_pem": key})

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        return dynamic.ReadResult(id_, props)  # nothing lives outside the state


class ServerCertificateProvider(dynamic.ResourceProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        try:
            return _check(news, ServerCertSpec.from_props(news).problems())
        except (TypeError, ValueError) as exc:
            return _check(news, [("dns_names", f"invalid: {exc}")])

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        keys = ("dns_names", "ip_addresses", "validity_days", "ca_cert_pem")
        replaces = [k for k in keys if olds.get(k) != news.get(k)]
        spec = ServerCertSpec.from_props(news)
        cert = olds.get("cert_pem")
        if cert and not_after(cert) - _now() < dt.timedelta(days=spec.renew_before_days):
            replaces.append("cert_pem")  # due for renewal: shows in the preview as a replace
        return dynamic.DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        cert, key = issue(ServerCertSpec.from_props(props), props["ca_cert_pem"], props["ca_key_pem"])
        return dynamic.CreateResult(secrets.token_hex(8), {**props, "cert_pem": cert, "key_pem": key})

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        return dynamic.ReadResult(id_, props)


class PrivateCa(dynamic.Resource, module="secrets", name="PrivateCa"):
    """The stack's CA; ``cert_pem`` is public (clients trust it), ``key_pem`` a secret."""

    cert_pem: pulumi.Output[str]
    key_pem: pulumi.Output[str]

    def __init__(self, name: str, common_name: str, validity_days: int = 3650, opts=None):
        super().__init__(
            PrivateCaProvider(),
            name,
            {"common_name": common_name, "validity_days": validity_days, "cert_pem": None, "key_pem": None},
            pulumi.ResourceOptions.merge(pulumi.ResourceOptions(additional_secret_outputs=["key_pem"]), opts),
        )


class ServerCertificate(dynamic.Resource, module="secrets", name="ServerCertificate"):
    """A server certificate for ``dns_names`` and ``ip_addresses`` signed by ``ca``; ``key_pem`` a secret."""

    cert_pem: pulumi.Output[str]
    key_pem: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        ca: PrivateCa,
        dns_names: pulumi.Input[list[str]],
        ip_addresses: pulumi.Input[list[str]],
        validity_days: int = 397,
        renew_before_days: int = 30,
        opts=None,
    ):
        super().__init__(
            ServerCertificateProvider(),
            name,
            {
                "dns_names": dns_names,
                "ip_addresses": ip_addresses,
                "validity_days": validity_days,
                "renew_before_days": renew_before_days,
                "ca_cert_pem": ca.cert_pem,
                "ca_key_pem": ca.key_pem,
                "cert_pem": None,
                "key_pem": None,
            },
            pulumi.ResourceOptions.merge(
                pulumi.ResourceOptions(additional_secret_outputs=["key_pem", "ca_key_pem"]), opts
            ),
        )
