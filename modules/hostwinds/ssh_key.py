"""``SshKey``: a public key registered on the Hostwinds account, named in ``add_instance``'s ``keys[]``.

The fleet names its keys ``<stack>-<fleet>-<fingerprint>-<fleet tag>``, so another stack's key of the same
name is never adopted or deleted as ours.
"""

from __future__ import annotations

import re
from typing import Any

import pulumi
import pulumi.dynamic as dynamic

from modules.hostwinds.client import (
    HostwindsClient,
    HostwindsError,
    HostwindsInvalidRequest,
    HostwindsNotFound,
    HostwindsTransient,
)
from modules.hostwinds.common import HostwindsProvider, unknown

_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SshKeyProvider(HostwindsProvider):
    """An account SSH key (``add_ssh_key``); instances name it in ``add_instance``'s ``keys[]``."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures = []
        name = news.get("key_name")
        if not unknown(name) and not (isinstance(name, str) and _LABEL_RE.match(name)):
            failures.append(dynamic.CheckFailure("key_name", "1-64 letters, digits, '.', '_' or '-'"))
        key = news.get("public_key")
        if not unknown(key):
            words = key.split() if isinstance(key, str) else []
            if len(words) < 2 or not words[0].startswith(("ssh-", "ecdsa-")) or "\n" in key.strip():
                failures.append(
                    dynamic.CheckFailure(
                        "public_key", "must be one OpenSSH public key line ('ssh-ed25519 AAAA…')"
                    )
                )
        return dynamic.CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = [k for k in ("key_name", "public_key") if olds.get(k) != news.get(k)]
        # A new key under the same name must go first (names are unique on the account).
        return dynamic.DiffResult(
            changes=bool(changed), replaces=changed, delete_before_replace="key_name" not in changed
        )

    def _live(self, client: HostwindsClient, name: str) -> str | None:
        for row in client.ssh_key_list():
            if row.get("name") == name:
                return str(row.get("public_key") or row.get("key") or "").strip()
        return None

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        settings = self._settings()
        client = settings.client()
        name, key = props["key_name"], props["public_key"].strip()
        who = f"SshKey[{name}]"
        for attempt in range(1, 4):
            try:
                client.ssh_key_add(name, key)
                break
            except (HostwindsTransient, HostwindsInvalidRequest) as exc:
                problem = exc
            # The name may exist already: ours after a lost answer (adopt it), or someone else's (refuse).
            live = self._live(client, name)
            if live is not None:
                if live.split()[:2] != key.split()[:2]:
                    raise HostwindsError(f"{who}: a different key already has this name on the account")
                break
            if isinstance(problem, HostwindsInvalidRequest) or attempt == 3:
                raise HostwindsError(f"{who}: the key could not be added: {problem.message}")
        return dynamic.CreateResult(id_=name, outs={**props, "endpoint": settings.endpoint})

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        settings = self._settings()
        self._same_endpoint(props, settings, f"SshKey[{id_}]")
        live = self._live(settings.client(), id_)
        if live is None:
            return dynamic.ReadResult(id_="", outs={})
        outs = dict(props)
        if live.split()[:2] != str(props.get("public_key", "")).split()[:2]:
            outs["public_key"] = live
        return dynamic.ReadResult(id_=id_, outs=outs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        settings = self._settings()
        self._same_endpoint(props, settings, f"SshKey[{id_}]")
        try:
            settings.client().ssh_key_delete(id_)
        except HostwindsNotFound:
            pass


class SshKey(dynamic.Resource, module="hostwinds", name="SshKey"):
    """A public key registered on the Hostwinds account under ``key_name``."""

    key_name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        key_name: str,
        public_key: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__(
            SshKeyProvider(), name, {"key_name": key_name, "public_key": public_key, "endpoint": None}, opts
        )
