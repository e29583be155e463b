"""The real project through the real Pulumi engine: tenants' mail DNS published to a real BIND by RFC 2136.

One stack, one private BIND and one private Hostwinds simulator (memory backend): bad config refused at
preview with nothing sent; up publishes one update per zone and every check verifies; a second up sends
nothing; an out-of-band edit shows as drift after refresh and the next up repairs it; foreign records
survive up and destroy; no private key or TSIG secret in the state files or the output.
"""

from __future__ import annotations

import contextlib
import json
import uuid

import pytest
from pulumi import automation as auto

from modules.config.loader import validate_config
from modules.dns.generate import NodeAddresses, plan_mail_dns
from modules.dns.rfc2136 import Change
from modules.dns.verify import CHECKS, verify
from tests.support.dns import live, lookup, out_of_band, private_bind
from tests.support.engine import project_stack
from tests.support.hostwinds import private_simulator

pytestmark = pytest.mark.engine

ZONES = ["penguinmails.test", "acme.test", "18.198.in-addr.arpa"]


QUEUE_USER = f"pm-dns-{uuid.uuid4().hex[:10]}"


def stack_config(bind, sim, tenants):
    return {
        "environment": "dev",
        "redis": {"queue_user": QUEUE_USER, "port": 6390},
        "postgres": {tier: {"enabled": False} for tier in ("oltp", "content", "analytics", "queue")},
        "hostwinds": {"endpoint": sim.endpoint, "poll_interval_seconds": 0.5, "lost_answer_wait_seconds": 1},
        "fleet": {
            "nodes": 1,
            "rdns_domain": "fleet.penguinmails.test",
            "ssh_key_names": ["penguinmails-dev-operator"],
        },
        "dns": {
            "ttl": 600,
            "resolvers": [f"{bind.host}:{bind.port}"],
            "zones": [{"name": z, "port": bind.port, "tsig_key_name": bind.key_name} for z in ZONES],
        },
        "tenants": tenants,
        # penguinmails.test takes the DMARC reports (acme's rua): the report mailbox domain gets its MX.
        "mail": {"reports": {"domain": "penguinmails.test"}},
    }


TENANTS = [
    {
        "slug": "acme",
        "domains": [
            {
                "name": "acme.test",
                "dmarc": {"policy": "quarantine", "rua": ["mailto:dmarc@penguinmails.test"]},
            },
            {"name": "news.penguinmails.test", "dkim_selector": "n1"},
        ],
    }
]


def our_records(zone) -> dict:
    return {
        key: value
        for key, value in zone.rrsets.items()
        if key[1] not in ("SOA", "NS") and key[0] != "ns." + zone.zone
    }


def test_mail_dns_through_the_engine(tmp_path, devenv_env):
    with (
        private_bind(tmp_path / "bind", ZONES, key_name="pm-etest") as bind,
        private_simulator(tmp_path / "sim", build_seconds=0.5) as sim,
    ):
        out_of_band(
            bind,
            "acme.test",
            Change("add", "acme.test", "TXT", "site-verification=foreign", 600),
            Change("add", "www.acme.test", "A", "192.0.2.80", 600),
        )
        foreign = {k: v for k, v in our_records(live(bind, "acme.test")).items()}
        bad_tenants = json.loads(json.dumps(TENANTS))
        bad_tenants[0]["domains"][0]["spf_include"] = ["_spf.missing.penguinmails.test"]
        secret = bind.tsig_secret()
        stack = project_stack(
            tmp_path,
            "dnsetest",
            config=stack_config(bind, sim, bad_tenants),
            secrets={"tsigSecret": secret},
            extra_env=sim.env(),
        )
        try:
            _exercise(stack, bind, sim, secret, foreign, tmp_path)
        finally:
            with contextlib.suppress(auto.CommandError):
                stack.destroy(color="never")  # never leave the shared Redis user behind
        stack.workspace.remove_stack("dnsetest")


def _exercise(stack, bind, sim, secret, foreign, tmp_path):
    output: list[str] = []

    # Bad records are refused at preview, naming the domain and the record; nothing reaches the server.
    before = bind.update_messages()
    with pytest.raises(auto.CommandError) as error:
        stack.preview(color="never", on_output=output.append)
    message = str(error.value)
    assert (
        "acme.test: acme.test TXT (SPF): include:_spf.missing.penguinmails.test: "
        "_spf.missing.penguinmails.test does not exist" in message
    ), message
    assert bind.update_messages() == before

    # A first preview, while node addresses and keys are unknown, checks every record it can.
    stack.set_config("penguinmails:tenants", auto.ConfigValue(json.dumps(TENANTS)))
    preview = stack.preview(color="never", on_output=output.append)
    assert preview.change_summary.get("create", 0) >= len(ZONES)
    assert bind.update_messages() == before
    up = stack.up(color="never", on_output=output.append)
    assert up.summary.result == "succeeded"
    assert bind.update_messages() - before == len(ZONES), "one update message per zone"

    # What the server now publishes passes every check, PTR included (forward-confirmed).
    ip = up.outputs["fleet_nodes"].value[0]["ip"]
    deployment = stack.export_stack().deployment
    dkim = {
        (r["outputs"]["domain"], r["outputs"]["selector"]): r["outputs"]["public_key"]
        for r in deployment["resources"]
        if r["type"].endswith("dns:DkimKey")
    }
    config = validate_config(stack_config(bind, sim, TENANTS))
    plan = plan_mail_dns(config, {1: NodeAddresses(ip)}, dkim)
    # The simulated node serves no MTA-STS policy (that check fetches it: tests/integration/test_mta_sts.py).
    reports = verify(plan.expectations, lookup(bind), checks=[c for c in CHECKS if c != "MTA-STS"])
    assert [(r.domain, r.failures()) for r in reports] == [
        ("acme.test", []),
        ("news.penguinmails.test", []),
    ]
    assert live(bind, "18.198.in-addr.arpa").rrsets[
        (".".join(reversed(ip.split("."))) + ".in-addr.arpa", "PTR")
    ]

    # Secrets: the DKIM private keys and the TSIG secret are nowhere in plain text.
    state_files = list((tmp_path / "state" / "backend").rglob("*.json"))
    assert state_files
    for path in state_files:
        text = path.read_text()
        assert "PRIVATE KEY" not in text, f"plaintext DKIM key in {path}"
        assert secret not in text, f"plaintext TSIG secret in {path}"
    assert secret not in "".join(output) and "PRIVATE KEY" not in "".join(output)

    # Re-apply: no changes proposed and not one update message sent.
    stack.preview(color="never", expect_no_changes=True)
    again = bind.update_messages()
    stack.up(color="never")
    assert bind.update_messages() == again

    # Drift: an out-of-band edit of our SPF shows after refresh; the next up repairs it in one message.
    spf = live(bind, "acme.test").rrsets[("acme.test", "TXT")]
    ours = next(v for v in spf.values if v.startswith("v=spf1"))
    out_of_band(
        bind,
        "acme.test",
        Change("delete", "acme.test", "TXT", ours),
        Change("add", "acme.test", "TXT", "v=spf1 +all", 600),
    )
    stack.refresh(color="never")
    with pytest.raises(auto.CommandError):
        stack.preview(color="never", expect_no_changes=True)
    drifted = bind.update_messages()
    stack.up(color="never")
    assert bind.update_messages() - drifted == 1
    assert ours in live(bind, "acme.test").rrsets[("acme.test", "TXT")].values
    assert "v=spf1 +all" not in live(bind, "acme.test").rrsets[("acme.test", "TXT")].values

    # A wrong TSIG secret: a clear error naming the key and where to fix it, never the secret; the
    # change waits, and goes through once the secret is right again.
    wrong = "d3Jvbmcgc2VjcmV0IGZvciB0aGUgZW5naW5lIHRlc3Q="
    stricter = json.loads(json.dumps(TENANTS))
    stricter[0]["domains"][0]["dmarc"]["policy"] = "reject"
    stack.set_config("penguinmails:tenants", auto.ConfigValue(json.dumps(stricter)))
    stack.set_config("penguinmails:tsigSecret", auto.ConfigValue(wrong, secret=True))
    with pytest.raises(auto.CommandError) as error:
        stack.up(color="never")
    assert "TSIG key 'pm-etest' was rejected, the secret is wrong" in str(error.value)
    assert "tsigSecret" in str(error.value)
    assert wrong not in str(error.value) and secret not in str(error.value)
    assert "p=quarantine" in live(bind, "acme.test").rrsets[("_dmarc.acme.test", "TXT")].values[0]
    stack.set_config("penguinmails:tsigSecret", auto.ConfigValue(secret, secret=True))
    stack.up(color="never")
    assert "p=reject" in live(bind, "acme.test").rrsets[("_dmarc.acme.test", "TXT")].values[0]

    # Destroy removes what the stack made and nothing else.
    stack.destroy(color="never")
    left = our_records(live(bind, "acme.test"))
    assert left == foreign
    assert our_records(live(bind, "18.198.in-addr.arpa")) == {}
