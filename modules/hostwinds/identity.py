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

The resource owns nothing on the account and never orders or changes anything. Its ``delete`` runs after
every node's (they depend on it) and waits until no instance carrying the tag is left on the account, so a
fleet's ``destroy`` terminates all nodes at once and waits once, not node by node.
"""

from __future__ import annotations

import re
import secrets
import string
import time
from typing import Any

import pulumi
import pulumi.dynamic as dynamic

from modules.hostwinds.client import HostwindsError
from modules.hostwinds.common import GONE_STATES, HostwindsProvider, Progress, poll_listing, status_of

TAG_LENGTH = 10
_ALPHABET = string.ascii_lowercase + string.digits
_TAG = re.compile(rf"^[a-z0-9]{{{TAG_LENGTH}}}$")


def new_tag() -> str:
    """Ten random letters and digits (about 51 bits): a label nobody else will choose."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(TAG_LENGTH))


def is_tag(value: Any) -> bool:
    return isinstance(value, str) and bool(_TAG.match(value))


class FleetIdentityProvider(HostwindsProvider):
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

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Wait until the servers the nodes terminated are gone; stop, naming them, if others carry the tag.

        A tagged server that is not being deleted is one no node of the state claimed (a crash's orphan,
        or one a person removed from state after its ownership check failed): it is not terminated here.
        The tag stays in state, so `penguinmails fleet orphans` can still find it.
        """
        tag = props.get("tag")
        if not is_tag(tag):
            return
        settings = self._settings()
        client = settings.client()
        who = f"FleetIdentity[{tag}]"
        progress = Progress(who)
        interval = min(settings.poll_interval, 0.5)
        while True:
            listing = poll_listing(client, settings, interval, since=progress.started)
            if listing is not None:
                tagged = {
                    sid: inst
                    for sid, inst in listing.items()
                    if str(inst.get("srvrname") or "").endswith(f"-{tag}")
                }
                if not tagged:
                    return
                kept = sorted(
                    f"{inst.get('srvrname')} ({sid})"
                    for sid, inst in tagged.items()
                    if status_of(inst) not in GONE_STATES
                )
                if kept:
                    raise HostwindsError(
                        f"{who}: {len(kept)} server(s) carry the fleet's tag but no node of the state claimed "
                        f"them: {', '.join(kept[:10])}. Check them (`penguinmails fleet orphans`), remove "
                        "them with `--terminate --yes` if they are ours, then run `pulumi destroy` again"
                    )
                if progress.elapsed() > settings.build_timeout:
                    raise HostwindsError(
                        f"{who}: {len(tagged)} terminated server(s) still listed after "
                        f"{settings.build_timeout:.0f} s; run `pulumi destroy` again"
                    )
                progress(f"waiting for {len(tagged)} terminated server(s) to be gone")
            time.sleep(interval)


class FleetIdentity(dynamic.Resource, module="hostwinds", name="FleetIdentity"):
    """The fleet's random label tag (``tag``), kept in state for the life of the stack."""

    tag: pulumi.Output[str]

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__(FleetIdentityProvider(), name, {"tag": None, "stack": pulumi.get_stack()}, opts)
