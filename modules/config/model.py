"""The typed model of a whole PenguinMails stack.

One pydantic model describes everything a stack declares: the Hostwinds fleet, the four PostgreSQL tiers,
Redis, DNS zones, tenants with their sending domains, and mail settings. Later issues extend it. It is
validated before the Pulumi program creates or reads any resource, so a typo fails the preview with the key
and the reason instead of half-way through an update.

Secrets (API keys, admin passwords, TSIG keys) are *not* fields here: they are read as Pulumi secrets by
:mod:`modules.config.loader` and never pass through this model in plain text. ``secretsFromEnv`` only
names the CI variables that may carry them on staging and production stacks.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from modules.config.backup import SECRET_KEYS as BACKUP_SECRET_KEYS
from modules.config.backup import BackupConfig
from modules.config.reputation import ReputationConfig
from modules.config.sending_ips import check_additional_ips, check_sending_ip, sending_ip_reasons
from modules.config.warmup import WarmupConfig

# A DNS label (RFC 1035 letters-digits-hyphen, 1..63) and a hostname made of at least two of them.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})+$")
SLUG_RE = re.compile(r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$")
SELECTOR_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
TIERS = ("oltp", "content", "analytics", "queue")
# Secret config values (``pulumi config set --secret KEY``); they never pass through the model.
SECRET_KEYS = ("hostwindsApiKey", "redisAdminPassword", "postgresAdminPassword", "tsigSecret")
# mail.acme's narrow DNS-01 key (added on its own line so other sections' keys merge cleanly).
SECRET_KEYS += ("acmeTsigSecret",)
# postgres.backup: the S3 keys and the repository cipher pass (modules/config/backup.py).
SECRET_KEYS += BACKUP_SECRET_KEYS
# What ``secretsFromEnv`` may name: every secret key, and one PostgreSQL admin password per tier.
SECRETS_FROM_ENV_KEYS = (*SECRET_KEYS, *(f"postgresAdminPassword.{tier}" for tier in TIERS))
# The devenv exports PENGUINMAILS_* variables; a staging or production stack must never read them.
DEVENV_PREFIX = "PENGUINMAILS_"
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _check_hostname(value: str) -> str:
    value = value.rstrip(".").lower()
    if not HOSTNAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid DNS name (letters, digits, hyphens; dot-separated labels)"
        )
    return value


Hostname = Annotated[str, Field(min_length=3, max_length=253)]


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors (a typo must not be ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class HostwindsConfig(Strict):
    """Where the Hostwinds Cloud API is. The API key is the secret config value ``hostwindsApiKey``."""

    endpoint: str = "https://clients.hostwinds.com/cloud/api.php"
    request_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    build_timeout_seconds: int = Field(default=1800, ge=10, le=7200)
    # Poll interval of builds; how long to look for the instance after a lost add_instance answer before
    # ordering again; how many orders one create may place (README.md, section Hostwinds).
    poll_interval_seconds: float = Field(default=15.0, gt=0, le=300)
    lost_answer_wait_seconds: float = Field(default=60.0, ge=0, le=1800)
    create_attempts: int = Field(default=2, ge=1, le=5)

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_http(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError("must be an http(s) URL such as https://clients.hostwinds.com/cloud/api.php")
        return value


class FleetConfig(Strict):
    """The sending VPS fleet: N identical nodes named from a pattern."""

    nodes: int = Field(default=0, ge=0, le=500)
    name_pattern: str = "mx-{index:02d}"
    location_id: int = Field(default=1, ge=1)
    plan_id: int = Field(default=1, ge=1, description="Hostwinds plan rid from get_price_list")
    image: str = Field(default="debian-12", min_length=1)
    ssh_public_keys: list[str] = Field(default_factory=list)
    ssh_key_names: list[str] = Field(
        default_factory=list, description="names of SSH keys already on the Hostwinds account"
    )
    rdns_domain: str | None = None
    firewall_profile: str | None = "smtp"
    billing_cycle: Literal["hourly", "monthly", "quarterly", "semiannually", "annually"] = "hourly"
    # Node index (1-based) → IPv4 addresses bought in the Hostwinds portal for that node (no API action
    # buys one); each becomes sending IP ip2, ip3, … with PTR <node>-<n>.<rdns_domain> (README, Fleet).
    additional_ips: dict[int, list[str]] = Field(default_factory=dict)
    # Budget the policy pack enforces (policies/, rule fleet-budget): at most max_nodes nodes and
    # max_monthly_cost a month, priced with plan_prices (plan id → monthly price, from the price list).
    max_nodes: int | None = Field(default=None, ge=0, le=500)
    max_monthly_cost: float | None = Field(default=None, gt=0)
    plan_prices: dict[int, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)

    @field_validator("additional_ips")
    @classmethod
    def _additional_ips(cls, value: dict[int, list[str]]) -> dict[int, list[str]]:
        return check_additional_ips(value)

    @model_validator(mode="after")
    def _budget_priced(self) -> FleetConfig:
        if self.max_monthly_cost is not None and self.plan_id not in self.plan_prices:
            raise ValueError(
                f"plan_prices: give the monthly price of plan {self.plan_id} so max_monthly_cost can be checked"
            )
        return self

    @field_validator("name_pattern")
    @classmethod
    def _pattern_has_index(cls, value: str) -> str:
        if "{index" not in value:
            raise ValueError("must contain {index} (for example 'mx-{index:02d}') so node names are unique")
        try:
            sample = value.format(index=1)
        except (KeyError, ValueError, IndexError) as exc:
            raise ValueError(f"is not a valid format pattern: {exc}") from None
        if not re.match(rf"^{_LABEL}$", sample):
            raise ValueError(f"gives {sample!r}, which is not a valid host label")
        return value

    @field_validator("ssh_public_keys")
    @classmethod
    def _keys_look_like_openssh(cls, keys: list[str]) -> list[str]:
        for position, key in enumerate(keys):
            parts = key.split()
            if len(parts) < 2 or parts[0] not in {"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256"}:
                raise ValueError(
                    f"item {position} is not an OpenSSH public key ('ssh-ed25519 AAAA… comment')"
                )
        return keys

    @field_validator("ssh_key_names")
    @classmethod
    def _key_names(cls, names: list[str]) -> list[str]:
        for position, name in enumerate(names):
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", name):
                raise ValueError(f"item {position} {name!r}: 1-64 letters, digits, '.', '_' or '-'")
        return names

    @field_validator("rdns_domain")
    @classmethod
    def _rdns_domain_valid(cls, value: str | None) -> str | None:
        return None if value is None else _check_hostname(value)

    def node_names(self) -> list[str]:
        return [self.name_pattern.format(index=i) for i in range(1, self.nodes + 1)]

    def node_fqdn(self, name: str) -> str | None:
        return f"{name}.{self.rdns_domain}" if self.rdns_domain else None

    def extra_ips(self, index: int) -> list[tuple[str, str, str]]:
        """Node ``index``'s additional sending IPs as (name, address, PTR host): ip2, ip3, … in order."""
        name = self.name_pattern.format(index=index)
        return [
            (f"ip{n}", address, f"{name}-{n}.{self.rdns_domain}")
            for n, address in enumerate(self.additional_ips.get(index, []), start=2)
        ]


def _postgres_url_fields(url: str, given: dict) -> dict[str, object]:
    """Split a server URL into the tier fields; refuse a password in it and fields given twice."""
    from urllib.parse import parse_qs, unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise ValueError("url must look like postgresql://admin@host:5432/database?sslmode=verify-full")
    if parts.password is not None:
        raise ValueError(
            "url must not contain a password; set `pulumi config set --secret postgresAdminPassword`"
        )
    twice = sorted(k for k in ("host", "port", "admin_user", "database", "sslmode") if k in given)
    if twice:
        raise ValueError(f"give either url or {', '.join(twice)}, not both")
    query = parse_qs(parts.query)
    unknown = sorted(set(query) - {"sslmode"})
    if unknown:
        raise ValueError(f"url: unsupported parameter(s) {', '.join(unknown)} (only sslmode)")
    fields: dict[str, object] = {"mode": given.get("mode", "server"), "host": parts.hostname}
    try:
        fields["port"] = parts.port or 5432
    except ValueError:
        raise ValueError("url: the port is not a number between 1 and 65535") from None
    if parts.username:
        fields["admin_user"] = unquote(parts.username)
    if parts.path.strip("/"):
        fields["database"] = unquote(parts.path.strip("/"))
    if "sslmode" in query:
        fields["sslmode"] = query["sslmode"][-1]
    return fields


# Days a tier keeps its history rows before the daily retention run deletes them: the platform docs' data
# retention (content "configurable, 7+ yrs": 2555 days; failed jobs 1 year; analytics events up to 365 days;
# OLTP has no registered table yet). Deleting is for good, so where the docs give a range the default is the
# longer end. Not the backup retention (OLTP 90, Content 180, Queue 30, Analytics 365: postgres.backup).
DEFAULT_DATA_RETENTION_DAYS = {"oltp": 90, "content": 2555, "queue": 365, "analytics": 365}
RETAINED_TIERS = ("content", "queue", "analytics")  # the tiers whose migrations register retention policies


class PostgresVpsConfig(FleetConfig):
    """The VPS the stack orders for a tier with ``mode: fleet``: one primary, and a streaming replica with
    ``replicas: 1`` (ansible/playbooks/postgresql.yml). It sends no mail, so no sending IPs."""

    nodes: int = Field(default=1, ge=1, le=1, description="one primary (the replica is `replicas`)")
    name_pattern: str = "pg-{index:02d}"
    firewall_profile: str | None = None
    replicas: int = Field(default=0, ge=0, le=1)
    port: int = Field(default=5432, ge=1, le=65535)
    # Who may log in (CIDR): the platform's networks, the controller that runs `pulumi up` included. A dev
    # stack adds this machine's address on the podman bridge.
    allowed_networks: list[str] = Field(default_factory=list)
    # MiB the server is sized for (shared_buffers 25 %, cache 75 %); 0: the host's memory.
    memory_mb: int = Field(default=0, ge=0)
    max_connections: int = Field(default=200, ge=10, le=10000)
    # WAL archiving (for example a pgBackRest archive-push); empty: archive_mode off (no PITR).
    archive_command: str = ""

    @field_validator("additional_ips")
    @classmethod
    def _no_sending_ips(cls, value: dict[int, list[str]]) -> dict[int, list[str]]:
        if value:
            raise ValueError("only the sending fleet (fleet.additional_ips) carries additional sending IPs")
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        import ipaddress

        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(f"{value!r} is not a network (CIDR such as 10.0.0.0/24)") from None
            if "/" not in value:
                raise ValueError(f"{value!r} needs a prefix length (such as /32)")
        return values


class PostgresTierConfig(Strict):
    """One PostgreSQL tier: a local dev server, a server URL (admin password is a secret config value), or
    a VPS the stack orders and converges (``fleet``)."""

    mode: Literal["local", "server", "fleet"] = "local"
    host: str = "127.0.0.1"
    port: int = Field(default=5433, ge=1, le=65535)
    admin_user: str = Field(default="postgres", pattern=r"^[A-Za-z_][A-Za-z0-9_.@-]{0,62}$")
    database: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
    sslmode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    # postgresql://admin@host:port/database?sslmode=verify-full (no password: that is postgresAdminPassword).
    url: str | None = None
    enabled: bool = True
    # pg_cron: the stack schedules partition maintenance on the server; external: run
    # `python -m modules.postgres.maintenance` hourly from the host's own scheduler.
    partition_schedule: Literal["pg_cron", "external"] = "pg_cron"
    # Database <prefix>_<tier>, roles <prefix>_<tier>_<role>; default pm_<stack> so stacks can share a server.
    name_prefix: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,29}$")
    create_database: bool = Field(default=True, description="false when the server's database already exists")
    # Row retention (modules/postgres/retention.py): rows of the tier's history tables older than this many
    # days are deleted daily; None: the tier's default, DEFAULT_DATA_RETENTION_DAYS. Not backup retention.
    data_retention_days: int | None = Field(default=None, ge=1, le=36500)
    # pg_cron: the stack schedules the daily retention run; external: run
    # `python -m modules.postgres.retention` daily from the host's own scheduler.
    retention_schedule: Literal["pg_cron", "external"] = "pg_cron"
    # PgBouncer (transaction mode) in front of the tier: app_pooled_url / readonly_pooled_url; direct URLs stay
    # for migrations, advisory locks and LISTEN. Local tiers only so far (the devenv's pooler). pool_size:
    # server connections per role and for the database; None is the tier's default (modules/postgres/pooler.py).
    pooling: bool = True
    pool_size: int | None = Field(default=None, ge=1, le=1000)
    pool_port: int = Field(default=6433, ge=1, le=65535)

    def retention_days(self, tier: str) -> int:
        """The configured data_retention_days, or the tier's default."""
        return self.data_retention_days or DEFAULT_DATA_RETENTION_DAYS[tier]

    @model_validator(mode="before")
    @classmethod
    def _split_url(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("url"):
            return {**data, **_postgres_url_fields(str(data["url"]), data)}
        return data

    # mode fleet: the VPS (and replica) the stack orders for this tier.
    vps: PostgresVpsConfig | None = None

    @model_validator(mode="after")
    def _fleet_needs_vps(self) -> PostgresTierConfig:
        if self.mode == "fleet" and self.vps is None:
            raise ValueError("mode is fleet: describe the host in vps (plan_id, location_id, ssh keys)")
        if self.mode != "fleet" and self.vps is not None:
            raise ValueError("vps is only used with mode: fleet")
        if self.mode == "fleet" and self.url:
            raise ValueError("a fleet tier's address comes from its VPS: give no url")
        return self

    @model_validator(mode="after")
    def _server_needs_tls(self) -> PostgresTierConfig:
        if self.mode == "server" and self.sslmode in ("disable", "prefer"):
            raise ValueError("sslmode must be require, verify-ca or verify-full for a remote server")
        if self.mode == "local" and self.host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("a local tier must listen on loopback (127.0.0.1, localhost or ::1)")
        return self


class PostgresConfig(Strict):
    oltp: PostgresTierConfig = PostgresTierConfig()
    content: PostgresTierConfig = PostgresTierConfig()
    analytics: PostgresTierConfig = PostgresTierConfig()
    queue: PostgresTierConfig = PostgresTierConfig()
    # pgBackRest to S3 with PITR; one stanza per cluster (modules/postgres/backup/).
    backup: BackupConfig = BackupConfig()

    def tiers(self) -> dict[str, PostgresTierConfig]:
        return {tier: getattr(self, tier) for tier in TIERS}


class _SingleHostVps(FleetConfig):
    """A one-node VPS for a platform service (Redis, monitoring): it sends no mail, so no sending IPs."""

    @field_validator("additional_ips")
    @classmethod
    def _no_sending_ips(cls, value: dict[int, list[str]]) -> dict[int, list[str]]:
        if value:
            raise ValueError("only the sending fleet (fleet.additional_ips) carries additional sending IPs")
        return value


class RedisVpsConfig(_SingleHostVps):
    """The VPS the stack orders for the queue's Redis when ``redis.deploy`` is ``vps``: one node."""

    nodes: int = Field(default=1, ge=1, le=1, description="one Redis host (no cluster)")
    name_pattern: str = "redis-{index:02d}"
    firewall_profile: str | None = None
    maxmemory: str = Field(default="512mb", pattern=r"^[0-9]+([kmg]b)?$")
    tls_port: int = Field(default=6380, ge=1, le=65535)


class RedisConfig(Strict):
    """The Redis used by the queue; the stack manages an ACL user for the workers on it."""

    mode: Literal["local", "server"] = "local"
    host: str = "127.0.0.1"
    port: int = Field(default=6390, ge=1, le=65535)
    tls: bool = False
    queue_user: str = Field(default="penguinmails-queue", pattern=r"^[a-z][a-z0-9_-]{2,63}$")
    key_prefixes: list[str] = Field(default_factory=lambda: ["queue:"], min_length=1)
    maxmemory_policy: Literal["noeviction", "allkeys-lru", "volatile-lru"] = "noeviction"
    # external: a Redis the stack only reaches (the devenv's in dev) and where RedisUser manages the queue
    # user; vps: a host the stack converges with the redis role (modules/ansible/redis_host.py), whose
    # ACL file holds the queue user.
    deploy: Literal["external", "vps"] = "external"
    vps: RedisVpsConfig | None = None

    @model_validator(mode="after")
    def _vps_given_for_vps(self) -> RedisConfig:
        if self.deploy == "vps" and self.vps is None:
            raise ValueError(
                "redis.deploy is vps: describe the host in redis.vps (plan_id, location_id, ssh keys)"
            )
        if self.deploy == "external" and self.vps is not None:
            raise ValueError("redis.vps is only used with redis.deploy: vps")
        return self

    @field_validator("deploy")
    @classmethod
    def _vps_speaks_tls(cls, value: str, info: ValidationInfo) -> str:
        # tls comes before deploy, so it is validated already (absent when it was itself invalid).
        if value == "vps" and info.data.get("tls") is False:
            raise ValueError("a Redis VPS serves TLS only: set redis.tls to true as well")
        return value


class DnsRecordConfig(Strict):
    """A record to publish beside the generated ones; ``name`` is relative to the zone (``@`` = apex)."""

    name: str = Field(min_length=1, max_length=253)
    type: Literal["A", "AAAA", "CNAME", "MX", "PTR", "TXT"]
    ttl: int | None = Field(default=None, ge=30, le=604800)
    values: list[str] = Field(min_length=1)


class DnsZoneConfig(Strict):
    """An authoritative zone updated with RFC 2136; the TSIG secret is secret config ``tsigSecret``."""

    name: str
    server: str = "127.0.0.1"
    port: int = Field(default=5353, ge=1, le=65535)
    tsig_key_name: str = "penguinmails-dev"
    tsig_algorithm: Literal["hmac-sha256", "hmac-sha512"] = "hmac-sha256"
    max_change_share: float = Field(default=0.5, gt=0, le=1)
    adopt_existing: bool = Field(default=False, description="take over records already there (opt-in)")
    # route53: changes go through the Route 53 API (boto3 credential chain) instead of RFC 2136.
    backend: Literal["rfc2136", "route53"] = "rfc2136"
    route53_zone_id: str | None = Field(default=None, pattern=r"^(/hostedzone/)?[A-Z0-9]{1,32}$")
    records: list[DnsRecordConfig] = Field(default_factory=list, description="extra records to publish")

    @field_validator("name")
    @classmethod
    def _zone_name(cls, value: str) -> str:
        return _check_hostname(value)

    @field_validator("server")
    @classmethod
    def _server_is_ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(
                "must be an IP address (RFC 2136 updates go to the primary by address)"
            ) from None
        return value


class DnsConfig(Strict):
    ttl: int = Field(default=3600, ge=60, le=86400)
    zones: list[DnsZoneConfig] = Field(default_factory=list)
    # Where preview-time checks resolve names outside the plan (SPF includes …): "ip" or "ip:port"; none
    # means the system resolver.
    resolvers: list[str] = Field(default_factory=list)

    @field_validator("zones")
    @classmethod
    def _unique_zones(cls, zones: list[DnsZoneConfig]) -> list[DnsZoneConfig]:
        names = [zone.name for zone in zones]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"zone declared twice: {', '.join(duplicates)}")
        return zones

    def zone_for(self, domain: str) -> DnsZoneConfig | None:
        """The most specific declared zone that contains ``domain``."""
        matches = [z for z in self.zones if domain == z.name or domain.endswith("." + z.name)]
        return max(matches, key=lambda z: len(z.name), default=None)


class DmarcConfig(Strict):
    """A domain's DMARC record (RFC 9989, DMARCbis). ``rua`` empty: aggregate reports go to the stack's
    report mailbox (``mail.reports``) when one is configured."""

    policy: Literal["none", "quarantine", "reject"] = "none"
    # t=y: receivers treat quarantine/reject one step softer while the policy is being tried out.
    testing: bool = False
    # Refused: RFC 9989 removed pct (see _pct_removed); the field only exists to name it in the error.
    pct: int | None = Field(default=None, exclude=True)
    rua: list[str] = Field(default_factory=list)
    ruf: list[str] = Field(default_factory=list)
    subdomain_policy: Literal["none", "quarantine", "reject"] | None = None
    # np: the policy for subdomains that do not exist (sp, then p, when absent).
    np: Literal["none", "quarantine", "reject"] | None = None
    # psd: y only for a public suffix domain (a registry), which a sending domain never is.
    psd: Literal["n", "u"] | None = None
    adkim: Literal["r", "s"] = "r"
    aspf: Literal["r", "s"] = "r"

    @field_validator("pct", mode="before")
    @classmethod
    def _pct_removed(cls, value: object) -> None:
        # Refused rather than mapped to t=y: pct=10 asked for the policy on 10% of failing mail, t=y
        # asks for none of it, so a silent mapping would change what the record means.
        if value is not None:
            raise ValueError(
                "pct was removed in RFC 9989 (DMARCbis) and receivers ignore it; "
                "remove it and set testing: true (t=y) while trying out a policy"
            )
        return None

    @field_validator("psd", mode="before")
    @classmethod
    def _psd_not_yes(cls, value: object) -> object:
        if isinstance(value, str) and value.lower() == "y":
            raise ValueError(
                "psd=y declares a public suffix domain (a registry such as a TLD); a sending domain is "
                "an organizational domain: use n or leave it out"
            )
        return value

    @field_validator("rua", "ruf")
    @classmethod
    def _mailto(cls, values: list[str]) -> list[str]:
        for value in values:
            if not re.match(r"^mailto:[^@\s]+@[^@\s]+$", value):
                raise ValueError(f"{value!r} must be a mailto: URI such as mailto:dmarc@example.com")
        return values


class SendingDomainConfig(Strict):
    """A tenant's sending domain and the fleet node whose IP sends for it."""

    name: str
    sending_node: int = Field(default=1, ge=1, description="1-based index of the fleet node that sends")
    dkim_selector: str = "pm1"
    dmarc: DmarcConfig = DmarcConfig()
    # Selectors replaced by dkim_selector: still published until mail.dkim_rotation_overlap_days have
    # passed since the new key was made; drop them from this list afterwards to delete their keys.
    dkim_previous_selectors: list[str] = Field(default_factory=list)
    spf_include: list[str] = Field(default_factory=list, description="other senders, e.g. _spf.esp.example")
    spf_all: Literal["~all", "-all"] = "~all"
    # The sending node's IP this domain leaves from: "main" (default), "ip2"…, or one of the node's
    # fleet.additional_ips addresses.
    sending_ip: str | None = None

    @field_validator("sending_ip")
    @classmethod
    def _sending_ip(cls, value: str | None) -> str | None:
        return check_sending_ip(value)

    @field_validator("name")
    @classmethod
    def _domain_name(cls, value: str) -> str:
        return _check_hostname(value)

    @field_validator("dkim_selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        if not SELECTOR_RE.match(value):
            raise ValueError("must be a single lower-case DNS label such as 'pm1' or '2026q4'")
        return value

    @field_validator("dkim_previous_selectors")
    @classmethod
    def _previous_selectors(cls, values: list[str]) -> list[str]:
        for value in values:
            cls._selector(value)
        return values

    @field_validator("spf_include")
    @classmethod
    def _includes(cls, values: list[str]) -> list[str]:
        for value in values:
            if not re.match(r"^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z]{2,63}$", value):
                raise ValueError(f"{value!r} is not a domain name such as _spf.example.com")
        return values

    @model_validator(mode="after")
    def _rotation(self) -> SendingDomainConfig:
        if self.dkim_selector in self.dkim_previous_selectors:
            raise ValueError(f"dkim_previous_selectors: {self.dkim_selector!r} is the active dkim_selector")
        return self


class TenantConfig(Strict):
    slug: str
    domains: list[SendingDomainConfig] = Field(default_factory=list)

    @field_validator("slug")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG_RE.match(value):
            raise ValueError("must be 3-40 lower-case letters, digits or hyphens, starting with a letter")
        return value


class ReportsConfig(Strict):
    """The stack's own report mailboxes: DMARC aggregate (``rua``) and TLS-RPT reports for every domain
    that names no address of its own land in real mailboxes on one node, which receives mail for
    ``domain`` (its MX is published, the node's Postfix and Dovecot accept it)."""

    domain: str
    node: int = Field(default=1, ge=1, description="1-based index of the fleet node holding the mailboxes")
    dmarc_mailbox: str = Field(default="dmarc-reports", pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    tls_rpt_mailbox: str = Field(default="tlsrpt", pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")

    @field_validator("domain")
    @classmethod
    def _domain_name(cls, value: str) -> str:
        return _check_hostname(value)

    @property
    def dmarc_address(self) -> str:
        return f"{self.dmarc_mailbox}@{self.domain}"

    @property
    def tls_rpt_address(self) -> str:
        return f"{self.tls_rpt_mailbox}@{self.domain}"


# Let's Encrypt's staging directory: where a stack's hosts get certificates unless mail.acme says otherwise.
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"


class AcmeConfig(Strict):
    """ACME certificates for the mail hosts (certbot, DNS-01 through RFC 2136).

    The TSIG key is a narrow one (TXT at ``_acme-challenge.<name>`` only), secret config
    ``acmeTsigSecret``; never the zones' ``tsigSecret``. A dev stack takes the directory, the key and the
    DNS address from the devenv (Pebble, BIND) instead.
    """

    directory_url: str = LETSENCRYPT_STAGING
    contact_email: str
    tsig_key_name: str = "penguinmails-acme-dev"
    tsig_algorithm: Literal["hmac-sha256", "hmac-sha512"] = "hmac-sha256"
    # The DNS primary as the hosts reach it (the podman bridge in dev).
    dns_server: str = "10.88.0.1"
    dns_port: int = Field(default=5353, ge=1, le=65535)
    propagation_seconds: int = Field(default=30, ge=0, le=3600)
    renew_before_expiry_days: int = Field(default=30, ge=1, le=365)
    key_type: Literal["ecdsa", "rsa"] = "ecdsa"

    @field_validator("directory_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not re.match(r"^https://[^\s/]+(/\S*)?$", value):
            raise ValueError("must be an https:// URL of an ACME directory")
        return value

    @field_validator("contact_email")
    @classmethod
    def _email(cls, value: str) -> str:
        if not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", value):
            raise ValueError("must be an e-mail address such as hostmaster@example.com")
        return value

    @field_validator("tsig_key_name")
    @classmethod
    def _key_name(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", value):
            raise ValueError("must be a TSIG key name (letters, digits, '.', '_' or '-')")
        return value

    @field_validator("dns_server")
    @classmethod
    def _server_is_ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(
                "must be an IP address (RFC 2136 updates go to the primary by address)"
            ) from None
        return value


class MailConfig(Strict):
    flavor: Literal["native", "mailu"] = "native"
    hostname_prefix: str = "mail"
    # Deprecated: the day new warm-up plans start on (modules/config/warmup.py start_day; README "IP warm-up").
    warmup_stage: int = Field(default=1, ge=1, le=21, description="deprecated: use warmup.start_day")
    tls_min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    message_size_limit_mb: int = Field(default=25, ge=1, le=100)
    mta_sts_mode: Literal["enforce", "testing", "none"] = "testing"
    mta_sts_max_age: int = Field(default=604800, ge=86400, le=31557600, description="seconds")
    # The CA bundle `dns verify` validates policy hosts against; none: the system trust store. A dev stack
    # takes the devenv's PENGUINMAILS_DEV_CA_FILE first (the local ACME CA).
    mta_sts_ca_file: str | None = None
    tls_rpt_rua: list[str] = Field(
        default_factory=list, description="default: the report mailbox of mail.reports, else tlsrpt@<domain>"
    )
    dkim_key_bits: int = Field(default=2048, ge=2048, le=4096)
    dkim_rotation_overlap_days: float = Field(default=7, ge=0, le=90)
    # ACME certificates for the hosts (native flavor); none keeps the common role's certificate.
    acme: AcmeConfig | None = None
    reports: ReportsConfig | None = None

    @model_validator(mode="after")
    def _enforce_needs_certificates(self) -> MailConfig:
        if self.mta_sts_mode == "enforce" and not mx_certificates_managed(self):
            raise ValueError(
                "mta_sts_mode: 'enforce' needs certificates the stack manages for the MX hosts (set up "
                f"{MANAGED_CERTIFICATES_FIELD}); with self-signed certificates, senders that honour the policy "
                "would refuse to deliver. Use 'testing' until then"
            )
        return self


# Where the stack's managed (ACME) certificates are configured; MTA-STS enforce needs them.
MANAGED_CERTIFICATES_FIELD = "mail.acme"


def mx_certificates_managed(mail: MailConfig) -> bool:
    """Whether the stack issues publicly valid certificates for its MX and policy hosts (ACME).

    Reads ``mail.acme`` (the ACME section; absent or None means the hosts keep self-signed certificates).
    """
    acme = getattr(mail, "acme", None)
    return acme is not None and getattr(acme, "enabled", True) is not False


def _secret_from_env_key(key: str) -> str:
    if key not in SECRETS_FROM_ENV_KEYS:
        raise ValueError(f"{key!r} is not a secret config key (known: {', '.join(SECRETS_FROM_ENV_KEYS)})")
    return key


def _ci_variable_name(name: str) -> str:
    if not ENV_NAME_RE.match(name):
        raise ValueError(
            "must be an environment variable name (letters, digits, '_'; not starting with a digit)"
        )
    if name.upper().startswith(DEVENV_PREFIX):
        raise ValueError(
            f"{DEVENV_PREFIX}* variables belong to the local devenv (tools/env.sh exports them); "
            "name a variable that CI sets, e.g. CI_HOSTWINDS_API_KEY"
        )
    return name


# Secret config key → the environment variable CI sets for it (staging and production stacks only).
SecretsFromEnv = dict[
    Annotated[str, AfterValidator(_secret_from_env_key)], Annotated[str, AfterValidator(_ci_variable_name)]
]


def _reports_reasons(config: StackConfig) -> list[str]:
    """mail.reports must name a domain we serve and a node that exists (and sends for it, if it sends)."""
    reports = config.mail.reports
    if reports is None:
        return []
    reasons = []
    if config.dns.zone_for(reports.domain) is None:
        reasons.append(f"mail.reports.domain: no zone in dns.zones contains {reports.domain}")
    if reports.node > config.fleet.nodes:
        reasons.append(
            f"mail.reports.node: node {reports.node} does not exist (fleet.nodes is {config.fleet.nodes})"
        )
    for _, domain in config.sending_domains():
        if domain.name == reports.domain and domain.sending_node != reports.node:
            reasons.append(
                f"mail.reports.node: {reports.domain} is a sending domain of node {domain.sending_node}, "
                f"whose MX receives its mail; set mail.reports.node to {domain.sending_node}"
            )
    return reasons


def _monitoring_reasons(config: StackConfig) -> list[str]:
    """A devenv Prometheus only for a dev stack; alert email only from a domain a fleet node sends for."""
    monitoring = config.monitoring
    reasons = []
    if monitoring.deploy == "devenv" and config.environment != "dev":
        reasons.append(
            f"monitoring.deploy: devenv is the local dev Prometheus; a {config.environment} stack uses vps or "
            "external"
        )
    vps = monitoring.vps
    if vps is not None and vps.email_from:
        domain = vps.email_from.rpartition("@")[2]
        if domain not in {d.name for _, d in config.sending_domains()}:
            reasons.append(
                f"monitoring.vps.email_from: {domain} is not a sending domain of this stack (the alert mail "
                "goes through the submission service of the node that sends for it)"
            )
        elif vps.email_from.partition("@")[0] == "postmaster":
            reasons.append(
                "monitoring.vps.email_from: postmaster@ is the domain's own mailbox; give the alerts their own "
                "address (for example alerts@)"
            )
        elif config.mail.flavor != "native":
            reasons.append(
                "monitoring.vps.email_from: alert mail needs mail.flavor native (its submission logins)"
            )
    return reasons


_HOSTPORT_RE = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$")


def _check_hostport(value: str) -> str:
    if not _HOSTPORT_RE.match(value):
        raise ValueError(f"{value!r} is not host:port (for example 10.0.0.5:9187)")
    return value


HostPort = Annotated[str, AfterValidator(_check_hostport)]


class MonitoringExporters(Strict):
    """Exporters the stack reaches but does not run (a hosted PostgreSQL's, a Redis of its own…).

    A dev stack uses the devenv's exporters; a component of a real stack with neither an exporter here
    nor one the stack deploys shows as missing in ``penguinmails monitoring coverage``.
    """

    postgres: dict[Literal["oltp", "content", "analytics", "queue"], HostPort] = Field(default_factory=dict)
    redis: HostPort | None = None
    bind: HostPort | None = None
    penguinmails: HostPort | None = None


class MonitoringVpsConfig(_SingleHostVps):
    """The VPS the stack orders for its monitoring when ``monitoring.deploy`` is ``vps``: one node running
    Prometheus, Alertmanager and the penguinmails exporter (ansible/playbooks/monitoring.yml)."""

    nodes: int = Field(default=1, ge=1, le=1, description="one monitoring host per stack")
    name_pattern: str = "mon-{index:02d}"
    firewall_profile: str | None = None
    retention_time: str = Field(default="30d", pattern=r"^[0-9]+[smhdwy]$")
    # Where Alertmanager posts every alert (webhook JSON).
    webhook_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    # Who gets every alert by email, sent as email_from through the submission service of the fleet node
    # that sends for email_from's domain: the platform's own mail path.
    email_to: list[str] = Field(default_factory=list)
    email_from: str | None = None

    @field_validator("email_to")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _EMAIL_RE.match(value):
                raise ValueError(f"{value!r} is not an email address")
        return values

    @field_validator("email_from")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL_RE.match(value):
            raise ValueError(f"{value!r} is not an email address")
        return value.lower() if value else value

    @model_validator(mode="after")
    def _somewhere_to_send(self) -> MonitoringVpsConfig:
        if not self.webhook_url and not self.email_to:
            raise ValueError("give webhook_url or email_to: alerts that reach nobody are not monitoring")
        if self.email_to and not self.email_from:
            raise ValueError("email_to needs email_from, an address of one of the stack's sending domains")
        return self


class MonitoringConfig(Strict):
    """Prometheus scrape targets generated from the stack (``enabled: false``: nothing watches it).

    ``deploy`` says who runs Prometheus: ``devenv`` (the dev stack's, on loopback), ``vps`` (a monitoring
    host the stack orders and converges), ``external`` (a Prometheus the stack only exports targets for).
    Unset: devenv in a dev stack, external elsewhere, so upgrading never orders a VPS nobody asked for.
    """

    enabled: bool = True
    exporters: MonitoringExporters = MonitoringExporters()
    # The Prometheus that `penguinmails monitoring coverage` asks (a real stack: through an SSH tunnel).
    prometheus_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    deploy: Literal["devenv", "vps", "external"] | None = None
    vps: MonitoringVpsConfig | None = None

    @model_validator(mode="after")
    def _vps_given_for_vps(self) -> MonitoringConfig:
        if self.deploy == "vps" and self.vps is None:
            raise ValueError(
                "monitoring.deploy is vps: describe the host in monitoring.vps (plan_id, location_id, ssh "
                "keys, webhook_url or email_to)"
            )
        if self.deploy != "vps" and self.vps is not None:
            raise ValueError("monitoring.vps is only used with monitoring.deploy: vps")
        return self

    def deploy_for(self, environment: str) -> str:
        """Who runs this stack's Prometheus (see the class)."""
        return self.deploy or ("devenv" if environment == "dev" else "external")


class StackConfig(Strict):
    """The whole stack. ``environment`` picks the embedded dev stack or a production one."""

    environment: Literal["dev", "staging", "production"] = "dev"
    hostwinds: HostwindsConfig = HostwindsConfig()
    fleet: FleetConfig = FleetConfig()
    postgres: PostgresConfig = PostgresConfig()
    redis: RedisConfig = RedisConfig()
    dns: DnsConfig = DnsConfig()
    tenants: list[TenantConfig] = Field(default_factory=list)
    mail: MailConfig = MailConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    reputation: ReputationConfig = ReputationConfig()
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    # Staging/production: where CI hands a secret over instead of the secret config value (the secret
    # config value wins when both are set). A dev stack reads the devenv's variables instead.
    secrets_from_env: SecretsFromEnv = Field(default_factory=dict, alias="secretsFromEnv")

    @model_validator(mode="after")
    def _cross_checks(self) -> StackConfig:
        reasons: list[str] = []
        if self.environment == "dev" and self.secrets_from_env:
            reasons.append(
                "secretsFromEnv: only staging and production stacks read CI variables (a dev stack takes "
                "its credentials from the devenv variables of tools/env.sh or from its secret config)"
            )
        slugs = [t.slug for t in self.tenants]
        for slug in sorted({s for s in slugs if slugs.count(s) > 1}):
            reasons.append(f"tenants: slug {slug!r} is used by more than one tenant")
        owners: dict[str, str] = {}
        for tenant in self.tenants:
            for domain in tenant.domains:
                if domain.name in owners:
                    reasons.append(
                        f"tenants[{tenant.slug}].domains: {domain.name} already belongs to "
                        f"tenant {owners[domain.name]!r}"
                    )
                owners[domain.name] = tenant.slug
                if self.dns.zone_for(domain.name) is None:
                    reasons.append(
                        f"tenants[{tenant.slug}].domains[{domain.name}]: no zone in dns.zones contains it"
                    )
                if domain.sending_node > self.fleet.nodes:
                    reasons.append(
                        f"tenants[{tenant.slug}].domains[{domain.name}].sending_node: node {domain.sending_node}"
                        f" does not exist (fleet.nodes is {self.fleet.nodes})"
                    )
        reasons += _reports_reasons(self)
        reasons += _monitoring_reasons(self)
        reasons += sending_ip_reasons(self)
        selectors = sorted({domain.dkim_selector for _, domain in self.sending_domains()})
        if self.mail.flavor == "mailu" and len(selectors) > 1:
            reasons.append(
                f"tenants: MailU signs every domain with one DKIM selector, but the domains use "
                f"{', '.join(selectors)}; give them the same dkim_selector or use mail.flavor native"
            )
        if self.environment == "production":
            for tier, cfg in self.postgres.tiers().items():
                if cfg.mode == "local":
                    reasons.append(f"postgres.{tier}.mode: a production stack cannot use a local server")
        if self.environment != "dev":
            for tier, cfg in self.postgres.tiers().items():
                if cfg.mode == "fleet" and cfg.vps is not None and not cfg.vps.allowed_networks:
                    reasons.append(
                        f"postgres.{tier}.vps.allowed_networks: list the platform's networks (the controller "
                        "running `pulumi up` included): nothing else may log in"
                    )
            if self.hostwinds.endpoint.startswith("http://"):
                reasons.append("hostwinds.endpoint: a production stack must use https")
        if reasons:
            raise ValueError("; ".join(reasons))
        return self

    def sending_domains(self) -> list[tuple[TenantConfig, SendingDomainConfig]]:
        return [(tenant, domain) for tenant in self.tenants for domain in tenant.domains]
