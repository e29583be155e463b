"""A Route 53 backend with the RFC 2136 client's interface (``transfer``, ``update``), through boto3.

Route 53 changes whole RRsets, so each touched RRset becomes a ``DELETE`` of its exact live content (the
compare-and-swap: Route 53 refuses the whole batch when the RRset changed since it was read) followed by a
``CREATE`` of the new content, foreign values included. A run is one change batch per zone (split only
past Route 53's 1,000 changes per batch). Credentials come from boto3's usual chain (``AWS_*`` variables,
profile, instance role). ``endpoint_url`` points it elsewhere (moto in tests); the record-set provider
passes ``PENGUINMAILS_ROUTE53_ENDPOINT`` on a dev stack only.
"""

from __future__ import annotations

import os
from typing import Any

import dns.exception
import dns.rdata
import dns.rdataclass

from modules.dns.errors import (
    DnsAuthError,
    DnsConcurrentChange,
    DnsError,
    DnsUnreachable,
    DnsUpdateFailed,
    DnsZoneNotServed,
)
from modules.dns.records import split_txt
from modules.dns.rfc2136 import Change, Counters, LiveRRset, LiveZone, Prerequisite

MAX_CHANGES = 1000
ENDPOINT_ENV = "PENGUINMAILS_ROUTE53_ENDPOINT"
_AUTH_CODES = {"AccessDenied", "InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException"}


def to_route53(rtype: str, value: str) -> str:
    """A canonical value in Route 53's presentation (TXT: quoted strings of at most 255 bytes)."""
    if rtype != "TXT":
        return value
    pieces = []
    for piece in split_txt(value):
        text = piece.decode("utf-8", errors="backslashreplace").replace("\\", "\\\\").replace('"', '\\"')
        pieces.append(f'"{text}"')
    return " ".join(pieces)


def from_route53(rtype: str, value: str) -> str:
    if rtype == "TXT":
        try:
            rdata = dns.rdata.from_text(dns.rdataclass.IN, "TXT", value)
        except dns.exception.DNSException:
            return value
        return b"".join(rdata.strings).decode("utf-8", errors="backslashreplace")
    if rtype in ("CNAME", "MX", "PTR", "NS"):
        text = value.strip().lower()
        return text if text.endswith(".") else text + "."
    return value.strip()


class Route53Client:
    """Same surface as :class:`~modules.dns.rfc2136.Rfc2136Client`; build it inside provider methods."""

    def __init__(self, zone_id: str | None = None, endpoint_url: str | None = None, timeout: float = 20.0):
        import boto3
        from botocore.config import Config

        self.zone_id = zone_id
        self.where = endpoint_url or "route53"
        self.counters = Counters()
        # The RRsets as last read, verbatim: a DELETE must repeat them exactly (values in their order).
        self._read: dict[tuple[str, str], dict[str, Any]] = {}
        self._client = boto3.client(
            "route53",
            endpoint_url=endpoint_url or None,
            region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 3}),
        )

    def _call(self, action: str, zone: str, fn) -> Any:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        try:
            return fn()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            message = exc.response.get("Error", {}).get("Message", "")
            if code in _AUTH_CODES:
                raise DnsAuthError(
                    f"Route 53 refused the credentials for {action} of zone {zone} ({code})"
                ) from None
            if code == "NoSuchHostedZone":
                raise DnsZoneNotServed(
                    f"Route 53 has no hosted zone {zone} ({self.zone_id or 'looked up'})"
                ) from None
            if code in ("InvalidChangeBatch", "InvalidInput", "PriorRequestNotComplete"):
                raise DnsConcurrentChange(
                    f"{action} of zone {zone}: Route 53 refused the change batch ({code}: {message[:200]}); "
                    "the zone probably changed since it was read; nothing was applied, run again"
                ) from None
            raise DnsUpdateFailed(
                f"{action} of zone {zone} at Route 53 failed: {code}: {message[:200]}"
            ) from None
        except NoCredentialsError:
            raise DnsAuthError(
                f"no AWS credentials for {action} of zone {zone} (set AWS_ACCESS_KEY_ID …)"
            ) from None
        except EndpointConnectionError:
            raise DnsUnreachable(f"{action} of zone {zone}: no answer from {self.where}") from None
        except BotoCoreError as exc:
            raise DnsError(f"{action} of zone {zone} at Route 53 failed: {type(exc).__name__}") from None

    def hosted_zone_id(self, zone: str) -> str:
        if self.zone_id:
            return self.zone_id
        self.counters.queries += 1
        found = self._call(
            "lookup",
            zone,
            lambda: self._client.list_hosted_zones_by_name(DNSName=zone + ".", MaxItems="1")["HostedZones"],
        )
        if not found or found[0]["Name"].rstrip(".").lower() != zone:
            raise DnsZoneNotServed(f"Route 53 has no hosted zone named {zone}")
        self.zone_id = found[0]["Id"]
        return self.zone_id

    def transfer(self, zone: str) -> LiveZone:
        zone_id = self.hosted_zone_id(zone)
        live = LiveZone(zone)
        paginator = self._client.get_paginator("list_resource_record_sets")

        def read() -> None:
            for page in paginator.paginate(HostedZoneId=zone_id):
                self.counters.transfers += 1
                for rrset in page["ResourceRecordSets"]:
                    if "ResourceRecords" not in rrset or rrset.get("SetIdentifier"):
                        continue  # alias and routing-policy records are never ours
                    name = rrset["Name"].replace("\\052", "*").rstrip(".").lower()
                    values = tuple(
                        sorted(from_route53(rrset["Type"], r["Value"]) for r in rrset["ResourceRecords"])
                    )
                    live.rrsets[(name, rrset["Type"])] = LiveRRset(int(rrset.get("TTL", 0)), values)
                    self._read[(name, rrset["Type"])] = {
                        key: rrset[key] for key in ("Name", "Type", "TTL", "ResourceRecords")
                    }

        self._call("read", zone, read)
        return live

    def build_batches(
        self, changes: list[Change], prerequisites: list[Prerequisite]
    ) -> list[list[dict[str, Any]]]:
        """RR-level changes → RRset-level DELETE (exact live content) + CREATE (new content) pairs."""
        live = {(p.name, p.type): p for p in prerequisites}
        groups: dict[tuple[str, str], list[Change]] = {}
        for change in changes:
            groups.setdefault((change.name, change.type), []).append(change)
        batches: list[list[dict[str, Any]]] = [[]]
        for key in sorted(groups):
            name, rtype = key
            before = live.get(key)
            old_values = set(before.values) if before else set()
            new_values = set(old_values)
            ttl = before.ttl if before else 0
            for change in groups[key]:
                if change.op == "delete":
                    new_values.discard(change.value)
                else:
                    new_values.add(change.value)
                    ttl = change.ttl
            pair = []
            if old_values:
                pair.append(self._delete(name, rtype, before))
            if new_values:
                pair.append(_change("CREATE", name, rtype, ttl, new_values))
            if len(batches[-1]) + len(pair) > MAX_CHANGES:
                batches.append([])
            batches[-1].extend(pair)
        return [batch for batch in batches if batch]

    def _delete(self, name: str, rtype: str, before: Prerequisite) -> dict[str, Any]:
        """The exact RRset we read when it is still what the plan expects, else the plan's version of it."""
        read = self._read.get((name, rtype))
        if read is not None:
            values = {from_route53(rtype, r["Value"]) for r in read["ResourceRecords"]}
            if values == set(before.values) and int(read["TTL"]) == before.ttl:
                return {"Action": "DELETE", "ResourceRecordSet": read}
        return _change("DELETE", name, rtype, before.ttl, before.values)

    def update(self, zone: str, changes: list[Change], prerequisites: list[Prerequisite] = ()) -> int:
        batches = self.build_batches(list(changes), list(prerequisites))
        if not batches:
            return 0
        zone_id = self.hosted_zone_id(zone)
        for batch in batches:
            self.counters.updates += 1
            self._call(
                "update",
                zone,
                lambda batch=batch: self._client.change_resource_record_sets(
                    HostedZoneId=zone_id,
                    ChangeBatch={"Comment": "penguinmails DnsRecordSet", "Changes": batch},
                ),
            )
        return len(batches)


def _change(action: str, name: str, rtype: str, ttl: int, values) -> dict[str, Any]:
    return {
        "Action": action,
        "ResourceRecordSet": {
            "Name": name + ".",
            "Type": rtype,
            "TTL": int(ttl),
            "ResourceRecords": [{"Value": to_route53(rtype, value)} for value in sorted(values)],
        },
    }
