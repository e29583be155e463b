"""The exporter's routes endpoint: which sending IPs are quarantined, for the hosts' sender routes agents.

``GET /v1/sending-ips`` with ``Authorization: Bearer <routes_token>`` answers the last DNSBL round as
``{"stack", "checked", "warmup_checked", "ips": {ip: {"quarantined": bool | null, "status": str | null,
"warmup": {...} | null}}}``: quarantined as OLTP says after the round (as the verdict says where OLTP has
no row), null when the round could not decide (every zone failed); status is the IP's
``fleet.smtp_ip_addresses.status`` when known. ``warmup`` is the IP's stored plan after the warm-up loop's
last cycle (``{"day", "daily", "hourly", "providers": {group: n}, "held"}``), null when the loop has not
run, its last cycle could not read OLTP, or the IP has no plan. Before the first DNSBL round it answers
503, so an agent keeps its routes and caps. The agent (ansible/roles/postfix/files/opt/penguinmails/
sender_routes.py) moves or pauses the domains of its host's quarantined IPs and applies the caps.

It listens apart from /metrics (``--routes-listen``: in dev the podman bridge, which the hosts reach; the
metrics stay on loopback) and only with a token: a forged answer could pause a tenant's mail.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from modules.reputation.checker import Round
from modules.reputation.warmup_store import StoredPlan

if TYPE_CHECKING:
    from modules.monitoring.warmup_loop import WarmupRound

log = logging.getLogger(__name__)
PATH = "/v1/sending-ips"


def warmup_entry(plan: StoredPlan) -> dict | None:
    """An IP's caps as the agents apply them; None without a plan."""
    if plan.caps is None or plan.state is None:
        return None
    return {
        "day": plan.caps.day,
        "daily": plan.caps.daily,
        "hourly": plan.caps.hourly,
        "providers": dict(plan.caps.providers),
        "held": plan.state.held,
    }


def routes_document(stack: str, last: Round | None, warmup: WarmupRound | None = None) -> dict | None:
    """The answer for the last DNSBL round and warm-up cycle; None before the first DNSBL round."""
    if last is None:
        return None
    quarantined = last.quarantined()
    # A cycle that could not read OLTP has no plans: every IP's warmup is null and the agents keep theirs.
    plans = {p.ip: p for p in warmup.plans} if warmup is not None and not warmup.error else {}
    ips = {}
    for verdict in last.verdicts:
        row = last.recorded.get(verdict.ip)
        ips[verdict.ip] = {
            "quarantined": quarantined.get(verdict.ip),
            "status": row.status if row is not None and row.known else None,
            "warmup": warmup_entry(plans[verdict.ip]) if verdict.ip in plans else None,
        }
    for ip, plan in plans.items():  # a planned IP the round did not check: its caps, quarantine undecided
        if ip not in ips:
            ips[ip] = {"quarantined": None, "status": plan.status, "warmup": warmup_entry(plan)}
    return {
        "stack": stack,
        "checked": last.finished,
        "warmup_checked": warmup.finished if warmup is not None and not warmup.error else None,
        "ips": ips,
    }


class RoutesServer:
    """A small HTTP server on its own address; ``source`` gives the last DNSBL round (the exporter's loop),
    ``warmup`` the warm-up loop's last cycle."""

    def __init__(
        self,
        host: str,
        port: int,
        token: str,
        stack: str,
        source: Callable[[], Round | None],
        warmup: Callable[[], WarmupRound | None] = lambda: None,
    ):
        if not token:
            raise ValueError("the routes endpoint needs a token")
        expected = f"Bearer {token}".encode()

        class Handler(BaseHTTPRequestHandler):
            server_version = "penguinmails-routes"

            def log_message(self, format: str, *args) -> None:  # never the headers (the token)
                log.debug("routes: %s %s", self.command, self.path.split("?", 1)[0])

            def _answer(self, status: HTTPStatus, body: object) -> None:
                data = json.dumps(body, sort_keys=True).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                given = (self.headers.get("Authorization") or "").encode()
                if not hmac.compare_digest(given, expected):
                    self._answer(HTTPStatus.UNAUTHORIZED, {"error": "a valid bearer token is required"})
                    return
                if self.path.split("?", 1)[0] != PATH:
                    self._answer(HTTPStatus.NOT_FOUND, {"error": f"only {PATH} is served"})
                    return
                document = routes_document(stack, source(), warmup())
                if document is None:
                    self._answer(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no DNSBL round has finished yet"})
                    return
                self._answer(HTTPStatus.OK, document)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.host = host
        self.port = self.server.server_port
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{PATH}"

    def start(self) -> RoutesServer:
        self._thread = threading.Thread(target=self.server.serve_forever, name="routes", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread = None
        self.server.server_close()
