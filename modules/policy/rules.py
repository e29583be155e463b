"""The policy rules as pure functions over (resources, stack config): one source for two callers.

``policies/`` (the Pulumi policy pack, run by the engine at preview and up) and ``penguinmails audit`` (over a
``pulumi stack export``, offline) both call :func:`evaluate`. A resource is ``Resource(type, urn, props)``;
secret values are the engine's secret envelope (``{"4dabf…": "1b47…", …}``, see
:func:`modules.audit.secrets_scan.is_secret`) in both: the pack masks the plaintext the SDK would hand over, so
rule code never sees a secret. The config is the stack's ``project:key`` map with objects parsed, plus the set
of keys Pulumi keeps as secrets. Unknown values (preview of something not created yet) never count as a
violation: the rule is checked again at ``up``.

Mandatory rules block a preview (exit 3 in ``penguinmails preview``); advisory ones are where a team may differ.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modules.audit.secrets_scan import SECRET_SIG, SECRET_SIG_VALUE, is_secret, scan_value

MANDATORY, ADVISORY = "mandatory", "advisory"
PROJECT = "penguinmails"
VPS = "pulumi-python:dynamic/hostwinds:Vps"
RECORDSET = "pulumi-python:dynamic/dns:RecordSet"
DKIM = "pulumi-python:dynamic/dns:DkimKey"
PLAYBOOK_PREFIX = "pulumi-python:dynamic/ansible:"
DATABASE = "pulumi-python:dynamic/postgres:Database"
STANZA = "pulumi-python:dynamic/postgres:BackupStanza"
PRODUCTION = ("production", "prod")
# Components whose VPS are platform hosts (a tier, Redis, monitoring), not sending fleet nodes.
PLATFORM_HOSTS = ("penguinmails:postgres:", "penguinmails:redis:", "penguinmails:monitoring:")
# The engine's sentinels for values a preview cannot know yet (pulumi_policy.proxy).
UNKNOWNS = frozenset(
    {
        "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7",
        "3eeb2bf0-c639-47a8-9e75-3b44932eb421",
        "04da6b54-80e4-46f7-96ec-b56ff0331ba9",
        "6a19a0b0-7e62-4c92-b797-7f8e31da9cc2",
        "dd056dcd-154b-4c76-9bd3-c8f88648b5ff",
    }
)
# Config keys (last segment) that hold a secret; names of variables, files and algorithms do not.
SECRETISH_KEY = re.compile(
    r"(password|passwd|passphrase|secret|token|tsig|api_?key|private_?key|access_?key|cipher_?pass)", re.I
)
BENIGN_KEY = re.compile(r"(fromenv|_env|_file|_path|_name|_names|_algorithm|_bits|_days|_selector)$", re.I)


@dataclass(frozen=True)
class Resource:
    type: str
    urn: str
    props: dict[str, Any]

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]


@dataclass(frozen=True)
class StackView:
    """What the rules read about the stack: its config (``project:key`` → value) and which keys are secret."""

    config: dict[str, Any] = field(default_factory=dict)
    secret_keys: frozenset[str] = frozenset()

    def section(self, key: str) -> Any:
        return self.config.get(f"{PROJECT}:{key}")


@dataclass(frozen=True)
class Violation:
    policy: str
    level: str
    urn: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"policy": self.policy, "level": self.level, "urn": self.urn, "message": self.message}


def parse_config(raw: dict[str, str], secret_keys: Iterable[str] = ()) -> StackView:
    """The engine hands config values as strings (objects JSON-encoded): parse what parses. Secret values
    (decrypted by the engine) are replaced by the secret marker at once: no rule needs them."""
    secret_keys = frozenset(secret_keys)
    config: dict[str, Any] = {}
    for key, value in raw.items():
        if key in secret_keys:
            config[key] = {SECRET_SIG: SECRET_SIG_VALUE}
            continue
        try:
            config[key] = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            config[key] = value
    return StackView(config, secret_keys)


def _unknown(value: Any) -> bool:
    return isinstance(value, str) and value in UNKNOWNS


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) and not is_secret(value) else {}


def _fleet_nodes(resources: list[Resource]) -> list[Resource]:
    """Sending fleet VPS: every hostwinds:Vps that is not a tier's, Redis' or monitoring's host."""
    return [r for r in resources if r.type == VPS and not any(p in r.urn for p in PLATFORM_HOSTS)]


# -- mandatory ------------------------------------------------------------------------------------------------


def node_rdns(resources: list[Resource], stack: StackView) -> list[Violation]:
    """A sending node without a PTR fails FCrDNS at every large receiver: its mail is junked or refused."""
    return [
        Violation(
            "fleet-node-rdns",
            MANDATORY,
            node.urn,
            f"fleet node {node.name} has no rDNS: set fleet.rdns_domain so each node gets a PTR",
        )
        for node in _fleet_nodes(resources)
        if not _unknown(node.props.get("rdns")) and not str(node.props.get("rdns") or "").strip()
    ]


def _txt_records(resources: list[Resource]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for r in resources:
        if r.type != RECORDSET:
            continue
        for record in r.props.get("records") or []:
            if isinstance(record, dict) and str(record.get("type", "")).upper() == "TXT":
                name = str(record.get("name", "")).rstrip(".").lower()
                found.setdefault(name, []).extend(str(v) for v in record.get("values") or [])
    return found


def _sending_domains(resources: list[Resource], stack: StackView) -> dict[str, str]:
    """Sending domain → the URN to blame (its DKIM key, else the stack)."""
    domains: dict[str, str] = {}
    for tenant in stack.section("tenants") or []:
        for domain in _dict(tenant).get("domains") or []:
            if _dict(domain).get("name"):
                domains[str(domain["name"]).lower()] = ""
    for r in resources:
        name = r.props.get("domain")
        if r.type == DKIM and isinstance(name, str) and not _unknown(name):
            domains[name.lower()] = r.urn
    return domains


def _dmarc_tag(record: str, tag: str) -> str | None:
    for part in record.split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == tag:
            return value.strip().lower()
    return None


def domain_dmarc(resources: list[Resource], stack: StackView) -> list[Violation]:
    """Without DMARC (v=DMARC1 with a p= tag at _dmarc.<domain>) bulk senders' mail is refused by Gmail/Yahoo."""
    records = _txt_records(resources)
    if not any(r.type == RECORDSET for r in resources):
        return []  # the stack writes no DNS (yet): nothing to judge
    out = []
    for domain, urn in sorted(_sending_domains(resources, stack).items()):
        dmarc = [v for v in records.get(f"_dmarc.{domain}", []) if v.lower().startswith("v=dmarc1")]
        if not any(_dmarc_tag(v, "p") for v in dmarc):
            out.append(
                Violation(
                    "domain-dmarc",
                    MANDATORY,
                    urn,
                    f"sending domain {domain} has no DMARC record (v=DMARC1; p=…) at _dmarc.{domain}",
                )
            )
    return out


def _mta_sts_enforced(resources: list[Resource], stack: StackView) -> dict[str, str]:
    """Domains whose published MTA-STS policy says mode: enforce → URN of the resource publishing it."""
    found: dict[str, str] = {}
    for r in resources:
        if not r.type.startswith(PLAYBOOK_PREFIX):
            continue
        for host in [*_dict(r.props.get("host_vars")).values(), r.props]:
            for domain, policy in _dict(_dict(host).get("mta_sts_policies")).items():
                if isinstance(policy, str) and re.search(r"^mode:\s*enforce\s*$", policy, re.M):
                    found[str(domain).lower()] = r.urn
    if str(_dict(stack.section("mail")).get("mta_sts_mode", "")).lower() == "enforce":
        for domain in _sending_domains(resources, stack):
            found.setdefault(domain, "")
    return found


def _certified_names(resources: list[Resource]) -> set[str]:
    """Names the stack gets publicly valid (ACME) certificates for."""
    names: set[str] = set()
    for r in resources:
        if not r.type.startswith(PLAYBOOK_PREFIX):
            continue
        if _dict(r.props.get("vars")).get("acme_enabled") is not True:
            continue
        for host in [r.props, *_dict(r.props.get("host_vars")).values()]:
            names.update(str(n).lower() for n in _dict(host).get("acme_names") or [] if isinstance(n, str))
    return names


def mta_sts_certificate(resources: list[Resource], stack: StackView) -> list[Violation]:
    """MTA-STS enforce with a certificate senders cannot validate makes every policy-honouring sender bounce."""
    certified = _certified_names(resources)
    return [
        Violation(
            "mta-sts-certificate",
            MANDATORY,
            urn,
            f"{domain}: MTA-STS mode is enforce but mta-sts.{domain} has no managed (ACME) certificate: "
            "configure mail.acme or use mta_sts_mode testing",
        )
        for domain, urn in sorted(_mta_sts_enforced(resources, stack).items())
        if f"mta-sts.{domain}" not in certified
    ]


def _secretish(key: str) -> bool:
    return bool(SECRETISH_KEY.search(key)) and not BENIGN_KEY.search(key)


def _plain_secret_paths(value: Any, path: str) -> list[str]:
    if is_secret(value) or _unknown(value):
        return []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaf_paths(v, f"{path}.{k}", str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _plain_secret_paths(v, f"{path}[{i}]")]
    return []


def _leaf_paths(value: Any, path: str, key: str) -> list[str]:
    if isinstance(value, dict | list):
        return _plain_secret_paths(value, path)
    if _secretish(key) and isinstance(value, str) and value.strip() and not _unknown(value):
        return [path]
    return []


def _known(value: Any) -> Any:
    """``value`` without the values a preview cannot know yet (they are judged again at ``up``)."""
    if isinstance(value, dict) and not is_secret(value):
        return {k: _known(v) for k, v in value.items() if not _unknown(v)}
    if isinstance(value, list):
        return [_known(v) for v in value if not _unknown(v)]
    return value


def config_plaintext_secret(resources: list[Resource], stack: StackView) -> list[Violation]:
    """A stack config value that looks secret but is not a Pulumi secret sits in Pulumi.<stack>.yaml in clear."""
    out = []
    for key, value in sorted(stack.config.items()):
        if key in stack.secret_keys or is_secret(value):
            continue
        name = key.split(":", 1)[-1]
        if BENIGN_KEY.search(name):
            continue  # e.g. secretsFromEnv: names the CI variables that carry secrets, holds none
        paths = [key] if _secretish(name) and value not in (None, "") else []
        if not paths and isinstance(value, dict | list):
            paths = _plain_secret_paths(value, key)
        out += [
            Violation(
                "config-plaintext-secret",
                MANDATORY,
                "",
                f"config {path} is plain text: set it with `pulumi config set --secret {name}`",
            )
            for path in paths
        ]
    return out


def resource_plaintext_secret(resources: list[Resource], stack: StackView) -> list[Violation]:
    """Inputs are stored in the state: a plaintext password or private key there is readable by every reader."""
    out = []
    for r in resources:
        if r.type.startswith("pulumi:providers:") or r.type == "pulumi:pulumi:Stack":
            continue  # providers carry the stack config: config-plaintext-secret judges it
        props = _known({k: v for k, v in r.props.items() if not k.startswith("__")})
        out += [
            Violation(
                "resource-plaintext-secret",
                MANDATORY,
                r.urn,
                f"{r.name} input {f.path.removeprefix('inputs.')}: {f.reason}; pass it as a Pulumi secret",
            )
            for f in scan_value(r.urn, "inputs", props)
        ]
    return out


def _environment(stack: StackView) -> str:
    return str(stack.section("environment") or "dev").lower()


def _tiers(resources: list[Resource], stack: StackView) -> dict[str, str]:
    """PostgreSQL tier → URN of its database resource (the tiers the stack declares)."""
    tiers: dict[str, str] = {}
    for r in resources:
        tier = r.props.get("tier")
        if r.type == DATABASE and isinstance(tier, str) and not _unknown(tier):
            tiers.setdefault(tier, r.urn)
    return tiers


def _production_tiers(resources: list[Resource], stack: StackView) -> dict[str, str]:
    return _tiers(resources, stack) if _environment(stack) in PRODUCTION else {}


def production_tier_tls(resources: list[Resource], stack: StackView) -> list[Violation]:
    """Production tiers hold tenants' data: anything short of verify-full lets a man in the middle read it."""
    postgres = _dict(stack.section("postgres"))
    out = []
    for tier, urn in sorted(_production_tiers(resources, stack).items()):
        sslmode = str(_dict(postgres.get(tier)).get("sslmode") or "prefer")
        if sslmode != "verify-full":
            out.append(
                Violation(
                    "production-tier-tls",
                    MANDATORY,
                    urn,
                    f"production tier {tier}: sslmode is {sslmode}; set postgres.{tier}.sslmode: verify-full",
                )
            )
    return out


def production_tier_backup(resources: list[Resource], stack: StackView) -> list[Violation]:
    """A production tier without a pgBackRest stanza (postgres.backup) cannot be restored after a loss."""
    backup = _dict(_dict(stack.section("postgres")).get("backup"))
    covered = {
        str(t)
        for r in resources
        if r.type == STANZA and isinstance(r.props.get("tiers"), list)
        for t in r.props["tiers"]
    }
    out = []
    for tier, urn in sorted(_production_tiers(resources, stack).items()):
        if backup.get("enabled") is False or tier not in covered:
            why = "postgres.backup.enabled is false" if backup.get("enabled") is False else "no BackupStanza"
            out.append(
                Violation(
                    "production-tier-backup",
                    MANDATORY,
                    urn,
                    f"production tier {tier} has no backups ({why}): configure postgres.backup",
                )
            )
    return out


def _plan_key(value: Any) -> str:
    """Plan ids as the price list keys them: the engine sends every number as a float (1.0)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def fleet_budget(resources: list[Resource], stack: StackView) -> list[Violation]:
    """A typo in fleet.nodes must not order (and bill) a hundred servers: the budget is a second key."""
    fleet = _dict(stack.section("fleet"))
    nodes = _fleet_nodes(resources)
    reasons = []
    max_nodes = fleet.get("max_nodes")
    if isinstance(max_nodes, int) and not isinstance(max_nodes, bool) and len(nodes) > max_nodes:
        reasons.append(f"the fleet has {len(nodes)} nodes, above fleet.max_nodes {max_nodes}")
    max_cost = fleet.get("max_monthly_cost")
    if isinstance(max_cost, int | float) and not isinstance(max_cost, bool):
        prices = {_plan_key(k): v for k, v in _dict(fleet.get("plan_prices")).items()}
        plans = [_plan_key(n.props.get("plan_id")) for n in nodes if not _unknown(n.props.get("plan_id"))]
        unpriced = sorted({p for p in plans if not isinstance(prices.get(p), int | float)})
        cost = round(sum(float(prices[p]) for p in plans if p not in unpriced), 2)
        if unpriced:
            reasons.append(
                "cannot check fleet.max_monthly_cost: no fleet.plan_prices entry for plan(s) "
                + ", ".join(unpriced)
            )
        elif cost > max_cost:
            reasons.append(
                f"the fleet costs {cost:,.2f} a month, above fleet.max_monthly_cost {max_cost:,.2f}"
            )
    # One violation: the engine shows one message per policy and resource.
    return [Violation("fleet-budget", MANDATORY, "", "; ".join(reasons))] if reasons else []


# -- advisory -------------------------------------------------------------------------------------------------


def dmarc_none(resources: list[Resource], stack: StackView) -> list[Violation]:
    """p=none only monitors: fine while reports are read, but spoofed mail still lands."""
    records = _txt_records(resources)
    out = []
    for domain, urn in sorted(_sending_domains(resources, stack).items()):
        for value in records.get(f"_dmarc.{domain}", []):
            if value.lower().startswith("v=dmarc1") and _dmarc_tag(value, "p") == "none":
                out.append(
                    Violation(
                        "dmarc-policy-none",
                        ADVISORY,
                        urn,
                        f"{domain}: DMARC policy is p=none (monitoring only); move to quarantine once reports are clean",
                    )
                )
    return out


def dkim_key_age(
    resources: list[Resource], stack: StackView, *, max_days: float = 180, now: datetime | None = None
) -> list[Violation]:
    """Long-lived DKIM keys widen the window of a leaked key; rotate with dkim_selector (README, DKIM)."""
    now = now or datetime.now(UTC)
    out = []
    for r in resources:
        created = r.props.get("created_at")
        if r.type != DKIM or not isinstance(created, str) or _unknown(created):
            continue
        try:
            when = datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            continue
        age = (now - (when if when.tzinfo else when.replace(tzinfo=UTC))).total_seconds() / 86400
        if age > max_days:
            out.append(
                Violation(
                    "dkim-key-age",
                    ADVISORY,
                    r.urn,
                    f"DKIM key {r.props.get('selector')} of {r.props.get('domain')} is {age:.0f} days old "
                    f"(over {max_days:g}): rotate it",
                )
            )
    return out


def warmup_disabled(resources: list[Resource], stack: StackView) -> list[Violation]:
    """New IPs sending at full volume on day one are throttled or listed; some teams warm up by hand."""
    if _dict(stack.section("warmup")).get("enabled") is False and _fleet_nodes(resources):
        return [Violation("warmup-disabled", ADVISORY, "", "IP warm-up is disabled (warmup.enabled: false)")]
    return []


RULES = {
    "fleet-node-rdns": (MANDATORY, node_rdns),
    "domain-dmarc": (MANDATORY, domain_dmarc),
    "mta-sts-certificate": (MANDATORY, mta_sts_certificate),
    "config-plaintext-secret": (MANDATORY, config_plaintext_secret),
    "resource-plaintext-secret": (MANDATORY, resource_plaintext_secret),
    "production-tier-tls": (MANDATORY, production_tier_tls),
    "production-tier-backup": (MANDATORY, production_tier_backup),
    "fleet-budget": (MANDATORY, fleet_budget),
    "dmarc-policy-none": (ADVISORY, dmarc_none),
    "dkim-key-age": (ADVISORY, dkim_key_age),
    "warmup-disabled": (ADVISORY, warmup_disabled),
}
DESCRIPTIONS = {name: (func.__doc__ or "").strip() for name, (_, func) in RULES.items()}


def evaluate(resources: list[Resource], stack: StackView) -> list[Violation]:
    """Every rule over the stack, mandatory first."""
    found = [v for _, func in RULES.values() for v in func(resources, stack)]
    return sorted(found, key=lambda v: (v.level != MANDATORY, v.policy, v.urn, v.message))


# -- a stack export (offline audit) ---------------------------------------------------------------------------


def from_export(deployment: dict[str, Any]) -> tuple[list[Resource], StackView]:
    """Resources (outputs over inputs, as the state has them) and the config the default provider recorded."""
    body = deployment.get("deployment") or deployment
    resources, config = [], {}
    for r in body.get("resources") or []:
        if r.get("type", "").startswith("pulumi:providers:pulumi-python"):
            # The provider records the stack config as its inputs (project:key; secrets as ciphertext).
            config.update({k: v for k, v in (r.get("inputs") or {}).items() if ":" in k})
            continue
        props = {**(r.get("inputs") or {}), **(r.get("outputs") or {})}
        resources.append(Resource(r.get("type", ""), r.get("urn", ""), props))
    parsed = {k: (json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v) for k, v in config.items()}
    return resources, StackView(parsed, frozenset(k for k, v in config.items() if is_secret(v)))


def audit_section(deployment: dict[str, Any]) -> dict[str, Any]:
    """The audit report's ``policy`` section: the same rules over the recorded state."""
    resources, stack = from_export(deployment)
    found = [v.as_dict() for v in evaluate(resources, stack)]
    return {
        "recorded": True,
        "source": "modules.policy.rules over the stack export (the policy pack's rules)",
        "violations": [v for v in found if v["level"] == MANDATORY],
        "advisories": [v for v in found if v["level"] == ADVISORY],
    }
