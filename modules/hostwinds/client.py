"""The Hostwinds Cloud API client: every request goes through :meth:`HostwindsClient._post`.

The API is one form-encoded endpoint (``action=…&API=…``) that answers HTTP 200 for almost everything:
data as ``{"success": …}``, accepted changes as ``[{"result": "success", …}]`` and errors as
``[{"result": "error", "message": …}]``. ``_post`` turns each answer into data or one of the typed errors
below, retries only transient failures of idempotent actions (with jittered exponential backoff), and
keeps the API key, root passwords and config keys out of every log line and message: the instance
objects it returns never carry those fields.

An HTTP 429 is the one failure that proves nothing was applied, so a rate-limited call is repeated for
every action, ``add_instance`` included, after the pause its ``Retry-After`` asks for (capped by
``max_retry_after``), up to ``rate_limit_retries`` times and apart from the retry budget above.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from modules.errors import ToolkitError

log = logging.getLogger("penguinmails.hostwinds")

# Fields of API answers that are secrets: removed from returned data, their values redacted everywhere.
SECRET_FIELDS = frozenset({"password", "configkey", "root_password", "rootpass", "API"})
# Request parameters never written to a log line.
SECRET_PARAMS = frozenset({"API", "password"})

# Actions that can be repeated without changing the outcome: only these are retried automatically.
# add_instance (bills at once), upgrade_instance (creates an invoice), toggle_lock and the upgrade steps
# are never retried: a lost answer there is settled by reading the state back.
IDEMPOTENT_ACTIONS = frozenset(
    {
        "get_instances",
        "get_instance",
        "get_instance_ids",
        "check_serviceid",
        "get_instance_ips",
        "get_instance_firewall_profile",
        "get_firewall_profiles",
        "get_locations",
        "get_public_images",
        "get_price_list",
        "get_ssh_keys",
        "check_upgrade_order",
        "check_upgrade_reboot",
        "set_rdns",
        "set_instance_firewall",
        "edit_instance",
        "change_billing_cycle",
        "terminate",
        "delete_ssh_key",
    }
)

MAX_ANSWER_BYTES = 32 * 1024 * 1024
_UNAUTHORIZED = re.compile(r"not authori[sz]ed|authori[sz]ation fail", re.I)
_NOT_FOUND = re.compile(
    r"valid service ?id is required|service ?id is required|not found|does not exist|no such", re.I
)
_TRANSIENT = re.compile(r"try again|temporar|time ?out|maintenance|busy|overload", re.I)
# The pause after a 429 when its Retry-After is missing or unreadable, and the default cap on it.
DEFAULT_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 60.0

# Every secret value this process has seen (API keys, root passwords, config keys), for redaction.
_SEEN_SECRETS: set[str] = set()
_SEEN_LOCK = threading.Lock()


def remember_secret(value: Any) -> None:
    if isinstance(value, str | int) and len(str(value)) >= 4:
        with _SEEN_LOCK:
            _SEEN_SECRETS.add(str(value))


def scrub(text: str) -> str:
    """``text`` with every secret value seen so far replaced by ``***`` (longest first)."""
    with _SEEN_LOCK:
        secrets = sorted(_SEEN_SECRETS, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class HostwindsError(ToolkitError):
    """A Hostwinds API call failed; ``action`` names it, ``code`` is the API's opaque ERROR value."""

    def __init__(self, message: str, action: str = "", code: str | None = None):
        super().__init__(scrub(message))
        self.action = action
        self.code = code


class HostwindsUnauthorized(HostwindsError):
    """The key was refused ("Not Authorized!"): wrong or expired key, or this IPv4 is not allow-listed."""

    exit_code = 3


class HostwindsNotFound(HostwindsError):
    """The service id (or key, or order) does not exist, e.g. "A valid serviceid is required."."""


class HostwindsInvalidRequest(HostwindsError):
    """The API refused the request itself (bad parameter, wrong state, unknown action): do not retry."""


class HostwindsTransient(HostwindsError):
    """Timeout, connection failure, 5xx or an HTML answer: the call may work if repeated.

    ``maybe_applied`` is False only when the request certainly never reached the server (connection
    refused); a mutation that failed with ``maybe_applied`` must be settled by reading the state back.
    """

    def __init__(self, message: str, action: str = "", maybe_applied: bool = True):
        super().__init__(message, action)
        self.maybe_applied = maybe_applied


class HostwindsRateLimited(HostwindsTransient):
    """HTTP 429: the call was refused before it was applied; ``retry_after`` is the pause asked for (s)."""

    def __init__(self, message: str, action: str = "", retry_after: float = DEFAULT_RETRY_AFTER):
        super().__init__(message, action, maybe_applied=False)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds or an HTTP-date); None when unreadable.

    A date in the past is 0 s. Fractions ("0.5") are accepted although HTTP only defines whole seconds.
    """
    text = (value or "").strip()
    if not text:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def as_list(value: Any) -> list[Any]:
    """PHP arrays arrive as JSON lists or as objects keyed "0", "1", …: accept both (and None)."""
    if value is None or value is True or value is False:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        if value and all(str(key).isdigit() for key in value):
            return [value[key] for key in sorted(value, key=lambda k: int(k))]
        return [value]
    return [value]


def as_int(value: Any, default: int | None = None) -> int | None:
    """Numbers often arrive as strings: ``"12"`` and ``12`` are the same."""
    if isinstance(value, bool):
        return default
    if isinstance(value, float):  # Pulumi sends every number as a float
        return int(value) if value.is_integer() else default
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def strip_secrets(value: Any) -> Any:
    """A copy of ``value`` without secret fields; their values are remembered for redaction."""
    if isinstance(value, dict):
        clean = {}
        for key, item in value.items():
            if key in SECRET_FIELDS:
                remember_secret(item)
                continue
            clean[key] = strip_secrets(item)
        return clean
    if isinstance(value, list):
        return [strip_secrets(item) for item in value]
    return value


def _html_excerpt(body: bytes) -> str:
    """A short, tag-free quote of a non-JSON answer: its <title> when it has one."""
    text = body[:2000].decode("utf-8", "replace")
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
    text = title.group(1) if title else re.sub(r"<[^>]+>", " ", text[:600])
    return " ".join(text.split())[:160]


def interpret(
    action: str,
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    max_retry_after: float = MAX_RETRY_AFTER,
) -> Any:
    """Turn one HTTP answer into data, or raise the matching typed error (pure: no I/O).

    ``headers`` (names in any case) are only read for a 429's ``Retry-After``.
    """
    if status in (401, 403):
        raise HostwindsUnauthorized(f"Hostwinds {action}: HTTP {status} (key refused)", action)
    if status == 429:
        raw = next((v for k, v in (headers or {}).items() if k.lower() == "retry-after"), None)
        asked = parse_retry_after(raw)
        pause = min(max_retry_after, DEFAULT_RETRY_AFTER if asked is None else asked)
        raise HostwindsRateLimited(
            f"Hostwinds {action}: HTTP 429 (rate limited, nothing applied; retry after {pause:g} s): "
            f"{_html_excerpt(body)}",
            action,
            retry_after=pause,
        )
    if status >= 500:
        raise HostwindsTransient(f"Hostwinds {action}: HTTP {status}: {_html_excerpt(body)}", action)
    if not 200 <= status < 300:
        raise HostwindsInvalidRequest(f"Hostwinds {action}: HTTP {status}: {_html_excerpt(body)}", action)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HostwindsTransient(
            f"Hostwinds {action}: the answer is not JSON ({_html_excerpt(body) or 'empty body'})", action
        ) from None
    if isinstance(data, dict) and data and all(str(key).isdigit() for key in data):
        data = as_list(data)  # a PHP list sent as an object keyed "0", "1", …
    first = data[0] if isinstance(data, list) and data else data
    if isinstance(first, dict) and first.get("result") == "error":
        message = str(first.get("message") or "unspecified error")
        code = first.get("ERROR")
        code = str(code) if code is not None else None
        text = f"Hostwinds {action}: {message}" + (f" (ERROR {code})" if code else "")
        if _UNAUTHORIZED.search(message) or str(first.get("action", "")).lower() == "authorization":
            raise HostwindsUnauthorized(
                text + ": check the API key, its expiry and that this machine's IPv4 is allow-listed",
                action,
                code,
            )
        if _NOT_FOUND.search(message):
            raise HostwindsNotFound(text, action, code)
        if _TRANSIENT.search(message):
            raise HostwindsTransient(text, action)
        raise HostwindsInvalidRequest(text, action, code)
    if isinstance(data, dict) and "success" in data:
        return strip_secrets(data["success"])
    if isinstance(first, dict) and first.get("result") == "success":
        return strip_secrets(as_list(data))
    raise HostwindsError(f"Hostwinds {action}: unexpected answer shape ({type(data).__name__})", action)


class HostwindsClient:
    """One account at one endpoint. Cheap to build: make one per provider call, never keep it in state."""

    def __init__(
        self,
        endpoint: str,
        api_key: str,
        timeout: float = 30.0,
        retries: int = 3,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        rate_limit_retries: int = 5,
        max_retry_after: float = MAX_RETRY_AFTER,
    ):
        if not api_key:
            raise HostwindsUnauthorized(
                "no Hostwinds API key: set PENGUINMAILS_HOSTWINDS_API_KEY or "
                "`pulumi config set --secret hostwindsApiKey …`"
            )
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HostwindsInvalidRequest(f"Hostwinds endpoint {endpoint!r} is not an http(s) URL")
        self.endpoint = endpoint
        self._parts = parts
        self._api_key = api_key
        remember_secret(api_key)
        self.timeout = timeout
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.rate_limit_retries = rate_limit_retries
        self.max_retry_after = max_retry_after

    def __repr__(self) -> str:
        return f"HostwindsClient({self.endpoint!r}, api_key='***')"

    # -- transport -------------------------------------------------------------------------------------

    def _send(self, action: str, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        """(HTTP status, body, headers with lower-case names) of one POST, or HostwindsTransient."""
        parts = self._parts
        port = parts.port or (443 if parts.scheme == "https" else 80)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        # Binding the source to 0.0.0.0 forces IPv4: the key's allow-list is IPv4 only, and an IPv6 egress
        # would be answered "Not Authorized!".
        conn = cls(parts.hostname, port, timeout=self.timeout, source_address=("0.0.0.0", 0))  # noqa: S104
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        try:
            try:
                conn.connect()
            except (ConnectionRefusedError, socket.gaierror) as exc:
                raise HostwindsTransient(
                    f"Hostwinds {action}: cannot connect to {parts.hostname}:{port} ({exc.strerror or exc})",
                    action,
                    maybe_applied=False,
                ) from None
            except OSError as exc:
                raise HostwindsTransient(
                    f"Hostwinds {action}: cannot connect to {parts.hostname}:{port} ({exc})",
                    action,
                    maybe_applied=False,
                ) from None
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                "User-Agent": "penguinmails-infra",
            }
            try:
                conn.request("POST", path, body, headers)
                answer = conn.getresponse()
                data = answer.read(MAX_ANSWER_BYTES)
                return answer.status, data, {k.lower(): v for k, v in answer.getheaders()}
            except TimeoutError:
                raise HostwindsTransient(
                    f"Hostwinds {action}: no answer within {self.timeout:g} s", action
                ) from None
            except (http.client.HTTPException, OSError) as exc:
                raise HostwindsTransient(
                    f"Hostwinds {action}: the connection broke before an answer ({type(exc).__name__})",
                    action,
                ) from None
        finally:
            conn.close()

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))

    @staticmethod
    def _rate_limit_pause(retry_after: float) -> float:
        """``retry_after`` plus a little jitter (up to 10 % + 50 ms), so waiting clients do not align."""
        return retry_after + random.uniform(0, 0.1 * retry_after + 0.05)

    def _post(self, action: str, **params: Any) -> Any:
        """POST one action; return its data or raise a typed :class:`HostwindsError`."""
        fields: list[tuple[str, str]] = [("action", action), ("API", self._api_key)]
        for key, value in params.items():
            if value is None:
                continue
            if isinstance(value, list | tuple):
                fields += [(f"{key}[]", str(item)) for item in value]
            else:
                fields.append((key, str(value)))
        body = urlencode(fields).encode()
        shown = " ".join(f"{k}={v}" for k, v in fields if k not in SECRET_PARAMS and k != "action")
        attempts = 1 + (self.retries if action in IDEMPOTENT_ACTIONS else 0)
        attempt = limited = 0  # transient failures (retried for idempotent actions only) / 429s (all)
        while True:
            started = time.monotonic()
            log.debug("Hostwinds → %s %s", action, scrub(shown))
            try:
                status, data, headers = self._send(action, body)
                result = interpret(action, status, data, headers, max_retry_after=self.max_retry_after)
            except HostwindsRateLimited as exc:
                elapsed = (time.monotonic() - started) * 1000
                if limited >= self.rate_limit_retries:
                    log.debug(
                        "Hostwinds ✗ %s after %.0f ms: %s (rate limited %d times, giving up)",
                        action,
                        elapsed,
                        exc.message,
                        limited + 1,
                    )
                    raise
                limited += 1
                pause = self._rate_limit_pause(exc.retry_after)
                log.debug(
                    "Hostwinds ✗ %s after %.0f ms: rate limited, nothing applied (retry %d/%d in %.2f s)",
                    action,
                    elapsed,
                    limited,
                    self.rate_limit_retries,
                    pause,
                )
                time.sleep(pause)
                continue
            except HostwindsTransient as exc:
                elapsed = (time.monotonic() - started) * 1000
                attempt += 1
                if attempt >= attempts:
                    log.debug("Hostwinds ✗ %s after %.0f ms: %s (giving up)", action, elapsed, exc.message)
                    raise
                pause = self._backoff(attempt - 1)
                log.debug(
                    "Hostwinds ✗ %s after %.0f ms: %s (retry in %.2f s)", action, elapsed, exc.message, pause
                )
                time.sleep(pause)
                continue
            log.debug("Hostwinds ← %s ok in %.0f ms", action, (time.monotonic() - started) * 1000)
            return result

    # -- instances -------------------------------------------------------------------------------------

    def instance_list(self) -> list[dict[str, Any]]:
        """Every instance of the account (``get_instances``), secrets removed."""
        return [i for i in as_list(self._post("get_instances")) if isinstance(i, dict)]

    def instance_ids(self, search: str | None = None, location_id: int | None = None) -> list[dict[str, Any]]:
        """The cheap listing (``get_instance_ids``) with search; follows pages until a short one."""
        found: list[dict[str, Any]] = []
        limit = 100
        for page in range(1, 101):
            rows = as_list(
                self._post("get_instance_ids", search=search, location_id=location_id, page=page, limit=limit)
            )
            found += [row for row in rows if isinstance(row, dict)]
            if len(rows) < limit:
                break
        return found

    def instance_get(self, sid: int) -> dict[str, Any]:
        """One instance (``get_instance``) without its root password and config key."""
        data = self._post("get_instance", serviceid=sid)
        if not isinstance(data, dict):
            raise HostwindsError(
                f"Hostwinds get_instance: unexpected answer for service {sid}", "get_instance"
            )
        return data

    def instance_exists(self, sid: int) -> bool:
        try:
            self._post("check_serviceid", serviceid=sid)
        except HostwindsNotFound:
            return False
        return True

    def instance_create(
        self,
        template: str,
        rid: int,
        location_id: int,
        srvrname: str,
        keys: Iterable[str] = (),
        billingcycle: str | None = None,
    ) -> list[dict[str, Any]]:
        """Order one instance (``add_instance``): bills at once, answers no id, is never retried here."""
        return self._post(
            "add_instance",
            template=template,
            rid=rid,
            location_id=location_id,
            srvrname=srvrname,
            keys=list(keys) or None,
            billingcycle=billingcycle,
            qty=1,
        )

    def instance_terminate(self, sid: int) -> None:
        self._post("terminate", serviceid=sid)

    def instance_rename(self, sid: int, srvrname: str) -> None:
        """``edit_instance``: renames the label (srvrname), not the OS hostname."""
        self._post("edit_instance", serviceid=sid, srvrname=srvrname)

    def billing_cycle_set(self, sid: int, cycle: str) -> None:
        self._post("change_billing_cycle", serviceid=sid, billingcycle=cycle)

    # -- networking ------------------------------------------------------------------------------------

    def ips_get(self, sid: int) -> list[dict[str, Any]]:
        """The instance's addresses from ``get_instance_ips`` as dicts with at least ``ip``."""
        data = self._post("get_instance_ips", serviceid=sid)
        rows = data.get("IP Addresses") if isinstance(data, dict) else data
        found = []
        for row in as_list(rows):
            if isinstance(row, str):
                found.append({"ip": row})
            elif isinstance(row, dict) and (row.get("ip") or row.get("address")):
                found.append({**row, "ip": row.get("ip") or row.get("address")})
        return found

    def rdns_get(self, sid: int, ip: str) -> str | None:
        """The PTR name of ``ip``, "" when unset, None when the API does not report it."""
        for row in self.ips_get(sid):
            if row["ip"] == ip:
                for key in ("rdns", "ptr", "reverse"):
                    if key in row:
                        return str(row[key] or "").rstrip(".")
                return None
        return None

    def rdns_set(self, sid: int, ip: str, rdns: str) -> None:
        self._post("set_rdns", serviceid=sid, ip=ip, rdns=rdns)

    def main_ip_change(self, sid: int) -> None:
        """``change_main_ip``: Hostwinds picks another address (may cost money on the real service)."""
        self._post("change_main_ip", serviceid=sid)

    def firewall_get(self, sid: int) -> dict[str, Any]:
        data = self._post("get_instance_firewall_profile", serviceid=sid)
        return data if isinstance(data, dict) else {}

    def firewall_set(self, sid: int, name: str) -> None:
        self._post("set_instance_firewall", serviceid=sid, name=name)

    # -- plan changes ----------------------------------------------------------------------------------

    def upgrade_order_get(self, sid: int) -> dict[str, Any] | None:
        """The pending upgrade order (``check_upgrade_order``) or None; only one may exist at a time."""
        try:
            data = self._post("check_upgrade_order", serviceid=sid)
        except (HostwindsNotFound, HostwindsInvalidRequest) as exc:
            # "No upgrade order found." is not a missing service: only that message means "none".
            if isinstance(exc, HostwindsInvalidRequest) and not re.search(
                r"\bno\b.*\border\b", exc.message, re.I
            ):
                raise
            if re.search(r"serviceid", exc.message, re.I):
                raise
            return None
        rows = [row for row in as_list(data) if isinstance(row, dict) and row]
        return rows[0] if rows else None

    def upgrade_order_create(self, sid: int, rid: int) -> None:
        """``upgrade_instance``: creates the order and its invoice; nothing changes on the server yet."""
        self._post("upgrade_instance", serviceid=sid, rid=rid)

    def upgrade_apply(self, sid: int) -> None:
        """``upgrade_server``: applies the paid order; the server goes through RESIZE to RESIZED."""
        self._post("upgrade_server", serviceid=sid)

    def upgrade_confirm(self, sid: int) -> None:
        self._post("confirm_upgrade", serviceid=sid)

    def upgrade_revert(self, sid: int) -> None:
        self._post("revert_upgrade", serviceid=sid)

    # -- catalogue and keys ----------------------------------------------------------------------------

    def location_list(self) -> list[dict[str, Any]]:
        return [row for row in as_list(self._post("get_locations")) if isinstance(row, dict)]

    def image_list(self) -> list[dict[str, Any]]:
        return [row for row in as_list(self._post("get_public_images")) if isinstance(row, dict)]

    def price_list(self) -> list[dict[str, Any]]:
        return [row for row in as_list(self._post("get_price_list")) if isinstance(row, dict)]

    def ssh_key_list(self) -> list[dict[str, Any]]:
        return [row for row in as_list(self._post("get_ssh_keys")) if isinstance(row, dict)]

    def ssh_key_add(self, name: str, public_key: str) -> None:
        self._post("add_ssh_key", name=name, public_key=public_key)

    def ssh_key_delete(self, name: str) -> None:
        self._post("delete_ssh_key", name=name)


def exact_label_matches(rows: list[dict[str, Any]], label: str) -> list[int]:
    """Service ids whose label (srvrname) is exactly ``label``: search is a substring match."""
    ids = []
    for row in rows:
        if str(row.get("srvrname") or "") == label:
            sid = as_int(row.get("id", row.get("serviceid")))
            if sid is not None:
                ids.append(sid)
    return sorted(set(ids))
