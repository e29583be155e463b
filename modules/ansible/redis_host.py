"""``RedisHost``: the queue's Redis on its own VPS, converged with the ``redis`` role during ``pulumi up``.

One :class:`AnsiblePlaybook` over ``playbooks/redis.yml`` for one host. The queue user's ACL rules come
from :mod:`modules.redis.acl`, the same allow-list :class:`modules.redis.resources.RedisUser` sends, and
travel with the passwords and the TLS private key as secret variables: encrypted in state, redacted from
run errors, ``no_log`` in the role. Plain variables (addresses, port, memory limit, the public
certificate and CA) are the only ones the playbook's outputs keep; passwords reach the host as SHA-256
only (``#<hash>`` lines of ``/etc/redis/users.acl``).

The queue user is owned by this host's ACL file: a stack that deploys Redis this way must not also
declare a :class:`RedisUser` for the same user (it would refuse the existing user on create).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

import pulumi

from modules.ansible.resources import DEFAULT_TIMEOUT, AnsiblePlaybook
from modules.errors import ValidationError
from modules.redis import acl

PLAYBOOK = "redis.yml"
DEFAULT_TLS_PORT = 6380
DEFAULT_MAXMEMORY = "512mb"
_MAXMEMORY_RE = re.compile(r"^[0-9]+([kmg]b)?$")


def acl_users(queue_user: str, queue_password: str, key_prefixes: list[str]) -> list[dict[str, Any]]:
    """The role's ``redis_acl_users``: the queue user with exactly the queue allow-list on its prefixes."""
    rules = acl.queue_user_rules(queue_user, acl.password_sha256(queue_password), key_prefixes)
    return [{"name": queue_user, "rules": rules}]


def playbook_vars(
    *,
    bind_addresses: list[str],
    tls_certificate: str,
    tls_ca_certificate: str,
    tls_port: int = DEFAULT_TLS_PORT,
    maxmemory: str = DEFAULT_MAXMEMORY,
) -> dict[str, Any]:
    """The role's plain variables; raises :class:`ValidationError` naming every bad one."""
    reasons = []
    if not bind_addresses:
        reasons.append("bind_addresses: must list at least one address")
    for address in bind_addresses or []:
        try:
            ipaddress.ip_address(str(address).removeprefix("-"))
        except ValueError:
            reasons.append(f"bind_addresses: {address!r} is not an IP address")
    if not isinstance(tls_port, int) or not 1 <= tls_port <= 65535:
        reasons.append(f"tls_port: {tls_port!r} must be between 1 and 65535")
    if not _MAXMEMORY_RE.match(str(maxmemory)):
        reasons.append(f"maxmemory: {maxmemory!r} must be bytes or <n>kb/mb/gb")
    for key, pem in (("tls_certificate", tls_certificate), ("tls_ca_certificate", tls_ca_certificate)):
        if "-----BEGIN CERTIFICATE-----" not in str(pem or ""):
            reasons.append(f"{key}: must be a PEM certificate")
    if reasons:
        raise ValidationError("RedisHost", reasons)
    return {
        "redis_bind_addresses": [str(a) for a in bind_addresses],
        "redis_tls_port": tls_port,
        "redis_maxmemory": str(maxmemory),
        "redis_tls_certificate": tls_certificate,
        "redis_tls_ca_certificate": tls_ca_certificate,
        "redis_tls_auth_clients": "no",
    }


def secret_vars(
    *,
    admin_password: str,
    tls_private_key: str,
    queue_user: str,
    queue_password: str,
    key_prefixes: list[str],
) -> dict[str, Any]:
    """The role's secret variables. Reasons never quote a value."""
    reasons = []
    if not admin_password or len(admin_password) < 16:
        reasons.append("admin_password: must have at least 16 characters")
    if not queue_password or len(queue_password) < 16:
        reasons.append("queue_password: must have at least 16 characters")
    if "PRIVATE KEY-----" not in (tls_private_key or ""):
        reasons.append("tls_private_key: must be a PEM private key")
    if reasons:
        raise ValidationError("RedisHost", reasons)
    return {
        "redis_admin_password": admin_password,
        "redis_tls_private_key": tls_private_key,
        "redis_acl_users": acl_users(queue_user, queue_password, key_prefixes),
    }


class RedisHost(pulumi.ComponentResource):
    """Converges ``host`` (``{name, ip, fqdn?}``) into the queue's Redis: TLS only, ACL users, AOF.

    ``connection`` is the playbook's SSH settings (``user``, ``private_key_file`` as a path,
    ``host_key_checking``); the passwords and ``tls_private_key`` should be Pulumi secrets (they are
    made secret here in any case).
    """

    host_results: pulumi.Output[dict[str, dict[str, int]]]
    address: pulumi.Output[str]
    port: pulumi.Output[int]

    def __init__(
        self,
        name: str,
        *,
        host: pulumi.Input[Mapping[str, Any]],
        admin_password: pulumi.Input[str],
        queue_user: str,
        queue_password: pulumi.Input[str],
        key_prefixes: list[str],
        tls_certificate: pulumi.Input[str],
        tls_private_key: pulumi.Input[str],
        tls_ca_certificate: pulumi.Input[str],
        bind_addresses: pulumi.Input[list[str]] | None = None,
        tls_port: int = DEFAULT_TLS_PORT,
        maxmemory: str = DEFAULT_MAXMEMORY,
        connection: dict[str, Any] | None = None,
        timeout_seconds: int = DEFAULT_TIMEOUT,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("penguinmails:ansible:RedisHost", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        node = pulumi.Output.from_input(host)
        hosts = node.apply(lambda h: [dict(h)])
        # By default Redis listens on the host's own address only.
        bind = (
            pulumi.Output.from_input(bind_addresses)
            if bind_addresses is not None
            else node.apply(lambda h: [str(h["ip"])])
        )
        plain = pulumi.Output.all(bind, tls_certificate, tls_ca_certificate).apply(
            lambda v: playbook_vars(
                bind_addresses=list(v[0]),
                tls_certificate=v[1],
                tls_ca_certificate=v[2],
                tls_port=tls_port,
                maxmemory=maxmemory,
            )
        )
        secrets = pulumi.Output.secret(
            pulumi.Output.all(admin_password, tls_private_key, queue_password).apply(
                lambda v: secret_vars(
                    admin_password=v[0],
                    tls_private_key=v[1],
                    queue_user=queue_user,
                    queue_password=v[2],
                    key_prefixes=list(key_prefixes),
                )
            )
        )
        self.playbook = AnsiblePlaybook(
            f"{name}-playbook",
            hosts=hosts,
            playbook=PLAYBOOK,
            vars=plain,
            secret_vars=secrets,
            connection=connection or {},
            timeout_seconds=timeout_seconds,
            opts=child,
        )
        self.host_results = self.playbook.host_results
        self.address = node.apply(lambda h: str(h["ip"]))
        self.port = pulumi.Output.from_input(tls_port)
        self.register_outputs({"host_results": self.host_results, "address": self.address, "port": self.port})
