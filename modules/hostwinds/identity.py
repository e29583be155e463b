"""``FleetIdentity``: the random part of every label a fleet gives its servers and keys.

Labels used to be ``<stack>-<resource name>``: anyone could carry one, so a person's server or another
checkout's ``dev`` stack was adopted, changed and terminated as ours. The fix is a random tag, chosen once
in ``check`` (like Pulumi's auto-naming) and kept in the stack's state from then on. Every node's label
ends in it, so

* nobody else's server can match one of our labels by accident, and a label found on the account is
  ours to adopt (after a lost answer, or an order whose create failed),
* a node's label is known before it is ordered and stays the same across runs, so the next ``up`` finds
  an order the previous one could not wait for, and
* ``penguinmails fleet orphans`` can list what carries the stack's tag but is not in its state.

The resource owns nothing on the account and never calls the API.
"""

from __future__ import annotations

import re
import secrets
import string
from typing import Any

import pulumi
import pulumi.dynamic as dynamic

TAG_LENGTH = 10
_ALPHABET = string.ascii_lowercase + string.digits
_TAG = re.compile(rf"^[a-z0-9]{{{TAG_LENGTH}}}$")


def new_tag() -> str:
    """Ten random letters and digits (about 51 bits): a label nobody else will choose."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(TAG_LENGTH))


def is_tag(value: Any) -> bool:
    return isinstance(value, str) and bool(_TAG.match(value))


class FleetIdentityProvider(dynamic.ResourceProvider):
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        tag = (olds or {}).get("tag") or news.get("tag") or new_tag()
        failures = [] if is_tag(tag) else [dynamic.CheckFailure("tag", f"must be {TAG_LENGTH} of [a-z0-9]")]
        return dynamic.CheckResult({**news, "tag": tag}, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        return dynamic.DiffResult(changes=olds.get("tag") != news.get("tag"), replaces=["tag"])

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        return dynamic.CreateResult(id_=props["tag"], outs={"tag": props["tag"], "stack": props.get("stack")})

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        return dynamic.ReadResult(id_=id_, outs={**props, "tag": props.get("tag") or id_})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


class FleetIdentity(dynamic.Resource, module="hostwinds", name="FleetIdentity"):
    """The fleet's random label tag (``tag``), kept in state for the life of the stack."""

    tag: pulumi.Output[str]

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__(FleetIdentityProvider(), name, {"tag": None, "stack": pulumi.get_stack()}, opts)
