"""A small Pulumi program whose resources carry the real dynamic types and inputs the policy rules read.

The engine tests copy it as ``__main__.py`` of a throwaway project and only *preview* it, so the providers
never create anything (check and diff are the base class's). Config ``variant``: ``violating`` breaks every
mandatory rule at once (some break what the config model refuses, such as MTA-STS enforce without managed
certificates, hence stand-ins with the real types rather than the stack program); ``clean`` breaks none and
keeps one advisory (globex.test at DMARC p=none).
"""

import pulumi
from pulumi.dynamic import Resource, ResourceProvider


class _Never(ResourceProvider):
    def create(self, props):
        raise RuntimeError("the policy test program is only previewed")


def _typed(module: str, name: str):
    return type(name, (Resource,), {"__init__": _init}, module=module, name=name)


def _init(self, resource_name, props, opts=None):
    Resource.__init__(self, _Never(), resource_name, props, opts)


Vps = _typed("hostwinds", "Vps")
DkimKey = _typed("dns", "DkimKey")
RecordSet = _typed("dns", "RecordSet")
Playbook = _typed("ansible", "Playbook")
Role = _typed("postgres", "Role")
Database = _typed("postgres", "Database")
BackupStanza = _typed("postgres", "BackupStanza")

clean = pulumi.Config().require("variant") == "clean"
nodes = 1 if clean else 2
for index in range(1, nodes + 1):
    Vps(
        f"fleet-mx-{index:02d}",
        {"plan_id": 1, "location_id": 1, "rdns": f"mx-{index:02d}.fleet.pm.test" if clean else ""},
    )
for domain, selector in (("acme.test", "pm1"), ("globex.test", "gx1")):
    DkimKey(f"dkim-{selector}-{domain}", {"domain": domain, "selector": selector, "bits": 2048})
dmarc = [{"name": "_dmarc.globex.test", "type": "TXT", "ttl": 3600, "values": ["v=DMARC1; p=none"]}]
if clean:
    dmarc.append(
        {"name": "_dmarc.acme.test", "type": "TXT", "ttl": 3600, "values": ["v=DMARC1; p=quarantine"]}
    )
RecordSet("zone-test", {"zone": "test", "records": dmarc})
mode = "testing" if clean else "enforce"
Playbook(
    "mail-playbook",
    {
        "playbook": "mailhost.yml",
        "vars": {"acme_enabled": clean},
        "host_vars": {
            "mx-01": {
                "acme_names": ["mx-01.fleet.pm.test", "mta-sts.acme.test"],
                "mta_sts_policies": {
                    "acme.test": f"version: STSv1\r\nmode: {mode}\r\nmx: mail.acme.test\r\n"
                },
            }
        },
    },
)
password = pulumi.Output.secret("policy-test-password") if clean else "policy-test-password"
Role("oltp-app", {"role": "pm_pt_oltp_app", "tier": "oltp", "login": True, "password": password})
Database("oltp-database", {"database": "pm_pt_oltp", "tier": "oltp", "owner": "pm_pt_oltp_app"})
if clean:
    BackupStanza("backup", {"stanza": "pt", "tiers": ["oltp"], "retention_days": 90})
