"""A dev-only CA and one server certificate for a devenv service (S3, Pebble's API), made once and kept.

The certificates come from :mod:`modules.secrets.tls` (the stack's own CA code); this only keeps the files:
the key 0600, the certificate and the CA readable, all three made again together when one is missing.
"""

from __future__ import annotations

from pathlib import Path

from modules.secrets.tls import CaSpec, ServerCertSpec, issue, make_ca

DEV_CERT_DAYS = 825  # the longest ServerCertSpec allows; devenv folders are made again long before


def ensure_server_files(
    *,
    ca_name: str,
    cert_file: Path,
    key_file: Path,
    ca_file: Path,
    dns_names: tuple[str, ...],
    ip_addresses: tuple[str, ...],
) -> bool:
    """Write the CA and a server certificate for the names unless all three files exist; True when made."""
    if cert_file.exists() and key_file.exists() and ca_file.exists():
        return False
    ca_cert, ca_key = make_ca(CaSpec(ca_name))
    cert, key = issue(ServerCertSpec(dns_names, ip_addresses, validity_days=DEV_CERT_DAYS), ca_cert, ca_key)
    key_file.write_text(key)
    key_file.chmod(0o600)
    cert_file.write_text(cert)
    ca_file.write_text(ca_cert)
    return True
