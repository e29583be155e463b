"""The simulator's HTTP front end: ``POST /cloud/api.php`` like the real endpoint, plus admin endpoints.

Fault injection (all rates are shares between 0 and 1, changeable at run time), in the order a call meets
them:

* ``latency_ms`` / ``jitter_ms``: added before each API call is answered;
* ``rate_limit_per_second``: a token bucket over every API call (burst ``max(1, rate)``; 0 = off); a call
  over the limit is *not applied* and answered HTTP 429 with ``Retry-After: <retry_after_seconds>``;
* ``throttle_rate``: the same 429 with ``Retry-After`` at random, nothing applied;
* ``unauthorized_rate``: ``"Not Authorized!"``, nothing applied (an allow-list hiccup);
* ``error_rate``: a 5xx HTML page instead of an answer, *nothing applied* (a proxy error);
* ``drop_rate``: for ``drop_actions`` (default ``add_instance``) the call *is applied* and then the answer
  is lost: a 502 HTML page or, with ``drop_mode: "close"``, a connection closed without an answer;
* ``mutating_drop_rate``: the same lost answer for every other mutating action (``Account.MUTATING``
  minus ``drop_actions``); like ``drop_rate`` it only hits calls that were applied;
* ``build_error_rate``: a build ends in ERROR instead of ACTIVE;
* ``retry_after_seconds`` (default 1, >= 0): the ``Retry-After`` of every 429 (a fraction is sent as
  is, e.g. ``0.2``, which real servers would not do: it keeps tests fast);
* ``actions``: when not empty, ``throttle_rate``, ``error_rate`` and ``unauthorized_rate`` only hit these
  actions.

The call log records each fault as the outcome ``fault:<kind>`` (``fault:429``, ``fault:502``,
``fault:dropped``, ``fault:unauthorized``, …).

Admin endpoints (loopback only, no key; never faulted): ``GET /_sim/health``, ``GET|POST /_sim/faults``,
``GET /_sim/log[?since=N]``, ``POST /_sim/log/clear``, ``GET /_sim/stats`` (calls by action and outcome,
plus ``orders``: instances ``add_instance`` ever created, and ``orders_by_label``),
``GET /_sim/instances[?secrets=1]`` (the simulator's own listing, for counting duplicates and orphans:
every instance, also orders still being processed, with ``visible`` and ``foreign``),
``POST /_sim/config`` (``build_seconds``, ``delete_seconds``, ``resize_seconds``, ``processing_seconds``:
how long an order stays invisible to the API), ``POST /_sim/keys`` (register an account SSH key, as the
portal would), ``POST /_sim/replace {"serviceid": N[, "change_ip": true]}`` (the server is rebuilt
behind our back: same service id, new ``server_uuid``, root password and config key, ACTIVE; answers
``{"serviceid", "server_uuid", "main_ip"}``) and ``POST /_sim/foreign {"srvrname", "location_id",
"image", "rid"[, "keys", "billingcycle", "wait_seconds"]}`` (an instance ordered by a person in the
portal, a decoy for adoption by label: visible at once, no build time, not counted in ``orders``; answers
``{"serviceid", "status"}`` once it is ACTIVE, or still BUILD after ``wait_seconds``, default 120, when a
podman container takes longer), and ``POST /_sim/ips {"serviceid"[, "ip"]}`` (an additional IPv4 bought
for the instance in the portal, which no API action does: ``get_instance_ips`` lists it, ``set_rdns``
accepts it; the podman backend adds it to the container's eth0; answers ``{"serviceid", "ip"}``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
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
_RATES = (
    "error_rate",
    "unauthorized_rate",
    "drop_rate",
    "mutating_drop_rate",
    "throttle_rate",
    "build_error_rate",
)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass
class Reply:
    """One API answer: ``body`` None means the connection is closed without one."""

    status: int
    content_type: str
    body: bytes | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Faults:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    unauthorized_rate: float = 0.0
    drop_rate: float = 0.0
    mutating_drop_rate: float = 0.0
    throttle_rate: float = 0.0
    retry_after_seconds: float = 1.0
    rate_limit_per_second: float = 0.0
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
        for name in _RATES:
            rate = getattr(faults, name)
            if not _number(rate) or not 0 <= rate <= 1:
                raise ValueError(f"{name} must be a share between 0 and 1, got {rate!r}")
        for name in ("latency_ms", "jitter_ms"):
            if not _number(getattr(faults, name)) or getattr(faults, name) < 0:
                raise ValueError(f"{name} must be a number of milliseconds >= 0")
        for name in ("retry_after_seconds", "rate_limit_per_second"):
            value = getattr(faults, name)
            if not _number(value) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
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
        clock: Callable[[], float] = time.monotonic,
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
        # The rate limit's token bucket (``clock`` only drives it, so tests can move time).
        self._clock = clock
        self._tokens = max(1.0, float(self._faults.rate_limit_per_second))
        self._refilled = clock()
        if state_file is not None and state_file.exists():
            account.restore(json.loads(state_file.read_text()))
        account.on_change = self.save
        account.build_fails = lambda: self.roll(self.faults.build_error_rate)
        self.httpd = _Server((host, port), _handler_for(self))
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
            old_rate = self._faults.rate_limit_per_second
            self._faults = Faults.from_dict(data, self._faults)
            if "seed" in data or data.get("reset"):
                self._random = random.Random(self._faults.seed)
            if self._faults.rate_limit_per_second != old_rate:  # a new limit starts with a full bucket
                self._tokens = max(1.0, float(self._faults.rate_limit_per_second))
                self._refilled = self._clock()
            return self._faults

    def take_token(self, rate: float) -> bool:
        """False when the call is over ``rate`` calls per second (burst ``max(1, rate)``); 0 = no limit."""
        if rate <= 0:
            return True
        with self._lock:
            now = self._clock()
            burst = max(1.0, float(rate))
            self._tokens = min(burst, self._tokens + (now - self._refilled) * rate)
            self._refilled = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False

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
        with self.account.lock:
            orders, by_label = self.account.order_count, dict(self.account.order_labels)
        return {
            "total": len(calls),
            "by_action": dict(by_action),
            "by_outcome": dict(by_outcome),
            "orders": orders,
            "orders_by_label": by_label,
        }

    def clear_log(self) -> None:
        with self._lock:
            self.calls.clear()

    # -- one API call ------------------------------------------------------------------------------------

    def api(self, params: dict[str, list[str]]) -> Reply:
        """The answer to one API request (body None: drop the connection)."""
        started = time.time()
        action = (params.get("action") or [""])[0]
        faults = self.faults
        delay = faults.latency_ms + (self._random.uniform(0, faults.jitter_ms) if faults.jitter_ms else 0)
        if delay:
            time.sleep(delay / 1000)
        targeted = not faults.actions or action in faults.actions
        if not self.take_token(faults.rate_limit_per_second) or (
            targeted and self.roll(faults.throttle_rate)
        ):
            self.record(action, params, "fault:429", started)
            seconds = faults.retry_after_seconds
            shown = str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"
            return Reply(429, "text/html", _html_error(429), {"Retry-After": shown})
        if targeted and self.roll(faults.unauthorized_rate):
            self.record(action, params, "fault:unauthorized", started)
            return Reply(200, "application/json", _json(_not_authorized()))
        if targeted and self.roll(faults.error_rate):
            status = self._random.choice((500, 502, 503))
            self.record(action, params, f"fault:{status}", started)
            return Reply(status, "text/html", _html_error(status))
        if (params.get("API") or [""])[0] != self.api_key:
            self.record(action, params, "unauthorized", started)
            return Reply(200, "application/json", _json(_not_authorized()))
        try:
            answer = self.account.call(action, params)
            outcome = "ok"
        except SimError as exc:
            answer, outcome = exc.answer(), "error"
        if outcome == "ok" and self.roll(self._drop_rate(faults, action)):
            self.record(action, params, "fault:dropped", started)
            if faults.drop_mode == "close":
                return Reply(0, "", None)
            return Reply(502, "text/html", _html_error(502))
        self.record(action, params, outcome, started)
        return Reply(200, "application/json", _json(answer))

    @staticmethod
    def _drop_rate(faults: Faults, action: str) -> float:
        """How likely the answer to an applied ``action`` is lost."""
        if action in faults.drop_actions:
            return faults.drop_rate
        if action in Account.MUTATING:
            return faults.mutating_drop_rate
        return 0.0

    # -- out-of-band changes -----------------------------------------------------------------------------

    def replace(self, data: dict[str, Any]) -> dict[str, Any]:
        sid = _whole(data, "serviceid")
        change_ip = data.get("change_ip", False)
        if not isinstance(change_ip, bool):
            raise ValueError("change_ip must be true or false")
        inst = self.account.replace(sid, change_ip=change_ip)
        return {"serviceid": sid, "server_uuid": inst.server_uuid, "main_ip": inst.main_ip}

    def foreign(self, data: dict[str, Any]) -> dict[str, Any]:
        known = {"srvrname", "location_id", "image", "rid", "keys", "billingcycle", "wait_seconds"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        keys = data.get("keys") or []
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ValueError("keys must be a list of account SSH key names")
        wait = data.get("wait_seconds", 120)
        if not _number(wait) or wait < 0:
            raise ValueError("wait_seconds must be a number >= 0")
        sid = self.account.add_foreign(
            srvrname=str(data["srvrname"]),
            location_id=_whole(data, "location_id"),
            image=str(data["image"]),
            rid=_whole(data, "rid"),
            keys=keys,
            billingcycle=str(data.get("billingcycle") or "monthly"),
        )
        deadline = time.monotonic() + wait
        status = self.account.status_of(sid)
        while status == "BUILD" and time.monotonic() < deadline:  # a podman container is being built
            time.sleep(0.2)
            status = self.account.status_of(sid)
        return {"serviceid": sid, "status": status}


def _whole(data: dict[str, Any], key: str) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{key} must be a whole number, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{key} must be a whole number, got {value!r}") from None


class _Server(ThreadingHTTPServer):
    """The HTTP server with a real listen backlog.

    The standard library's is 5: a burst of 64 connections (a fleet ordering at once) overflowed it and the
    kernel reset accepted-but-unserved connections, a failure the real API would not add and that looks
    exactly like a lost answer to the client. Faults are injected on purpose only (see ``Faults``).
    """

    request_queue_size = 1024


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _not_authorized() -> dict[str, str]:
    return {"result": "error", "action": "Authorization", "message": "Not Authorized!"}


def _html_error(status: int) -> bytes:
    titles = {
        429: "429 Too Many Requests",
        500: "500 Internal Server Error",
        502: "502 Bad Gateway",
        503: "503 Service Unavailable",
    }
    title = titles.get(status, f"{status} Error")
    page = f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center></body></html>"
    return page.encode()


def _handler_for(sim: Simulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "hostwinds-sim"
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def _send(
            self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
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
                reply = sim.api(params)
                if reply.body is None:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self._send(reply.status, reply.content_type, reply.body, reply.headers)
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
                elif path == "/_sim/replace":
                    self._send_json(sim.replace(data))
                elif path == "/_sim/foreign":
                    self._send_json(sim.foreign(data))
                elif path == "/_sim/ips":
                    ip = data.get("ip")
                    if ip is not None and not isinstance(ip, str):
                        raise ValueError("ip must be an IPv4 address or absent")
                    address = sim.account.assign_ip(_whole(data, "serviceid"), ip)
                    self._send_json({"serviceid": _whole(data, "serviceid"), "ip": address})
                else:
                    self._send_json({"error": f"unknown admin endpoint {path}"}, 404)
            except KeyError as exc:
                self._send_json({"error": f"missing field {exc}"}, 400)
            except (ValueError, TypeError) as exc:
                self._send_json({"error": str(exc)}, 400)
            except SimError as exc:
                self._send_json({"error": exc.message}, 409)

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
        "processing_seconds": account.processing_seconds,
    }


_SETTINGS = ("build_seconds", "delete_seconds", "resize_seconds", "processing_seconds")


def _configure(account: Account, data: dict[str, Any]) -> dict[str, Any]:
    """Change timings; ``processing_seconds`` and ``build_seconds`` apply to orders placed afterwards."""
    unknown = sorted(set(data) - set(_SETTINGS))
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(unknown)} (known: {', '.join(_SETTINGS)})")
    for key, value in data.items():
        if value is None and key == "resize_seconds":  # None: half the build time
            continue
        if not _number(value) or value < 0:
            raise ValueError(f"{key} must be a number of seconds >= 0")
    with account.lock:
        for key, value in data.items():
            setattr(account, key, value)
    return _timing(account)
