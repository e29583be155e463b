"""The dev stack's webhook receiver: what Alertmanager would send to a pager, kept where tests can read it.

``POST /alerts`` appends the posted Alertmanager webhook payload (a JSON object) as one line to
``<devenv>/alert-sink/alerts.jsonl``; ``GET /alerts`` returns every payload as a JSON list; ``DELETE /alerts``
clears them. Bodies are bounded (:data:`MAX_BODY`) and must be a JSON object, else 413 or 400. Loopback
only; run as ``python -m devenv.alert_sink --port P --file F`` by :class:`AlertSinkService`.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from devenv.base import ProcessService
from devenv.prometheus import ALERT_SINK_PORT

MAX_BODY = 1024 * 1024  # Alertmanager's payloads are a few KiB; a MiB leaves room for large groups
DISCARD_LIMIT = 16 * MAX_BODY  # an oversized body up to this is read and dropped so the client sees the 413
PATH = "/alerts"


class SinkHandler(BaseHTTPRequestHandler):
    server_version = "penguinmails-alert-sink"
    store: Path
    lock = threading.Lock()

    def log_message(self, format: str, *args) -> None:  # one line per request on stderr (the log file)
        sys.stderr.write(f"alert-sink: {self.command} {self.path} {args[1] if len(args) > 1 else ''}\n")

    def _answer(self, status: HTTPStatus, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self, status: HTTPStatus, reason: str) -> None:
        self.close_connection = True
        self._answer(status, {"error": reason})

    def _discard(self, length: int) -> None:
        """Read an oversized body away: answering before it is read makes the sender fail on a broken pipe."""
        left = min(max(length, 0), DISCARD_LIMIT)
        while left > 0:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                return
            left -= len(chunk)

    def _route(self) -> bool:
        if self.path.split("?", 1)[0] != PATH:
            self._refuse(HTTPStatus.NOT_FOUND, f"only {PATH} is served")
            return False
        return True

    def do_POST(self) -> None:
        if not self._route():
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._refuse(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
            return
        if length < 0 or length > MAX_BODY:
            self._discard(length)
            self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
            return
        raw = self.rfile.read(length)
        try:
            payload = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            self._refuse(HTTPStatus.BAD_REQUEST, "body is not JSON")
            return
        if not isinstance(payload, dict):
            self._refuse(
                HTTPStatus.BAD_REQUEST, "body is not a JSON object (an Alertmanager webhook payload)"
            )
            return
        line = json.dumps(payload, separators=(",", ":")) + "\n"
        with self.lock, self.store.open("a") as handle:
            handle.write(line)
        self._answer(HTTPStatus.OK, {"stored": 1})

    def do_GET(self) -> None:
        if self._route():
            with self.lock:
                text = self.store.read_text() if self.store.exists() else ""
            self._answer(HTTPStatus.OK, [json.loads(line) for line in text.splitlines() if line.strip()])

    def do_DELETE(self) -> None:
        if self._route():
            with self.lock:
                self.store.write_text("")
            self._answer(HTTPStatus.OK, {"cleared": True})


def serve(host: str, port: int, store: Path) -> None:
    store.parent.mkdir(parents=True, exist_ok=True)
    store.touch()
    handler = type("BoundSinkHandler", (SinkHandler,), {"store": store})
    with ThreadingHTTPServer((host, port), handler) as server:
        server.serve_forever()


class AlertSinkService(ProcessService):
    name = "alert-sink"
    port = ALERT_SINK_PORT
    binary = "python"

    @property
    def store(self) -> Path:
        return self.dir / "alerts.jsonl"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def executable(self) -> str:
        return sys.executable

    def command(self) -> list[str]:
        return [
            "-m",
            "devenv.alert_sink",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--file",
            str(self.store),
        ]

    def process_env(self) -> dict[str, str]:
        from devenv.base import REPO_ROOT

        return {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}

    def env(self) -> dict[str, str]:
        return {"PENGUINMAILS_ALERT_SINK_URL": self.url}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=ALERT_SINK_PORT)
    parser.add_argument("--file", type=Path, required=True)
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.file)


if __name__ == "__main__":
    main()
