"""Per-IP delivery figures from Postfix's log: the input of the warm-up decision.

Each outbound delivery attempt is one line of the sending transport, e.g. (``maillog_file`` format)::

    Jun  3 10:00:01 mx-1 postfix/smtp-main/smtp[812]: 4Vq...: to=<a@example.org>, relay=..., status=sent (250 ok)

The syslog name carries the transport: ``postfix/smtp-<name>/smtp`` is the per-IP transport of sending IP
``<name>`` (the postfix role's master.cf), ``postfix/relay/smtp`` and ``postfix/smtp`` are the shared ones,
counted for the host's default IP. Local deliveries (lmtp, virtual, local) never leave through a sending IP
and are skipped. A deferred message is counted once per attempt: the deferral rate is what receivers
answered, not how many messages wait.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from modules.reputation.warmup import PROVIDER_DOMAINS, Figures

_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\S+|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) \S+ "
    r"postfix(?:/(?P<service>[A-Za-z0-9._-]+))?/smtp\[\d+\]: [0-9A-Za-z]+: "
    r"to=<(?P<to>[^>]*)>,.*? status=(?P<status>sent|deferred|bounced|expired)\b"
)
_PROVIDER_OF = {domain: group for group, domains in PROVIDER_DOMAINS.items() for domain in domains}


@dataclass
class IpFigures:
    delivered: int = 0
    deferred: int = 0
    bounced: int = 0
    last_sent_at: datetime | None = None
    providers: dict[str, int] = field(default_factory=dict)  # attempts per large receiver group

    def figures(self, complaints: int = 0) -> Figures:
        return Figures(self.delivered, self.deferred, self.bounced, complaints)


def _timestamp(text: str, now: datetime) -> datetime:
    """The line's time (UTC). ``maillog_file`` writes no year: the latest one not in the future of ``now``."""
    if text[0].isdigit():
        stamp = datetime.fromisoformat(text)
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    stamp = datetime.strptime(f"{now.year} {text}", "%Y %b %d %H:%M:%S").replace(tzinfo=UTC)
    if stamp > now.astimezone(UTC):
        stamp = stamp.replace(year=now.year - 1)
    return stamp


def ip_name_of(service: str | None, default_ip: str | None) -> str | None:
    """The sending IP name a transport stands for: ``smtp-<name>`` → name; relay/smtp → the default IP."""
    if service and service.startswith("smtp-"):
        return service[5:]
    if service in (None, "relay", "smtp"):
        return default_ip
    return None


def count(
    lines: Iterable[str], *, now: datetime, since: datetime | None = None, default_ip: str | None = None
) -> dict[str, IpFigures]:
    """Attempts per sending IP name from ``since`` on (all lines when None), up to ``now``."""
    found: dict[str, IpFigures] = {}
    for line in lines:
        match = _LINE.match(line)
        if not match:
            continue
        name = ip_name_of(match["service"], default_ip)
        if name is None:
            continue
        stamp = _timestamp(match["ts"], now)
        if since is not None and stamp < since:
            continue
        ip = found.setdefault(name, IpFigures())
        status = match["status"]
        if status == "sent":
            ip.delivered += 1
            ip.last_sent_at = max(ip.last_sent_at or stamp, stamp)
        elif status == "deferred":
            ip.deferred += 1
        else:  # bounced, expired
            ip.bounced += 1
        group = _PROVIDER_OF.get(match["to"].rpartition("@")[2].lower())
        if group:
            ip.providers[group] = ip.providers.get(group, 0) + 1
    return found
