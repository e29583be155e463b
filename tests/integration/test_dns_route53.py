"""The Route 53 backend against moto in server mode (a real HTTP endpoint; boto3 talks to it over HTTP)."""

from __future__ import annotations

import os

import boto3
import pytest
from moto.server import ThreadedMotoServer

from modules.dns.changes import plan_changes
from modules.dns.dkim import dkim_txt, generate_key
from modules.dns.records import Record
from modules.dns.resources import DnsRecordSetProvider
from modules.dns.route53 import ENDPOINT_ENV, Route53Client

PUBLIC = generate_key()[1]


@pytest.fixture(scope="module")
def route53():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    patch = pytest.MonkeyPatch()
    patch.setenv(ENDPOINT_ENV, f"http://{host}:{port}")
    patch.setenv("AWS_ACCESS_KEY_ID", "moto")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "moto")
    client = boto3.client("route53", endpoint_url=f"http://{host}:{port}", region_name="us-east-1")
    yield client
    patch.undo()
    server.stop()


def hosted_zone(route53, name: str) -> str:
    return route53.create_hosted_zone(Name=name + ".", CallerReference=name)["HostedZone"]["Id"]


def rrsets(route53, zone_id: str) -> dict:
    return {
        (r["Name"].rstrip("."), r["Type"]): sorted(v["Value"] for v in r["ResourceRecords"])
        for r in route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    }


def props(zone, records, **extra):
    return {
        "zone": zone,
        "backend": "route53",
        "route53_zone_id": None,
        "records": records,
        "server": "127.0.0.1",
        "port": 53,
        "tsig_key_name": "unused",
        "tsig_algorithm": "hmac-sha256",
        "max_change_share": 0.5,
        "adopt_existing": False,
        "resolvers": [],
        "default_ttl": 300,
        "force": False,
        **extra,
    }


RECORDS = [
    {"name": "r53.test", "type": "MX", "values": ["10 mail.r53.test"]},
    {"name": "mail.r53.test", "type": "A", "values": ["192.0.2.1"]},
    {"name": "r53.test", "type": "TXT", "values": ["v=spf1 ip4:192.0.2.1 ~all"]},
    {"name": "pm1._domainkey.r53.test", "type": "TXT", "values": [dkim_txt(PUBLIC)]},
]


def test_route53_apply_noop_drift_and_foreign_records(route53):
    zone_id = hosted_zone(route53, "r53.test")
    route53.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": "www.r53.test.",
                        "Type": "A",
                        "TTL": 60,
                        "ResourceRecords": [{"Value": "192.0.2.80"}],
                    },
                },
            ]
        },
    )
    provider = DnsRecordSetProvider()
    inputs = provider.check({}, props("r53.test", RECORDS)).inputs
    created = provider.create(inputs)
    live = rrsets(route53, zone_id)
    assert live[("mail.r53.test", "A")] == ["192.0.2.1"]
    dkim_value = live[("pm1._domainkey.r53.test", "TXT")][0]
    assert dkim_value.count('" "') == 1, "a 2048-bit key is published as two quoted strings"
    assert live[("www.r53.test", "A")] == ["192.0.2.80"]

    refreshed = provider.read("r53.test", created.outs)
    assert provider.diff("r53.test", refreshed.outs, inputs).changes is False

    # Out-of-band: our SPF replaced, a foreign TXT added beside it.
    route53.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": "r53.test.",
                        "Type": "TXT",
                        "TTL": 300,
                        "ResourceRecords": [{"Value": '"v=spf1 +all"'}, {"Value": '"site=keep"'}],
                    },
                },
            ]
        },
    )
    drifted = provider.read("r53.test", created.outs)
    assert provider.diff("r53.test", drifted.outs, inputs).changes is True
    updated = provider.update("r53.test", drifted.outs, inputs)
    assert rrsets(route53, zone_id)[("r53.test", "TXT")] == ['"site=keep"', '"v=spf1 ip4:192.0.2.1 ~all"']

    provider.delete("r53.test", updated.outs)
    live = rrsets(route53, zone_id)
    assert live[("r53.test", "TXT")] == ['"site=keep"']
    assert live[("www.r53.test", "A")] == ["192.0.2.80"]
    assert ("mail.r53.test", "A") not in live


def test_route53_run_is_one_change_batch_and_a_rerun_sends_none(route53):
    hosted_zone(route53, "batch.test")
    client = Route53Client(endpoint_url=os.environ[ENDPOINT_ENV])
    desired = [
        Record.from_dict(
            {
                **r,
                "name": r["name"].replace("r53", "batch"),
                "values": [v.replace("r53", "batch") for v in r["values"]],
            },
            300,
        )
        for r in RECORDS
    ]
    plan = plan_changes("batch.test", desired, set(), client.transfer("batch.test"))
    assert client.update("batch.test", plan.changes, plan.prerequisites) == 1
    again = plan_changes("batch.test", desired, set(plan.owned), client.transfer("batch.test"))
    assert again.empty and client.update("batch.test", again.changes, again.prerequisites) == 0
    assert client.counters.updates == 1
    # moto checks a DELETE against its journal of past changes, not against the current RRset as Route 53
    # does, so the compare-and-swap refusal is covered by the BIND tests and the batch-building unit test.
