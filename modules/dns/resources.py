"""Dynamic resources: ``DnsRecordSet`` (a zone's records applied by RFC 2136) and ``DkimKey``.

``DnsRecordSet`` holds every record the stack wants in one zone, so a run sends at most one update
message per zone (more only past 64 KiB). It records the slots it owns in state and never changes
anything else in the zone. An update that would replace or delete more than ``max_change_share`` of the
zone's records is refused unless forced (``force`` input or ``PENGUINMAILS_DNS_FORCE=1``), as octoDNS
does; deleting the whole resource (destroy, or removing it from the program) is shown by the preview as
such and is not guarded. Refresh reads the zone back with a TSIG-signed AXFR, so out-of-band edits of
our records show as drift.

The TSIG secret is never an input: the provider reads the secret config ``tsigSecret`` (one secret, or a
JSON object mapping key names to secrets). On a dev stack the devenv's ``PENGUINMAILS_TSIG_SECRET`` comes
first (when ``PENGUINMAILS_TSIG_KEY_NAME`` is unset or names the zone's key); a staging or production
stack never reads it and falls back to the CI variable ``secretsFromEnv.tsigSecret`` names.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pulumi
import pulumi.dynamic as dynamic
from pulumi.output import Unknown
from pulumi.runtime.rpc import UNKNOWN

from modules.dns import dkim
from modules.dns.changes import SAFETY_MIN_RECORDS, live_records, plan_changes
from modules.dns.errors import DnsAuthError, DnsConflict, DnsSafetyError, DnsZoneNotServed
from modules.dns.lookup import lookup_for
from modules.dns.records import Record, RecordError, expired, merge, normalize_name
from modules.dns.rfc2136 import ALGORITHMS, SECRET_HINT, Rfc2136Client, TsigKey
from modules.dns.route53 import ENDPOINT_ENV as ROUTE53_ENDPOINT_ENV
from modules.dns.route53 import Route53Client
from modules.dns.validators import validate_records
from modules.providers import ProviderSettings

RECORDSET_REPLACE_KEYS = ("zone", "server", "port", "backend", "route53_zone_id")
# Inputs added after a record set was first created read as their default, so upgrading the toolkit does
# not replace (and briefly unpublish) every zone.
RECORDSET_DEFAULTS = {"backend": "rfc2136", "route53_zone_id": None}
RECORDSET_UPDATE_KEYS = ("tsig_key_name", "tsig_algorithm", "max_change_share", "adopt_existing")
# An operator's deliberate override (never exported by the devenv), honoured on every stack.
FORCE_ENV = "PENGUINMAILS_DNS_FORCE"
TSIG_KEY_NAME_ENV = "PENGUINMAILS_TSIG_KEY_NAME"
TSIG_SECRET_ENV = "PENGUINMAILS_TSIG_SECRET"  # noqa: S105 - a variable name
TSIG_SECRET_KEY = "tsigSecret"  # noqa: S105 - a config key


def _now() -> dt.datetime:
    """The clock used to retire records (DKIM rotation); unit tests replace it."""
    return dt.datetime.now(dt.UTC)


def unknown(value: Any) -> bool:
    """A value the engine does not know yet (preview): an ``Unknown`` or the wire sentinel."""
    return isinstance(value, Unknown) or (isinstance(value, str) and value == UNKNOWN)


def has_unknown(value: Any) -> bool:
    if unknown(value):
        return True
    if isinstance(value, dict):
        return any(has_unknown(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_unknown(v) for v in value)
    return False


def comparable(records: Any) -> list[tuple]:
    """The part of ``records`` that lives in DNS (``not_after`` is bookkeeping), order-independent."""
    if not isinstance(records, list):
        return []
    result = []
    for record in records:
        if isinstance(record, dict):
            result.append(
                (
                    record.get("name"),
                    record.get("type"),
                    record.get("ttl"),
                    tuple(sorted(record.get("values") or [])),
                )
            )
    return sorted(result, key=repr)


def normalize_records(
    raw: Any, zone: str, default_ttl: int, now: dt.datetime
) -> tuple[list[dict], list[str], list[Record]]:
    """Canonical record dicts (expired ones dropped, unknown ones kept as they are), problems, and the
    known records as :class:`Record` for validation."""
    problems: list[str] = []
    if not isinstance(raw, list):
        return [], ["must be a list of records ({name, type, ttl, values})"], []
    known: list[Record] = []
    pending: list[dict] = []
    for entry in raw:
        if has_unknown(entry):
            pending.append(entry)
            continue
        try:
            record = Record.from_dict(entry, default_ttl)
        except RecordError as exc:
            problems.append(str(exc))
            continue
        if not (record.name == zone or record.name.endswith("." + zone)):
            problems.append(f"{record.name} {record.type}: is outside zone {zone}")
            continue
        if not expired(record, now):
            known.append(record)
    try:
        known = merge(known)
    except RecordError as exc:
        problems.append(str(exc))
    return [r.to_dict() for r in known] + pending, problems, known


class DnsRecordSetProvider(dynamic.ResourceProvider):
    """Applies one zone's records with RFC 2136; see the module docstring for the rules."""

    def configure(self, req: dynamic.ConfigureRequest) -> None:
        self.settings = ProviderSettings.from_request(req)

    def _settings(self) -> ProviderSettings:
        return getattr(self, "settings", None) or ProviderSettings()

    def _secret(self, key_name: str) -> str:
        """Dev: the devenv's key (when it names this key), else ``tsigSecret``; staging/production:
        ``tsigSecret``, else the CI variable ``secretsFromEnv.tsigSecret`` names (same format)."""
        settings = self._settings()
        env_name = settings.dev_env(TSIG_KEY_NAME_ENV)
        env_secret = settings.dev_env(TSIG_SECRET_ENV)
        if env_secret and (not env_name or env_name == key_name):
            return env_secret

        def for_key(value: Any) -> Any:
            return value.get(key_name) if isinstance(value, dict) else value

        configured = for_key(settings.get(TSIG_SECRET_KEY)) or for_key(settings.ci_secret(TSIG_SECRET_KEY))
        if not configured:
            raise DnsAuthError(f"no TSIG secret for key {key_name!r}: set {SECRET_HINT}")
        return str(configured)

    def _client(self, props: dict[str, Any]) -> Rfc2136Client | Route53Client:
        if props.get("backend") == "route53":
            # Only a dev stack may be pointed elsewhere (moto); other stacks talk to Route 53 itself.
            endpoint = self._settings().endpoint(ROUTE53_ENDPOINT_ENV, None)
            return Route53Client(props.get("route53_zone_id") or None, endpoint_url=endpoint)
        key = TsigKey(props["tsig_key_name"], self._secret(props["tsig_key_name"]), props["tsig_algorithm"])
        return Rfc2136Client(props["server"], int(props["port"]), key)

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures: list[dynamic.CheckFailure] = []
        inputs = dict(news)
        zone = news.get("zone")
        if not unknown(zone):
            try:
                zone = inputs["zone"] = normalize_name(str(zone or ""))
            except RecordError as exc:
                failures.append(dynamic.CheckFailure("zone", str(exc)))
        port = news.get("port")
        if not unknown(port) and not (
            isinstance(port, int | float) and int(port) == port and 1 <= port <= 65535
        ):
            failures.append(dynamic.CheckFailure("port", f"must be a port number 1-65535, got {port!r}"))
        if not unknown(news.get("tsig_algorithm")) and news.get("tsig_algorithm") not in ALGORITHMS:
            failures.append(dynamic.CheckFailure("tsig_algorithm", f"must be one of {', '.join(ALGORITHMS)}"))
        share = news.get("max_change_share")
        if news.get("backend", "rfc2136") not in ("rfc2136", "route53"):
            failures.append(dynamic.CheckFailure("backend", "must be rfc2136 or route53"))
        if not unknown(share) and not (isinstance(share, int | float) and 0 < share <= 1):
            failures.append(dynamic.CheckFailure("max_change_share", f"must be in (0, 1], got {share!r}"))
        if failures or unknown(zone) or unknown(news.get("records")):
            return dynamic.CheckResult(inputs, failures)
        records, problems, known = normalize_records(
            news.get("records"), zone, int(news.get("default_ttl") or 3600), _now()
        )
        inputs["records"] = records
        present = [
            (e.get("name"), e.get("type"))
            for e in records
            if has_unknown(e) and not has_unknown([e.get("name"), e.get("type")])
        ]
        if not problems:
            resolvers = [r for r in news.get("resolvers") or [] if not unknown(r)]
            # Report domains may live in another zone of this run: the program checked them across zones.
            problems = validate_records(
                known, lookup_for(resolvers or None), zones=[zone], present=present, check_reports=False
            )
        failures += [dynamic.CheckFailure("records", problem) for problem in problems]
        return dynamic.CheckResult(inputs, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        def value(props: dict[str, Any], key: str) -> Any:
            return props.get(key, RECORDSET_DEFAULTS.get(key))

        replaces = [key for key in RECORDSET_REPLACE_KEYS if value(olds, key) != value(news, key)]
        changed = replaces + [key for key in RECORDSET_UPDATE_KEYS if olds.get(key) != news.get(key)]
        if has_unknown(news.get("records")) or comparable(olds.get("records")) != comparable(
            news.get("records")
        ):
            changed.append("records")
        # The same zone replaced in place (another backend or address of the same server) must be deleted
        # first: created first, the new set would claim the identical records and the old set's delete
        # would then remove them.
        same_zone = olds.get("zone") == news.get("zone")
        return dynamic.DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=same_zone)

    def _apply(self, props: dict[str, Any], owned: set[str]) -> list[str]:
        zone = props["zone"]
        client = self._client(props)
        desired = [Record.from_dict(r) for r in props.get("records") or []]
        live = client.transfer(zone)
        plan = plan_changes(zone, desired, owned, live, bool(props.get("adopt_existing")))
        if plan.conflicts:
            raise DnsConflict(
                f"DnsRecordSet[{zone}]: {len(plan.conflicts)} record(s) exist and are not managed by this "
                "stack "
                "(set adopt_existing on the zone to take them over):\n  - " + "\n  - ".join(plan.conflicts)
            )
        forced = bool(props.get("force")) or os.environ.get(FORCE_ENV, "").lower() in ("1", "true", "yes")
        share, limit = plan.share(live), float(props.get("max_change_share") or 0.5)
        if live.record_count() >= SAFETY_MIN_RECORDS and share > limit and not forced:
            raise DnsSafetyError(
                f"DnsRecordSet[{zone}]: refusing to replace or delete {plan.existing_changed} of "
                f"{live.record_count()} records ({share:.0%}, limit {limit:.0%}); nothing was sent. Check "
                "the "
                f"change, then re-run with {FORCE_ENV}=1 or raise dns.zones[].max_change_share"
            )
        client.update(zone, plan.changes, plan.prerequisites)
        return plan.owned

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        owned = self._apply(props, set())
        return dynamic.CreateResult(id_=props["zone"], outs={**props, "owned": owned})

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        owned = self._apply(news, set(olds.get("owned") or []))
        return dynamic.UpdateResult(outs={**news, "owned": owned})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        client = self._client(props)
        try:
            live = client.transfer(props["zone"])
        except DnsZoneNotServed:
            return  # the zone itself is gone, and our records with it
        plan = plan_changes(props["zone"], [], set(props.get("owned") or []), live)
        client.update(props["zone"], plan.changes, plan.prerequisites)

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        client = self._client(props)
        try:
            live = client.transfer(props["zone"])
        except DnsZoneNotServed:
            return dynamic.ReadResult(id_="", outs={})
        owned = list(props.get("owned") or [])
        outs = {**props, "records": live_records(live, owned, props.get("records") or [])}
        return dynamic.ReadResult(id_=id_, outs=outs)


class DnsRecordSet(dynamic.Resource, module="dns", name="RecordSet"):
    """All records this stack publishes in one zone; ``owned`` lists the slots it manages."""

    zone: pulumi.Output[str]
    records: pulumi.Output[list]
    owned: pulumi.Output[list]

    def __init__(
        self,
        name: str,
        zone: pulumi.Input[str],
        records: pulumi.Input[list],
        server: pulumi.Input[str] = "127.0.0.1",
        port: pulumi.Input[int] = 53,
        tsig_key_name: pulumi.Input[str] = "penguinmails-dev",
        tsig_algorithm: pulumi.Input[str] = "hmac-sha256",
        max_change_share: pulumi.Input[float] = 0.5,
        adopt_existing: bool = False,
        resolvers: list[str] | None = None,
        default_ttl: int = 3600,
        force: bool = False,
        backend: str = "rfc2136",
        route53_zone_id: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "zone": zone,
            "backend": backend,
            "route53_zone_id": route53_zone_id,
            "records": records,
            "server": server,
            "port": port,
            "tsig_key_name": tsig_key_name,
            "tsig_algorithm": tsig_algorithm,
            "max_change_share": max_change_share,
            "adopt_existing": adopt_existing,
            "resolvers": resolvers or [],
            "default_ttl": default_ttl,
            "force": force,
            "owned": None,
        }
        super().__init__(DnsRecordSetProvider(), name, props, opts)


# Not "bits": replacing a key under the same selector would break signatures until every host has the new
# key. A new size applies to keys made from then on, i.e. to the next selector (rotation).
DKIM_REPLACE_KEYS = ("domain", "selector")


class DkimKeyProvider(dynamic.ResourceProvider):
    """Makes the key once; the state is the truth (nothing lives outside it). Any change replaces it."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures = []
        inputs = dict(news)
        domain = news.get("domain")
        if not unknown(domain):
            try:
                inputs["domain"] = normalize_name(str(domain or ""))
            except RecordError as exc:
                failures.append(dynamic.CheckFailure("domain", str(exc)))
        selector = news.get("selector")
        if not unknown(selector) and not dkim.SELECTOR_RE.match(str(selector or "")):
            failures.append(dynamic.CheckFailure("selector", f"{selector!r} is not one lower-case DNS label"))
        bits = news.get("bits")
        if not unknown(bits) and not (
            isinstance(bits, int | float) and int(bits) == bits and dkim.MIN_BITS <= bits <= dkim.MAX_BITS
        ):
            failures.append(
                dynamic.CheckFailure(
                    "bits", f"RSA keys must have {dkim.MIN_BITS} to {dkim.MAX_BITS} bits, got {bits!r}"
                )
            )
        elif not unknown(bits):
            inputs["bits"] = int(bits)
        return dynamic.CheckResult(inputs, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        replaces = [key for key in DKIM_REPLACE_KEYS if olds.get(key) != news.get(key)]
        return dynamic.DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        private_pem, public = dkim.generate_key(int(props["bits"]))
        outs = {
            **props,
            "private_key_pem": private_pem,
            "public_key": public,
            "dns_value": dkim.dkim_txt(public),
            "created_at": _now().isoformat(timespec="seconds"),
        }
        return dynamic.CreateResult(id_=f"{props['selector']}._domainkey.{props['domain']}", outs=outs)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        kept = {key: olds[key] for key in ("private_key_pem", "public_key", "dns_value", "created_at")}
        return dynamic.UpdateResult(outs={**news, **kept})

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        return dynamic.ReadResult(id_=id_, outs=props)


class DkimKey(dynamic.Resource, module="dns", name="DkimKey"):
    """An RSA key for one (domain, selector); ``private_key_pem`` is always a secret output."""

    private_key_pem: pulumi.Output[str]
    public_key: pulumi.Output[str]
    dns_value: pulumi.Output[str]
    created_at: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        domain: pulumi.Input[str],
        selector: pulumi.Input[str],
        bits: int = dkim.MIN_BITS,
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "domain": domain,
            "selector": selector,
            "bits": bits,
            "private_key_pem": None,
            "public_key": None,
            "dns_value": None,
            "created_at": None,
        }
        secret_opts = pulumi.ResourceOptions(additional_secret_outputs=["private_key_pem"])
        super().__init__(DkimKeyProvider(), name, props, pulumi.ResourceOptions.merge(secret_opts, opts))
