"""``AdditionalIps``: a node's extra sending IPv4s, proven to be its own, with their rDNS.

No Hostwinds API action buys an IPv4 (docs/hostwinds-api.md), so the operator buys one for a server in the
portal and declares it in ``fleet.additional_ips``. Before anything uses it this resource proves it: the
instance under the recorded service id must carry the recorded label and ``server_uuid`` and list the
address in ``get_instance_ips`` (not as its main IP). One declared address that fails the proof refuses the
whole node in one line naming node and IP, before any change. Then each address's PTR is set with
``set_rdns``; refresh reads the PTRs back, so a changed one shows as drift and the next ``up`` restores it.

It never calls ``delete_ip`` or ``change_main_ip`` (a released address cannot be had back; a main-IP change
costs money): an address dropped from the config is only no longer used, and the preview and the update
say it stays assigned (and billed) until released in the portal.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic as dynamic

from modules.hostwinds.client import HostwindsClient, HostwindsError, HostwindsNotFound, as_int
from modules.hostwinds.common import (
    GONE_STATES,
    HostwindsProvider,
    is_hostname,
    status_of,
    unknown,
    verify_owned,
)

_NAME_RE = re.compile(r"^ip[0-9]{1,2}$")
KEYS = ("node", "service_id", "label", "server_uuid", "ips")


@dataclass(frozen=True)
class AdditionalIp:
    """One declared address: its sending-IP name (ip2…), the address and its PTR host name."""

    name: str
    address: str
    rdns: str

    @classmethod
    def of(cls, row: dict[str, Any]) -> AdditionalIp:
        return cls(str(row["name"]), str(row["address"]), str(row["rdns"]).rstrip(".").lower())


def ip_failures(news: dict[str, Any]) -> list[dynamic.CheckFailure]:
    """Every problem with the declared addresses (values still unknown in a preview are skipped)."""
    ips = news.get("ips")
    if unknown(ips):
        return []
    if not isinstance(ips, list):
        return [dynamic.CheckFailure("ips", "must be a list of {name, address, rdns}")]
    reasons = []
    for position, row in enumerate(ips):
        if unknown(row):
            continue
        if not isinstance(row, dict) or not _NAME_RE.match(str(row.get("name", ""))):
            reasons.append(f"[{position}]: needs a name such as ip2")
            continue
        try:
            ipaddress.IPv4Address(str(row.get("address")))
        except ValueError:
            reasons.append(f"[{position}] {row['name']}: {row.get('address')!r} is not an IPv4 address")
        if not is_hostname(str(row.get("rdns", "")).rstrip(".").lower()):
            reasons.append(f"[{position}] {row['name']}: rdns {row.get('rdns')!r} is not a host name")
    addresses = [row.get("address") for row in ips if isinstance(row, dict)]
    if len(set(addresses)) != len(addresses):
        reasons.append("an address is declared twice")
    return [dynamic.CheckFailure("ips", reason) for reason in reasons]


def dropped(olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
    """Addresses the previous run used that the new inputs no longer declare."""
    new = {row.get("address") for row in news.get("ips") or [] if isinstance(row, dict)}
    return [row["address"] for row in olds.get("ips") or [] if row.get("address") not in new]


def _stays(who: str, sid: Any, addresses: list[str]) -> str:
    return (
        f"{who}: {', '.join(addresses)} no longer used for sending; still assigned to instance {sid} (and "
        "billed) until released in the Hostwinds portal (the toolkit never calls delete_ip)"
    )


class AdditionalIpsProvider(HostwindsProvider):
    """Proves the declared addresses are the instance's, then sets their PTRs; owns nothing on the account."""

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        inputs = dict(news)
        if isinstance(inputs.get("ips"), list):
            inputs["ips"] = [
                {**row, "rdns": str(row.get("rdns", "")).rstrip(".").lower()}
                if isinstance(row, dict)
                else row
                for row in inputs["ips"]
            ]
        gone = dropped(olds or {}, inputs)
        if gone:  # shown by the preview, before anything happens
            pulumi.log.warn(
                _stays(f"AdditionalIps[{inputs.get('node')}]", (olds or {}).get("service_id"), gone)
            )
        return dynamic.CheckResult(inputs, ip_failures(inputs))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = [k for k in KEYS if unknown(news.get(k)) or olds.get(k) != news.get(k)]
        return dynamic.DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def _prove(self, client: HostwindsClient, props: dict[str, Any], who: str) -> tuple[int, dict[str, str]]:
        """The instance is ours and lists every declared address; returns its id and each address's PTR."""
        sid = int(as_int(props["service_id"]))
        try:
            inst = client.instance_get(sid)
        except HostwindsNotFound:
            raise HostwindsError(f"{who}: instance {sid} no longer exists; run `pulumi refresh`") from None
        verify_owned(inst, props.get("label"), props.get("server_uuid"), who)
        rows = {row["ip"]: row for row in client.ips_get(sid)}
        for ip in (AdditionalIp.of(row) for row in props.get("ips") or []):
            if ip.address not in rows or ip.address == inst.get("main_ip"):
                listed = ", ".join(sorted(a for a in rows if a != inst.get("main_ip"))) or "none"
                raise HostwindsError(
                    f"{who}: {ip.address} is not an additional IP of instance {sid} ({props.get('label')}) per "
                    f"get_instance_ips (it lists: {listed}); buy it for this server in the Hostwinds portal or "
                    "remove it from fleet.additional_ips. Nothing was changed"
                )
        return sid, {a: str(r.get("rdns") or "").rstrip(".").lower() for a, r in rows.items()}

    def _apply(self, props: dict[str, Any]) -> dict[str, Any]:
        settings = self._settings()
        who = f"AdditionalIps[{props.get('node')}]"
        self._same_endpoint(props, settings, who)
        client = settings.client()
        sid, live = self._prove(client, props, who)
        for ip in (AdditionalIp.of(row) for row in props.get("ips") or []):
            if live.get(ip.address) != ip.rdns:
                client.rdns_set(sid, ip.address, ip.rdns)
                pulumi.log.info(f"{who}: PTR of {ip.address} set to {ip.rdns}")
        return {**{k: props.get(k) for k in KEYS}, "endpoint": settings.endpoint}

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        outs = self._apply(props)
        return dynamic.CreateResult(id_=f"{outs['service_id']}-ips", outs=outs)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        outs = self._apply({**news, "endpoint": olds.get("endpoint")})
        gone = dropped(olds, news)
        if gone:
            pulumi.log.warn(_stays(f"AdditionalIps[{news.get('node')}]", olds.get("service_id"), gone))
        return dynamic.UpdateResult(outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        """Live PTRs become the recorded inputs (drift shows on the next preview); an address the instance
        no longer lists drops out, so the next ``up`` tries to prove it again and says why it cannot."""
        settings = self._settings()
        who = f"AdditionalIps[{props.get('node')}]"
        self._same_endpoint(props, settings, who)
        client = settings.client()
        sid = int(as_int(props["service_id"]))
        try:
            inst = client.instance_get(sid)
        except HostwindsNotFound:
            return dynamic.ReadResult(id_="", outs={})
        if status_of(inst) in GONE_STATES:
            return dynamic.ReadResult(id_="", outs={})
        verify_owned(inst, props.get("label"), props.get("server_uuid"), who)
        rows = {row["ip"]: row for row in client.ips_get(sid)}
        ips = []
        for row in props.get("ips") or []:
            if row["address"] in rows and row["address"] != inst.get("main_ip"):
                live = rows[row["address"]].get("rdns")
                ips.append({**row, "rdns": row["rdns"] if live is None else str(live).rstrip(".").lower()})
        outs = {**props, "ips": ips}
        return dynamic.ReadResult(id_=id_, outs=outs, inputs={k: outs.get(k) for k in KEYS})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        addresses = [row["address"] for row in props.get("ips") or []]
        if addresses:
            pulumi.log.warn(_stays(f"AdditionalIps[{props.get('node')}]", props.get("service_id"), addresses))


class AdditionalIps(dynamic.Resource, module="hostwinds", name="AdditionalIps"):
    """A node's declared additional IPv4s (``ips``: ``[{name, address, rdns}]``), proven and with rDNS."""

    ips: pulumi.Output[list[dict[str, str]]]

    def __init__(
        self,
        name: str,
        node: str,
        service_id: pulumi.Input[int],
        label: pulumi.Input[str],
        server_uuid: pulumi.Input[str],
        ips: list[AdditionalIp],
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "node": node,
            "service_id": service_id,
            "label": label,
            "server_uuid": server_uuid,
            "ips": [{"name": ip.name, "address": ip.address, "rdns": ip.rdns} for ip in ips],
            "endpoint": None,
        }
        super().__init__(AdditionalIpsProvider(), name, props, opts)
