"""The simulator's HTTP front end: ``POST /cloud/api.php`` like the real endpoint, plus admin endpoints.

Fault injection (all rates are shares between 0 and 1, changeable at run time):

* ``latency_ms`` / ``jitter_ms``: added before each API call is answered;
* ``error_rate``: a 5xx HTML page instead of an answer, *nothing applied* (a proxy error);
* ``unauthorized_rate``: ``"Not Authorized!"``, nothing applied (an allow-list hiccup);
* ``drop_rate``: for ``drop_actions`` (default ``add_instance``) the call *is applied* and then the answer
  is lost: a 502 HTML page or, with ``drop_mode: "close"``, a connection closed without an answer;
* ``build_error_rate``: a build ends in ERROR instead of ACTIVE;
* ``actions``: when not empty, ``error_rate`` and ``unauthorized_rate`` only hit these actions.

Admin endpoints (loopback only, no key; never faulted): ``GET /_sim/health``, ``GET|POST /_sim/faults``,
``GET /_sim/log[?since=N]``, ``POST /_sim/log/clear``, ``GET /_sim/stats`` (calls by action and outcome),
``GET /_sim/instances[?secrets=1]`` (the simulator's own listing, for counting duplicates and orphans),
``POST /_sim/config`` (``build_seconds``, ``delete_seconds``, ``resize_seconds``), ``POST /_sim/keys``
(register an account SSH key, as the portal would).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from devenv.hostwinds_sim.model import Account, SimError

log = logging.getLogger("hostwinds_sim")

API_PATH = "/cloud/api.php"
LOG_LIMIT = 200_000
# Request fields never written to the call log.
HIDDEN_PARAMS = frozenset({"API", "password", "public_key"})


@dataclass
class Faults:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    unauthorized_rate: float = 0.0
    drop_rate: float = 0.0
    build_error_rate: float = 0.0
    drop_actions: list[str] = field(default_factory=lambda: ["add_instance"])
    drop_mode: str = "502"
    actions: list[str] = field(default_factory=list)
    seed: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Faults | None = None) -> Faults:
        """Merge ``data`` into ``base`` (or the defaults), refusing unknown keys and bad values."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"reset"})
        if unknown:
            raise ValueError(
                f"unknown fault setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        values = asdict(base or cls()) if not data.get("reset") else asdict(cls())
        values.update({k: v for k, v in data.items() if k != "reset"})
        faults = cls(**values)
        for name in ("error_rate", "unauthorized_rate", "drop_rate", "build_error_rate"):
            rate = getattr(faults, name)
            if not isinstance(rate, int | float) or not 0 <= rate <= 1:
                raise ValueError(f"{name} must be a share between 0 and 1, got {rate!r}")
        for name in ("latency_ms", "jitter_ms"):
            if not isinstance(getattr(faults, name), int | float) or getattr(faults, name) < 0:
                raise ValueError(f"{name} must be a number of milliseconds >= 0")
        if faults.drop_mode not in ("502", "close"):
            raise ValueError("drop_mode must be '502' or 'close'")
        return faults


class Simulator:
    """The account behind an HTTP server on ``host:port``; serve in a thread or in the foreground."""

    def __init__(
        self,
        account: Account,
        api_key: str,
        host: str = "127.0.0.1",
        port: int = 8930,
        faults: Faults | None = None,
        state_file: Path | None = None,
    ):
        self.account = account
        self.api_key = api_key
        self.state_file = state_file
        self._faults = faults or Faults()
        self._random = random.Random(self._faults.seed)
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self.calls: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self._seq = 0
        if state_file is not None and state_file.exists():
            account.restore(json.loads(state_file.read_text()))
        account.on_change = self.save
        account.build_fails = lambda: self.roll(self.faults.build_error_rate)
        self.httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{API_PATH}"

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> Simulator:
        """Serve in a daemon thread (tests); resumes builds/deletions a previous run left under way."""
        self.account.resume_background_work()
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="hostwinds-sim", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.account.resume_background_work()
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.save()

    def save(self) -> None:
        if self.state_file is None:
            return
        with self._save_lock:
            data = json.dumps(self.account.snapshot())
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(data)
            tmp.chmod(0o600)
            os.replace(tmp, self.state_file)

    # -- faults and log ----------------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    def set_faults(self, data: dict[str, Any]) -> Faults:
        with self._lock:
            self._faults = Faults.from_dict(data, self._faults)
            if "seed" in data or data.get("reset"):
                self._random = random.Random(self._faults.seed)
            return self._faults

    def roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._random.random() < rate

    def record(self, action: str, params: dict[str, list[str]], outcome: str, started: float) -> None:
        shown = {k: (v[0] if len(v) == 1 else v) for k, v in params.items() if k not in HIDDEN_PARAMS}
        shown.pop("action", None)
        with self._lock:
            self._seq += 1
            self.calls.append(
                {
                    "seq": self._seq,
                    "t": round(started, 3),
                    "action": action,
                    "outcome": outcome,
                    "ms": round((time.time() - started) * 1000, 1),
                    "params": shown,
                }
            )

    def log_since(self, since: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            return [c for c in self.calls if c["seq"] > since]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            calls = list(self.calls)
        by_action = Counter(c["action"] for c in calls)
        by_outcome = Counter(c["outcome"] for c in calls)
        return {"total": len(calls), "by_action": dict(by_action), "by_outcome": dict(by_outcome)}

    def clear_log(self) -> None:
        with self._lock:
            self.calls.clear()

    # -- one API call ------------------------------------------------------------------------------------

    def api(self, params: dict[str, list[str]]) -> tuple[int, str, bytes | None]:
        """(HTTP status, content type, body or None to drop the connection) for one API request."""
        started = time.time()
        action = (params.get("action") or [""])[0]
        faults = self.faults
        delay = faults.latency_ms + (self._random.uniform(0, faults.jitter_ms) if faults.jitter_ms else 0)
        if delay:
            time.sleep(delay / 1000)
        targeted = not faults.actions or action in faults.actions
        if targeted and self.roll(faults.unauthorized_rate):
            self.record(action, params, "fault:unauthorized", started)
            return 200, "application/json", _json(_not_authorized())
        if targeted and self.roll(faults.error_rate):
            status = self._random.choice((500, 502, 503))
            self.record(action, params, f"fault:{status}", started)
            return status, "text/html", _html_error(status)
        if (params.get("API") or [""])[0] != self.api_key:
            self.record(action, params, "unauthorized", started)
            return 200, "application/json", _json(_not_authorized())
        try:
            answer = self.account.call(action, params)
            outcome = "ok"
        except SimError as exc:
            answer, outcome = exc.answer(), "error"
        if outcome == "ok" and action in faults.drop_actions and self.roll(faults.drop_rate):
            self.record(action, params, "fault:dropped", started)
            if faults.drop_mode == "close":
                return 0, "", None
            return 502, "text/html", _html_error(502)
        self.record(action, params, outcome, started)
        return 200, "application/json", _json(answer)


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _not_authorized() -> dict[str, str]:
    return {"result": "error", "action": "Authorization", "message": "Not Authorized!"}


def _html_error(status: int) -> bytes:
    titles = {500: "500 Internal Server Error", 502: "502 Bad Gateway", 503: "503 Service Unavailable"}
    title = titles.get(status, f"{status} Error")
    page = f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center></body></html>"
    return page.encode()


def _handler_for(sim: Simulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "hostwinds-sim"
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send_json(self, value: Any, status: int = 200) -> None:
            self._send(status, "application/json", _json(value))

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length > 0 else b""

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            if path == API_PATH:
                params = parse_qs(self._body().decode("utf-8", "replace"), keep_blank_values=True)
                status, content_type, body = sim.api(params)
                if body is None:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self._send(status, content_type, body)
                return
            if not path.startswith("/_sim/"):
                self._send(404, "text/html", _html_error(404))
                return
            try:
                data = json.loads(self._body() or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("the body must be a JSON object")
                if path == "/_sim/faults":
                    self._send_json(asdict(sim.set_faults(data)))
                elif path == "/_sim/log/clear":
                    sim.clear_log()
                    self._send_json({"ok": True})
                elif path == "/_sim/config":
                    self._send_json(_configure(sim.account, data))
                elif path == "/_sim/keys":
                    sim.account.ensure_key(str(data["name"]), str(data["public_key"]))
                    self._send_json({"ok": True})
                else:
                    self._send_json({"error": f"unknown admin endpoint {path}"}, 404)
            except (ValueError, KeyError, TypeError) as exc:
                self._send_json({"error": str(exc)}, 400)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            if parts.path == "/_sim/health":
                self._send_json({"ok": True, "backend": sim.account.backend.name, **_timing(sim.account)})
            elif parts.path == "/_sim/faults":
                self._send_json(asdict(sim.faults))
            elif parts.path == "/_sim/log":
                self._send_json(sim.log_since(int((query.get("since") or ["0"])[0])))
            elif parts.path == "/_sim/stats":
                self._send_json(sim.stats())
            elif parts.path == "/_sim/instances":
                with_secrets = (query.get("secrets") or ["0"])[0] == "1"
                self._send_json(sim.account.own_listing(with_secrets))
            else:
                self._send(404, "text/html", _html_error(404))

    return Handler


def _timing(account: Account) -> dict[str, Any]:
    return {
        "build_seconds": account.build_seconds,
        "delete_seconds": account.delete_seconds,
        "resize_seconds": account.resize_seconds,
    }


def _configure(account: Account, data: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(data) - {"build_seconds", "delete_seconds", "resize_seconds"})
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
    for key, value in data.items():
        if value is not None and (not isinstance(value, int | float) or value < 0):
            raise ValueError(f"{key} must be a number of seconds >= 0")
        with account.lock:
            setattr(account, key, value)
    return _timing(account)
