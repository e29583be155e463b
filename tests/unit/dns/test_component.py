"""MailDns under Pulumi mocks: one record set per zone, real addresses and keys filled in, secrets kept."""

from __future__ import annotations

import pulumi
import pytest

from modules.dns.dkim import dkim_txt, generate_key

PRIVATE, PUBLIC = generate_key()


class DnsMocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(args)
        state = dict(args.inputs)
        if args.typ.endswith("dns:DkimKey"):
            state.update(
                private_key_pem=PRIVATE,
                public_key=PUBLIC,
                dns_value=dkim_txt(PUBLIC),
                created_at="2026-11-01T00:00:00+00:00",
            )
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


@pytest.fixture
def mocks():
    recording = DnsMocks()
    pulumi.runtime.set_mocks(recording, project="penguinmails", stack="unit", preview=False)
    return recording


def config():
    from modules.config.loader import validate_config

    return validate_config(
        {
            "fleet": {"nodes": 1, "rdns_domain": "fleet.penguinmails.test"},
            "mail": {"dkim_rotation_overlap_days": 7},
            "dns": {
                "zones": [
                    {"name": "penguinmails.test"},
                    {"name": "acme.test", "port": 15353},
                    {"name": "18.198.in-addr.arpa"},
                ]
            },
            "tenants": [
                {
                    "slug": "acme",
                    "domains": [
                        {"name": "acme.test", "dkim_selector": "pm2", "dkim_previous_selectors": ["pm1"]}
                    ],
                }
            ],
        }
    )


@pulumi.runtime.test
def test_mail_dns_fills_addresses_and_keys_and_keeps_private_keys_secret(mocks):
    from modules.dns.component import MailDns

    dns = MailDns("pm-dns", config(), node_ips={1: pulumi.Output.from_input("198.18.0.7")})

    def check(args):
        private, is_secret, selectors, ptrs = args
        sets = {r.inputs["zone"]: r for r in mocks.resources if r.typ.endswith("dns:RecordSet")}
        assert set(sets) == {"penguinmails.test", "acme.test", "18.198.in-addr.arpa"}
        assert sets["acme.test"].inputs["port"] == 15353
        acme = {(r["name"], r["type"]): r for r in sets["acme.test"].inputs["records"]}
        assert acme[("acme.test", "TXT")]["values"] == ["v=spf1 ip4:198.18.0.7 ~all"]
        assert acme[("mail.acme.test", "A")]["values"] == ["198.18.0.7"]
        assert acme[("pm2._domainkey.acme.test", "TXT")]["values"] == [dkim_txt(PUBLIC)]
        # The replaced selector stays until the new key is a week old.
        assert acme[("pm1._domainkey.acme.test", "TXT")]["not_after"] == "2026-11-08T00:00:00+00:00"
        assert "not_after" not in acme[("pm2._domainkey.acme.test", "TXT")]
        reverse = sets["18.198.in-addr.arpa"].inputs["records"]
        assert reverse == [
            {"name": "7.0.18.198.in-addr.arpa", "type": "PTR", "values": ["mx-01.fleet.penguinmails.test."]}
        ]
        base = {(r["name"], r["type"]): r for r in sets["penguinmails.test"].inputs["records"]}
        assert base[("mx-01.fleet.penguinmails.test", "A")]["values"] == ["198.18.0.7"]
        keys = [r for r in mocks.resources if r.typ.endswith("dns:DkimKey")]
        assert sorted(r.inputs["selector"] for r in keys) == ["pm1", "pm2"]
        assert private == {"acme.test": {"pm1": PRIVATE, "pm2": PRIVATE}}
        assert is_secret is True
        assert selectors == {"acme.test": "pm2"}
        assert ptrs == {"198.18.0.7": "mx-01.fleet.penguinmails.test"}

    return pulumi.Output.all(
        dns.dkim_private_keys,
        pulumi.Output.is_secret(dns.dkim_private_keys),
        dns.dkim_selectors,
        dns.ptr_records,
    ).apply(check)


def test_bad_config_stops_the_program_before_any_resource(mocks):
    from modules.config.loader import validate_config
    from modules.dns.component import MailDns

    bad = validate_config(
        {
            "fleet": {"nodes": 1},
            "dns": {
                "zones": [
                    {"name": "acme.test", "records": [{"name": "@", "type": "CNAME", "values": ["x.test"]}]}
                ]
            },
            "tenants": [{"slug": "acme", "domains": [{"name": "acme.test"}]}],
        }
    )
    with pytest.raises(pulumi.RunError, match=r"acme\.test CNAME: a CNAME cannot sit at the zone apex"):
        MailDns("pm-dns", bad, node_ips={1: "198.18.0.1"})
    assert not [r for r in mocks.resources if "dns:" in r.typ]
