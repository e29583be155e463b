"""devenv/s3.py with ``host``: a private instance on the podman gateway that fleet hosts can reach."""

from __future__ import annotations

import ipaddress

from cryptography import x509

from devenv.s3 import S3Service


def test_a_private_instance_on_another_address_names_it_in_its_certificate_and_env(tmp_path):
    s3 = S3Service(root=tmp_path, port=9555, host="10.88.0.1")
    s3.prepare()
    cert = x509.load_pem_x509_certificate(s3.cert_file.read_bytes())
    ips = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.IPAddress
    )
    assert ipaddress.ip_address("10.88.0.1") in ips and ipaddress.ip_address("127.0.0.1") in ips
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert "10.88.0.1" in names  # pgBackRest 2.45 checks DNS names only
    assert s3.endpoint == "https://10.88.0.1:9555" and s3.address == "10.88.0.1:9555"
    assert "--host" in s3.command() and "10.88.0.1" in s3.command()
    env = s3.env()
    assert env["PENGUINMAILS_FLEET_S3_ENDPOINT"] == "https://10.88.0.1:9555"
    assert env["PENGUINMAILS_FLEET_S3_CA_FILE"] == str(s3.ca_file)


def test_the_shared_instance_stays_on_loopback_without_a_fleet_endpoint(tmp_path):
    s3 = S3Service(root=tmp_path, port=9556)
    assert s3.host == "127.0.0.1" and s3.endpoint == "https://localhost:9556"
    assert "PENGUINMAILS_FLEET_S3_ENDPOINT" not in s3.env()


def test_the_certificate_is_made_once_issued_by_its_ca_and_its_key_is_private(tmp_path):
    s3 = S3Service(root=tmp_path, port=9557)
    s3.prepare()
    ca = x509.load_pem_x509_certificate(s3.ca_file.read_bytes())
    cert = x509.load_pem_x509_certificate(s3.cert_file.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert s3.key_file.stat().st_mode & 0o777 == 0o600
    first = s3.cert_file.read_bytes()
    s3.prepare()
    assert s3.cert_file.read_bytes() == first  # kept: clients trust the CA they were given
