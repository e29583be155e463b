"""Each sending IP's delivery figures from Prometheus: the warm-up job's source where hosts are scraped.

The monitoring_agent role counts every delivery attempt of the host's Postfix log as
``penguinmails_smtp_deliveries_total{sending_ip=<address>, status=sent|deferred|bounced}`` (node exporter's
textfile collector), and Prometheus keeps the counter with the stack's labels. The figures of an IP since
its last advance are one ``increase()`` over that window, so the job needs no SSH to the hosts and a host
restart (counter reset) is handled by Prometheus. ``increase`` extrapolates: counts are rounded.

``last_sent_at`` is the query's time when the window saw a delivery (the job runs at least hourly, so it is
right to within one run), else None. A Prometheus that does not answer, answers an error, or holds no
series of the IP raises :class:`FiguresError`: the job skips the IP rather than read an outage as an idle
IP.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

from modules.errors import ToolkitError
from modules.reputation.postfix_log import IpFigures

METRIC = "penguinmails_smtp_deliveries_total"
DEFAULT_WINDOW_SECONDS = 86400  # an IP that never advanced: its last day
_SAFE_LABEL = re.compile(r"^[A-Za-z0-9:._/-]{1,253}$")


class FiguresError(ToolkitError):
    """Prometheus gave no usable answer for an IP's figures."""


def query_for(stack: str, ip: str, window_seconds: int) -> str:
    for name, value in (("stack", stack), ("sending_ip", ip)):
        if not _SAFE_LABEL.match(value):
            raise FiguresError(f"warm-up figures: {name} {value!r} cannot be used as a label value")
    selector = f'{METRIC}{{stack="{stack}",sending_ip="{ip}"}}'
    return f"sum by (status) (increase({selector}[{max(int(window_seconds), 60)}s]))"


class PrometheusFigures:
    """A figures source (``(ip, since, now) -> IpFigures``) over one Prometheus and one stack."""

    def __init__(self, url: str, stack: str, timeout: float = 10.0):
        if not url.startswith(("http://", "https://")):
            raise FiguresError(f"warm-up figures: Prometheus URL {url!r} is not http(s)")
        self.url, self.stack, self.timeout = url.rstrip("/"), stack, timeout

    def __call__(self, ip: str, since: datetime | None, now: datetime) -> IpFigures:
        window = (now - since).total_seconds() if since is not None else DEFAULT_WINDOW_SECONDS
        query = query_for(self.stack, ip, int(window))
        params = urllib.parse.urlencode({"query": query, "time": f"{now.timestamp():.3f}"})
        try:
            with urllib.request.urlopen(  # noqa: S310 - checked http(s) above
                f"{self.url}/api/v1/query?{params}", timeout=self.timeout
            ) as answer:
                document = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            raise FiguresError(f"Prometheus {self.url}: HTTP {exc.code} for the figures of {ip}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise FiguresError(f"Prometheus {self.url} did not answer for {ip}: {exc}") from None
        if document.get("status") != "success":
            raise FiguresError(f"Prometheus {self.url}: {document.get('error') or 'query failed'} ({ip})")
        samples = document.get("data", {}).get("result", [])
        if not samples:  # the agent always writes all three statuses: no series means no scraped host
            raise FiguresError(
                f"Prometheus {self.url} has no {METRIC} for {ip} in stack {self.stack}: is its host's "
                "monitoring agent scraped?"
            )
        counts = {"sent": 0, "deferred": 0, "bounced": 0}
        for sample in samples:
            status = sample.get("metric", {}).get("status")
            if status in counts:
                counts[status] = round(float(sample["value"][1]))
        return IpFigures(
            delivered=counts["sent"],
            deferred=counts["deferred"],
            bounced=counts["bounced"],
            last_sent_at=now if counts["sent"] > 0 else None,
        )
