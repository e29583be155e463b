"""The ``reputation:`` stack section: which DNSBL zones the sending IPs are checked against, and how often.

Defaults depend on the environment, so the fields that differ are ``None`` until asked through
:meth:`ReputationConfig.zones_for` and :meth:`ReputationConfig.interval_for`: a dev stack checks the devenv
BIND's local zone every 30 s (tests must never query public lists), other stacks the major public lists
every 15 minutes. Commercial services (Spamhaus DQS …) take a key inside the query name
(``<reversed ip>.<key>.zen.dq.spamhaus.net``); the key is a secret config value named by ``query_keys``
and never passes through this model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The major public lists. Spamhaus answers public resolvers with 127.255.255.254 (refused), so production
# stacks point ``resolvers`` at their own recursive resolver or use a DQS key.
PUBLIC_ZONES = (
    "zen.spamhaus.org",
    "bl.spamcop.net",
    "b.barracudacentral.org",
    "dnsbl.sorbs.net",
    "psbl.surriel.com",
)
# The devenv BIND serves this zone (devenv/bind.py); tests list and clear IPs in it with TSIG updates.
DEV_ZONE = "dnsbl.penguinmails.test"
DEV_INTERVAL_SECONDS = 30.0
INTERVAL_SECONDS = 900.0
# Secret config names a query key may have: ``dnsblKey<Name>`` (modules/config/loader.py accepts them
# as secret keys, and only as secrets).
QUERY_KEY_SECRET_RE = re.compile(r"^dnsblKey[A-Z][A-Za-z0-9]{0,62}$")


# As modules/config/model.py (which imports this module, so it cannot import from there).
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})+$")


class Strict(BaseModel):
    """Unknown keys are errors, like every config section."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def is_query_key_secret(name: str) -> bool:
    """True for a secret config key that holds a DNSBL query key (``dnsblKeySpamhaus``)."""
    return bool(QUERY_KEY_SECRET_RE.match(name))


def _zone(value: str) -> str:
    value = value.rstrip(".").lower()
    if not HOSTNAME_RE.match(value):
        raise ValueError(f"{value!r} is not a DNS zone name")
    return value


def split_hostport(value: str, default_port: int = 53) -> tuple[str, int]:
    """``"127.0.0.1:5353"`` → ``("127.0.0.1", 5353)``; IPv6 as ``[::1]:5353``; a bare address gets port 53."""
    import ipaddress

    text = value.strip()
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"{value!r}: expected [ipv6]:port")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text.isdigit():
            raise ValueError(f"{value!r}: the port is not a number")
        port = int(port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{value!r}: a resolver is an IP address with an optional port (host:port)"
        ) from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{value!r}: the port must be between 1 and 65535")
    return host, port


class DnsblQueryKey(Strict):
    """A commercial DNSBL reached with a key; ``secret`` names the secret config value holding it."""

    zone: str = Field(description="the service's zone, e.g. zen.dq.spamhaus.net")
    secret: str = Field(description="secret config key, dnsblKey<Name> (pulumi config set --secret …)")

    @field_validator("zone")
    @classmethod
    def _zone_name(cls, value: str) -> str:
        return _zone(value)

    @field_validator("secret")
    @classmethod
    def _secret_name(cls, value: str) -> str:
        if not is_query_key_secret(value):
            raise ValueError(
                f"{value!r}: a query key's secret config name is dnsblKey<Name>, e.g. dnsblKeySpamhaus"
            )
        return value


def check_hostports(values: list[str]) -> list[str]:
    """Every value is ``ip`` or ``ip:port`` (split_hostport raises naming the bad one)."""
    for value in values:
        split_hostport(value)
    return values


class ReputationConfig(Strict):
    """DNSBL checks of every sending IP; listed IPs are quarantined (modules/reputation)."""

    enabled: bool = True
    # None: the environment's default (dev: the devenv's local zone; otherwise PUBLIC_ZONES).
    dnsbl_zones: list[str] | None = None
    query_keys: list[DnsblQueryKey] = Field(default_factory=list)
    # None: 30 s in a dev stack, 15 minutes otherwise.
    check_interval: float | None = Field(default=None, ge=5, le=86400, description="seconds between checks")
    concurrency: int = Field(default=50, ge=1, le=1000, description="DNS queries in flight at once")
    timeout: float = Field(default=2.0, gt=0, le=30, description="seconds per query")
    # "ip" or "ip:port"; empty: the dev stack's BIND in dev, the host's resolv.conf elsewhere.
    resolvers: list[str] = Field(default_factory=list)

    @field_validator("dnsbl_zones")
    @classmethod
    def _zones(cls, zones: list[str] | None) -> list[str] | None:
        if zones is None:
            return None
        names = [_zone(zone) for zone in zones]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"zone listed twice: {', '.join(twice)}")
        return names

    @field_validator("resolvers")
    @classmethod
    def _resolvers(cls, values: list[str]) -> list[str]:
        return check_hostports(values)

    def zones_for(self, environment: str) -> list[str]:
        """The zones to check without a key (the explicit list, or the environment's default)."""
        if self.dnsbl_zones is not None:
            return list(self.dnsbl_zones)
        return [DEV_ZONE] if environment == "dev" else list(PUBLIC_ZONES)

    def interval_for(self, environment: str) -> float:
        if self.check_interval is not None:
            return float(self.check_interval)
        return DEV_INTERVAL_SECONDS if environment == "dev" else INTERVAL_SECONDS

    def zone_entries(self, environment: str, secrets: Mapping[str, str]) -> list[dict[str, str | None]]:
        """The exporter config's ``dnsbl_zones``: ``{name, query_key}`` per zone (keys from ``secrets``).

        A missing secret is an error naming the key, never a silent skip (the check would look clean)."""
        entries: list[dict[str, str | None]] = [
            {"name": z, "query_key": None} for z in self.zones_for(environment)
        ]
        missing = [k.secret for k in self.query_keys if not secrets.get(k.secret)]
        if missing:
            raise ValueError(
                f"reputation.query_keys: secret config {', '.join(missing)} not set "
                f"(pulumi config set --secret {missing[0]} …)"
            )
        entries += [{"name": k.zone, "query_key": secrets[k.secret]} for k in self.query_keys]
        return entries
