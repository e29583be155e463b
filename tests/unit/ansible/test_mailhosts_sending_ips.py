"""plan_host_vars with additional sending IPs: one postfix_sending_ips entry per proven IP, each domain on
the IP it is pinned to, the HELO name the IP's PTR; a node without any keeps its one "main" entry."""

from __future__ import annotations

from modules.ansible import mailhosts
from modules.config.model import StackConfig


def config(pinned: str | None = "ip2") -> StackConfig:
    return StackConfig.model_validate(
        {
            "fleet": {
                "nodes": 2,
                "rdns_domain": "fleet.example.net",
                "additional_ips": {1: ["203.0.113.20"]},
            },
            "dns": {"zones": [{"name": "example.net"}]},
            "tenants": [
                {
                    "slug": "acme",
                    "domains": [
                        {"name": "a.example.net", "sending_ip": pinned},
                        {"name": "b.example.net"},
                        {"name": "c.example.net", "sending_node": 2},
                    ],
                }
            ],
        }
    )


INVENTORY = [
    {
        "name": "mx-01",
        "fqdn": "mx-01.fleet.example.net",
        "ip": "203.0.113.10",
        "service_id": 1,
        "additional_ips": [{"name": "ip2", "address": "203.0.113.20", "fqdn": "mx-01-2.fleet.example.net"}],
    },
    {"name": "mx-02", "fqdn": "mx-02.fleet.example.net", "ip": "203.0.113.11", "service_id": 2},
]


def _transports(entries: list[dict]) -> list[dict]:
    return [{k: e[k] for k in ("name", "address", "helo_name", "domains")} for e in entries]


def test_each_proven_ip_gets_a_transport_and_its_pinned_domains():
    host_vars = mailhosts.plan_host_vars(config(), INVENTORY)
    assert _transports(host_vars["mx-01"]["postfix_sending_ips"]) == [
        {
            "name": "main",
            "address": "203.0.113.10",
            "helo_name": "mx-01.fleet.example.net",
            "domains": ["b.example.net"],
        },
        {
            "name": "ip2",
            "address": "203.0.113.20",
            "helo_name": "mx-01-2.fleet.example.net",
            "domains": ["a.example.net"],
        },
    ]
    # Each IP that sends has its own plan: both start on the start day's caps, each with its own daily count.
    assert [(e["name"], e["hourly_cap"]) for e in host_vars["mx-01"]["postfix_sending_ips"]] == [
        ("main", 20),
        ("ip2", 20),
    ]
    assert [c["name"] for c in host_vars["mx-01"]["postfix_warmup_daily_caps"]] == ["main", "ip2"]
    # The sender routes agent may move a.example.net to main (same tenant) if ip2 is quarantined.
    assert host_vars["mx-01"]["postfix_sender_routes_tenants"] == {
        "a.example.net": "acme",
        "b.example.net": "acme",
    }
    assert _transports(host_vars["mx-02"]["postfix_sending_ips"]) == [
        {
            "name": "main",
            "address": "203.0.113.11",
            "helo_name": "mx-02.fleet.example.net",
            "domains": ["c.example.net"],
        }
    ]


def test_a_pin_by_address_and_an_ip_not_yet_proven():
    by_address = mailhosts.plan_host_vars(config("203.0.113.20"), INVENTORY)
    assert by_address["mx-01"]["postfix_sending_ips"][1]["domains"] == ["a.example.net"]
    # An inventory without the proven IP (never the case after a passing proof) sends everything from main.
    bare = [{k: v for k, v in INVENTORY[0].items() if k != "additional_ips"}, INVENTORY[1]]
    (main,) = mailhosts.plan_host_vars(config(), bare)["mx-01"]["postfix_sending_ips"]
    assert main["domains"] == ["a.example.net", "b.example.net"]
