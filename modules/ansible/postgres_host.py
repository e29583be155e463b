"""``PostgresHost``: a self-hosted PostgreSQL tier on its own VPS (and an optional streaming replica),
converged with the ``postgresql`` role during ``pulumi up``.

One :class:`AnsiblePlaybook` over ``playbooks/postgresql.yml`` for the primary and its replica: the
playbook converges primaries first, so the replica's ``pg_basebackup`` finds its slot. The admin and
replication passwords and the TLS private key travel as secret variables (encrypted in state, redacted from
run errors, ``no_log`` in the role); the primary and the replica share one server certificate (both
addresses in its SAN), so one key serves both.

``server`` is what the tier's dynamic resources need to reach the primary (see
:class:`modules.postgres.client.ServerTarget`): a secret output, as it carries the admin password.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

import pulumi

from modules.ansible.resources import DEFAULT_TIMEOUT, AnsiblePlaybook
from modules.errors import ValidationError

PLAYBOOK = "postgresql.yml"
DEFAULT_PORT = 5432
ADMIN_USER = "postgres"
REPLICATION_USER = "replicator"
_SLOT_RE = re.compile(r"[^a-z0-9_]+")


def slot_name(replica_name: str) -> str:
    """The physical replication slot a replica streams from: its host name as a slot name."""
    return _SLOT_RE.sub("_", replica_name.lower()).strip("_")[:63] or "replica"


def _networks_problems(networks: list[str]) -> list[str]:
    reasons = []
    for network in networks:
        try:
            ipaddress.ip_network(str(network), strict=False)
        except ValueError:
            reasons.append(f"allowed_networks: {network!r} is not a network (CIDR such as 10.0.0.0/24)")
        else:
            if "/" not in str(network):
                reasons.append(f"allowed_networks: {network!r} needs a prefix length (e.g. /32)")
    return reasons


def playbook_vars(
    *,
    tls_certificate: str,
    tls_ca_certificate: str,
    allowed_networks: list[str],
    port: int = DEFAULT_PORT,
    memory_mb: int = 0,
    max_connections: int = 200,
    archive_command: str = "",
) -> dict[str, Any]:
    """The role's plain variables shared by every host; raises :class:`ValidationError` naming every bad one."""
    reasons = _networks_problems(list(allowed_networks or []))
    if not isinstance(port, int) or not 1 <= port <= 65535:
        reasons.append(f"port: {port!r} must be between 1 and 65535")
    if not isinstance(memory_mb, int) or memory_mb < 0:
        reasons.append(f"memory_mb: {memory_mb!r} must be 0 (the host's memory) or a size in MiB")
    if not isinstance(max_connections, int) or max_connections < 10:
        reasons.append(f"max_connections: {max_connections!r} must be at least 10")
    for key, pem in (("tls_certificate", tls_certificate), ("tls_ca_certificate", tls_ca_certificate)):
        if "-----BEGIN CERTIFICATE-----" not in str(pem or ""):
            reasons.append(f"{key}: must be a PEM certificate")
    if reasons:
        raise ValidationError("PostgresHost", reasons)
    return {
        "postgresql_port": port,
        "postgresql_tls_certificate": tls_certificate,
        "postgresql_tls_ca_certificate": tls_ca_certificate,
        "postgresql_allowed_networks": [str(n) for n in allowed_networks],
        "postgresql_memory_mb": memory_mb,
        "postgresql_max_connections": max_connections,
        "postgresql_archive_command": archive_command,
        "postgresql_replication_user": REPLICATION_USER,
        "postgresql_primary_port": port,
    }


def host_vars(primary: Mapping[str, Any], replica: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per-host variables: which host is the primary, which the replica, and who streams from whom."""
    for host in (primary, replica):
        if host is not None:
            try:
                ipaddress.ip_address(str(host["ip"]))
            except (KeyError, ValueError):
                raise ValidationError(
                    "PostgresHost", [f"host {host.get('name')!r}: ip must be an IP address"]
                ) from None
    values: dict[str, dict[str, Any]] = {
        primary["name"]: {
            "postgresql_role": "primary",
            "postgresql_listen_addresses": [str(primary["ip"]), "127.0.0.1"],
            "postgresql_replica_addresses": [str(replica["ip"])] if replica else [],
            "postgresql_replication_slots": [slot_name(replica["name"])] if replica else [],
        }
    }
    if replica is not None:
        values[replica["name"]] = {
            "postgresql_role": "replica",
            "postgresql_listen_addresses": [str(replica["ip"]), "127.0.0.1"],
            "postgresql_primary_host": str(primary["ip"]),
            "postgresql_replication_slot": slot_name(replica["name"]),
        }
    return values


def secret_vars(
    *, admin_password: str, tls_private_key: str, replication_password: str = ""
) -> dict[str, Any]:
    """The role's secret variables. Reasons never quote a value."""
    reasons = []
    if not admin_password or len(admin_password) < 16:
        reasons.append("admin_password: must have at least 16 characters")
    if replication_password and (
        len(replication_password) < 16 or re.search(r"[:\\\s]", replication_password)
    ):
        reasons.append("replication_password: at least 16 characters, without ':', '\\' or spaces")
    if "PRIVATE KEY-----" not in (tls_private_key or ""):
        reasons.append("tls_private_key: must be a PEM private key")
    if reasons:
        raise ValidationError("PostgresHost", reasons)
    return {
        "postgresql_admin_password": admin_password,
        "postgresql_tls_private_key": tls_private_key,
        "postgresql_replication_password": replication_password,
    }


class PostgresHost(pulumi.ComponentResource):
    """Converges ``primary`` (and ``replica``, each ``{name, ip, fqdn?}``) into a tier's PostgreSQL server.

    ``connection`` is the playbook's SSH settings; the passwords and ``tls_private_key`` should be Pulumi
    secrets (they are made secret here in any case). ``server`` (secret) is the admin connection of the
    primary for :class:`modules.postgres.component.PostgresTier`; ``replica_address`` is None without one.
    ``backup`` (the role's plain ``postgresql_backup_*`` variables, see modules/postgres/backup/fleet.py) and
    ``backup_secrets`` (its S3 keys and cipher pass, secret) make the primary back up with pgBackRest.
    """

    host_results: pulumi.Output[dict[str, dict[str, int]]]
    address: pulumi.Output[str]
    port: pulumi.Output[int]

    def __init__(
        self,
        name: str,
        *,
        primary: pulumi.Input[Mapping[str, Any]],
        admin_password: pulumi.Input[str],
        tls_certificate: pulumi.Input[str],
        tls_private_key: pulumi.Input[str],
        tls_ca_certificate: pulumi.Input[str],
        allowed_networks: pulumi.Input[list[str]],
        replica: pulumi.Input[Mapping[str, Any]] | None = None,
        replication_password: pulumi.Input[str] | None = None,
        port: int = DEFAULT_PORT,
        memory_mb: int = 0,
        max_connections: int = 200,
        archive_command: str = "",
        backup: Mapping[str, Any] | None = None,
        backup_secrets: pulumi.Input[Mapping[str, str]] | None = None,
        connection: dict[str, Any] | None = None,
        timeout_seconds: int = DEFAULT_TIMEOUT,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("penguinmails:ansible:PostgresHost", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        first = pulumi.Output.from_input(primary)
        second = pulumi.Output.from_input(replica) if replica is not None else pulumi.Output.from_input(None)
        hosts = pulumi.Output.all(first, second).apply(lambda v: [dict(h) for h in v if h])
        per_host = pulumi.Output.all(first, second).apply(lambda v: host_vars(v[0], v[1]))
        plain = pulumi.Output.all(tls_certificate, tls_ca_certificate, allowed_networks).apply(
            lambda v: (
                playbook_vars(
                    tls_certificate=v[0],
                    tls_ca_certificate=v[1],
                    allowed_networks=list(v[2]),
                    port=port,
                    memory_mb=memory_mb,
                    max_connections=max_connections,
                    archive_command=archive_command,
                )
                | dict(backup or {})
            )
        )
        secrets = pulumi.Output.secret(
            pulumi.Output.all(
                admin_password, tls_private_key, replication_password or "", backup_secrets or {}
            ).apply(
                lambda v: (
                    secret_vars(admin_password=v[0], tls_private_key=v[1], replication_password=v[2])
                    | dict(v[3] or {})
                )
            )
        )
        self.playbook = AnsiblePlaybook(
            f"{name}-playbook",
            hosts=hosts,
            playbook=PLAYBOOK,
            vars=plain,
            secret_vars=secrets,
            host_vars=per_host,
            connection=connection or {},
            timeout_seconds=timeout_seconds,
            opts=child,
        )
        self.host_results = self.playbook.host_results
        self.address = first.apply(lambda h: str(h["ip"]))
        self.replica_address = (
            second.apply(lambda h: str(h["ip"]) if h else None) if replica is not None else None
        )
        self.port = pulumi.Output.from_input(port)
        self.ca_certificate = pulumi.Output.from_input(tls_ca_certificate)
        # Known only once the playbook ran: the tier's resources wait for a converged server.
        self.server = pulumi.Output.secret(
            pulumi.Output.all(
                self.address, admin_password, self.ca_certificate, self.playbook.host_results
            ).apply(
                lambda v: {
                    "host": v[0],
                    "port": port,
                    "user": ADMIN_USER,
                    "password": v[1],
                    "sslmode": "verify-full",
                    "sslrootcert": v[2],
                }
            )
        )
        self.register_outputs({"host_results": self.host_results, "address": self.address, "port": self.port})
