"""DNS at scale: apply then verify 1,000 records across 100 domains against a private BIND.

Builds the plan for 100 sending domains (dual-stack node each, a DKIM rotation in progress: 10 records per
domain) plus their PTRs, applies every zone through ``DnsRecordSetProvider`` (check + create, the code the
engine runs), re-applies, refreshes, and verifies every domain with the verification library. Messages
are counted on the server's side (BIND statistics channel) and, for verification, by the lookup.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

DOMAINS = 100


def _timed(fn):
    started = time.perf_counter()
    value = fn()
    return round(time.perf_counter() - started, 3), value


def _config(domains: int):
    from modules.config.loader import validate_config

    zones = [{"name": f"d{i:03d}.bench.test"} for i in range(1, domains + 1)]
    zones += [{"name": "18.198.in-addr.arpa"}, {"name": "8.b.d.0.1.0.0.2.ip6.arpa"}]
    tenants = [
        {
            "slug": f"tenant-{i:03d}",
            "domains": [
                {
                    "name": f"d{i:03d}.bench.test",
                    "sending_node": i,
                    "dkim_selector": "s2",
                    "dkim_previous_selectors": ["s1"],
                    "dmarc": {"policy": "quarantine", "rua": [f"mailto:dmarc@d{i:03d}.bench.test"]},
                }
            ],
        }
        for i in range(1, domains + 1)
    ]
    return validate_config({"fleet": {"nodes": domains}, "dns": {"zones": zones}, "tenants": tenants})


def _stats(bind) -> tuple[int, int]:
    stats = bind.stats()
    return int(stats["opcodes"].get("UPDATE", 0)), int(stats.get("nsstats", {}).get("XfrReqDone", 0))


def run() -> dict:
    from modules.dns.dkim import generate_key
    from modules.dns.generate import NodeAddresses, check_mail_dns, plan_mail_dns
    from modules.dns.resources import DnsRecordSetProvider
    from modules.dns.verify import CHECKS, verify
    from tests.support.dns import lookup, private_bind, provider_env, recordset_props

    config = _config(DOMAINS)
    # Two real keys shared by every domain: key generation is not what this measures.
    current, previous = generate_key()[1], generate_key()[1]
    keys = {}
    for _, domain in config.sending_domains():
        keys[(domain.name, "s2")] = current
        keys[(domain.name, "s1")] = previous
    nodes = {i: NodeAddresses(f"198.18.0.{i}", f"2001:db8::{i:x}") for i in range(1, DOMAINS + 1)}
    retire = {(d.name, "s1"): "2099-01-01T00:00:00+00:00" for _, d in config.sending_domains()}
    plan = plan_mail_dns(config, nodes, keys, retire)
    forward = sum(len(r) for z, r in plan.records.items() if not z.endswith(".arpa"))
    reverse = sum(len(r) for z, r in plan.records.items() if z.endswith(".arpa"))

    result: dict[str, object] = {
        "domains": DOMAINS,
        "zones": len(plan.records),
        "records": forward,
        "ptr_records": reverse,
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        private_bind(Path(tmp), list(plan.records), "pm-bench") as bind,
    ):
        os.environ.update(provider_env(bind))
        provider = DnsRecordSetProvider()
        # Preview-time validation: the program's whole-plan check, then every record set's check().
        result["plan_check_s"], _ = _timed(lambda: check_mail_dns(config, lookup(bind)))
        result["provider_check_s"], inputs = _timed(
            lambda: {
                zone: provider.check({}, recordset_props(bind, zone, [r.to_dict() for r in records])).inputs
                for zone, records in plan.records.items()
            }
        )
        updates0, transfers0 = _stats(bind)
        result["apply_s"], outs = _timed(lambda: {z: provider.create(i).outs for z, i in inputs.items()})
        updates1, transfers1 = _stats(bind)
        result["apply_update_messages"] = updates1 - updates0
        result["apply_transfers"] = transfers1 - transfers0
        result["apply_max_updates_per_zone"] = round((updates1 - updates0) / len(plan.records), 2)

        # Re-apply: the diff says "no change", so the engine would not call update at all.
        changed = [z for z in inputs if provider.diff(z, outs[z], inputs[z]).changes]
        result["reapply_zones_with_changes"] = len(changed)
        result["reapply_forced_s"], _ = _timed(
            lambda: [provider.update(z, outs[z], inputs[z]) for z in inputs]
        )
        updates2, _ = _stats(bind)
        result["reapply_update_messages"] = updates2 - updates1

        result["refresh_s"], reads = _timed(lambda: {z: provider.read(z, outs[z]).outs for z in inputs})
        result["refresh_zones_with_drift"] = sum(
            provider.diff(z, reads[z], inputs[z]).changes for z in inputs
        )

        resolver = lookup(bind)
        # DNS only: no host serves the MTA-STS policies here (that check fetches them over HTTPS).
        checks = [check for check in CHECKS if check != "MTA-STS"]
        result["verify_s"], reports = _timed(lambda: verify(plan.expectations, resolver, checks=checks))
        result["verify_queries"] = resolver.messages
        result["verify_domains_passed"] = sum(report.passed for report in reports)
        result["verify_checks"] = sum(len(report.results) for report in reports)
    return result


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support, when run as a script
    print(json.dumps(run(), indent=2))
