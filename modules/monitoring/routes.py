"""The exporter's routes endpoint: which sending IPs are quarantined, for the hosts' sender routes agents.

``GET /v1/sending-ips`` with ``Authorization: Bearer <routes_token>`` answers the last DNSBL round as
``{"stack", "checked", "ips": {ip: {"quarantined": bool | null, "status": str | null}}}``: quarantined as
OLTP says after the round (as the verdict says where OLTP has no row), null when the round could not
decide (every zone failed); status is the IP's ``fleet.smtp_ip_addresses.status`` when known. Before the
first round it answers 503, so an agent keeps its routes. The agent (ansible/roles/postfix/files/opt/
penguinmails/sender_routes.py) moves or pauses the domains of its host's quarantined IPs.

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

from modules.reputation.checker import Round

log = logging.getLogger(__name__)
PATH = "/v1/sending-ips"


def routes_document(stack: str, last: Round | None) -> dict | None:
    """The answer for the last round; None before the first one."""
    if last is None:
        return None
    quarantined = last.quarantined()
    ips = {}
    for verdict in last.verdicts:
        row = last.recorded.get(verdict.ip)
        ips[verdict.ip] = {
            "quarantined": quarantined.get(verdict.ip),
            "status": row.status if row is not None and row.known else None,
        }
    return {"stack": stack, "checked": last.finished, "ips": ips}


class RoutesServer:
    """A small HTTP server on its own address; ``source`` gives the last round (the exporter's loop)."""

    def __init__(self, host: str, port: int, token: str, stack: str, source: Callable[[], Round | None]):
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
                document = routes_document(stack, source())
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
