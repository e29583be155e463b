"""What every Hostwinds resource shares: settings, short-lived shared reads, waiting, and ownership proof.

**Shared reads.** One ``get_instances`` listing per provider process serves every waiting or refreshing
resource (single flight, short TTL), so 200 nodes waiting for their builds or deletions cost one API call
per poll, not 200.

**Ownership.** We act on an instance only when we can prove we created it: its service id is the one we
stored *and* its label and ``server_uuid`` are the ones we recorded. Labels carry a random part only our
stack knows (see :mod:`modules.hostwinds.identity`), so nobody else's server matches by accident; the uuid
catches a server replaced under the same id. :func:`verify_owned` raises
:class:`HostwindsOwnershipError` naming both sides; nothing is changed.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic as dynamic
from pulumi.runtime.rpc import UNKNOWN

from modules.config.model import HostwindsConfig
from modules.hostwinds.client import (
    HostwindsClient,
    HostwindsError,
    HostwindsTransient,
    as_int,
)
from modules.providers import ProviderSettings

GONE_STATES = frozenset({"DELETING", "DELETED", "SOFT_DELETED", "TERMINATED"})
LISTING_TTL_SECONDS = 30.0
LISTING_FAILURE_SECONDS = 2.0
CATALOGUE_TTL_SECONDS = 300.0
CATALOGUE_FAILURE_SECONDS = 30.0
REPORT_EVERY_SECONDS = 60.0
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class HostwindsOwnershipError(HostwindsError):
    """The instance under our stored id is not provably ours any more: nothing was changed."""


def vps_label(stack: str, resource_name: str, max_length: int = 63) -> str:
    """A label part for ``resource_name`` in ``stack``: stable, lower-case, at most ``max_length``."""
    raw = f"{stack}-{resource_name}".lower()
    text = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")
    if len(text) > max_length:
        text = text[: max_length - 9].rstrip("-") + "-" + hashlib.sha256(raw.encode()).hexdigest()[:8]
    return text


def is_hostname(value: str) -> bool:
    labels = value.rstrip(".").split(".")
    return len(value) <= 253 and len(labels) >= 2 and all(_HOST_LABEL.match(label) for label in labels)


def unknown(value: Any) -> bool:
    return value == UNKNOWN


def report(message: str) -> None:
    """Progress for long waits; the engine shows a provider's messages with the update's output."""
    pulumi.log.info(message)


# -- provider configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    endpoint: str
    api_key: str
    request_timeout: float
    build_timeout: float
    poll_interval: float
    lost_answer_wait: float
    create_attempts: int
    stack: str = ""

    def client(self) -> HostwindsClient:
        return HostwindsClient(self.endpoint, self.api_key, timeout=self.request_timeout)


def settings_from(provider_settings: ProviderSettings) -> Settings:
    """Endpoint and key by the stack's rule: a dev stack may take the devenv's, others only their config."""
    section = HostwindsConfig.model_validate(provider_settings.section("hostwinds"))
    endpoint = provider_settings.endpoint("PENGUINMAILS_HOSTWINDS_ENDPOINT", section.endpoint)
    api_key = provider_settings.credential("PENGUINMAILS_HOSTWINDS_API_KEY", "hostwindsApiKey") or ""
    return Settings(
        endpoint=endpoint,
        api_key=api_key,
        request_timeout=section.request_timeout_seconds,
        build_timeout=float(section.build_timeout_seconds),
        poll_interval=section.poll_interval_seconds,
        lost_answer_wait=section.lost_answer_wait_seconds,
        create_attempts=section.create_attempts,
    )


class HostwindsProvider(dynamic.ResourceProvider):
    """Shared plumbing: config from ``configure()``, a fresh client per call (never kept in the blob)."""

    def configure(self, req: dynamic.ConfigureRequest) -> None:
        self.settings = ProviderSettings.from_request(req)

    def _settings(self) -> Settings:
        return settings_from(getattr(self, "settings", None) or ProviderSettings())

    @staticmethod
    def _same_endpoint(outs: dict[str, Any], settings: Settings, who: str) -> None:
        """Refuse to act on a resource made through another endpoint (e.g. a leftover simulator variable)."""
        recorded = outs.get("endpoint")
        if recorded and recorded != settings.endpoint:
            raise HostwindsError(
                f"{who} was created through {recorded}, but the provider now talks to {settings.endpoint} "
                "(hostwinds.endpoint); refusing to read or change it there"
            )


# -- shared, short-lived caches (per provider process) ----------------------------------------------------


class _Cached:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at = 0.0
        self.data: Any = None


_CACHES: dict[tuple[str, str, str], _Cached] = {}
_CACHES_LOCK = threading.Lock()


def _cache(kind: str, client: HostwindsClient) -> _Cached:
    key = (kind, client.endpoint, hashlib.sha256(client._api_key.encode()).hexdigest()[:12])
    with _CACHES_LOCK:
        return _CACHES.setdefault(key, _Cached())


def shared_listing(
    client: HostwindsClient, max_age: float = LISTING_TTL_SECONDS
) -> dict[int, dict[str, Any]]:
    """service id → instance, from one ``get_instances`` shared by every call of this process.

    Single flight: concurrent callers wait for the one fetch under way instead of each listing; a fetch
    that started after the caller asked counts as fresh, so N waiters polling together cost one call.
    """
    asked = time.monotonic()
    entry = _cache("listing", client)
    with entry.lock:
        failed = getattr(entry, "failed", None)
        if failed is not None and failed[0] >= asked - LISTING_FAILURE_SECONDS:
            raise failed[1]  # a fetch failed a moment ago (or while we waited): do not queue up behind it
        if entry.data is not None and (entry.at >= asked or time.monotonic() - entry.at <= max_age):
            return entry.data
        started = time.monotonic()
        try:
            rows = client.instance_list()
        except HostwindsError as exc:
            entry.failed = (time.monotonic(), exc)
            raise
        entry.failed = None
        entry.data = {sid: row for row in rows if (sid := as_int(row.get("serviceid"))) is not None}
        entry.at = started
        return entry.data


def forget_listing(client: HostwindsClient) -> None:
    entry = _cache("listing", client)
    with entry.lock:
        entry.data = None


def labelled(listing: dict[int, dict[str, Any]], label: str) -> list[dict[str, Any]]:
    """Live instances of a listing whose label is exactly ``label``."""
    return [
        inst
        for inst in listing.values()
        if str(inst.get("srvrname") or "") == label and status_of(inst) not in GONE_STATES
    ]


def catalogue(client: HostwindsClient) -> dict[str, list[dict[str, Any]]]:
    """Locations, public images and plans (cached for a few minutes: they change rarely)."""
    entry = _cache("catalogue", client)
    with entry.lock:
        # A failure is remembered briefly too: 200 checks must not each wait out the retries of a dead API.
        age = time.monotonic() - entry.at
        if isinstance(entry.data, HostwindsError) and age <= CATALOGUE_FAILURE_SECONDS:
            raise entry.data
        if not isinstance(entry.data, dict) or age > CATALOGUE_TTL_SECONDS:
            try:
                entry.data = {
                    "locations": client.location_list(),
                    "images": client.image_list(),
                    "plans": client.price_list(),
                }
            except HostwindsError as exc:
                entry.data = exc
                raise
            finally:
                entry.at = time.monotonic()
        return entry.data


def resolve_image(images: list[dict[str, Any]], image: str) -> str | None:
    """The template UUID for ``image``: a UUID, a slug ("debian-12") or a name ("Debian 12")."""
    wanted = image.strip().lower()
    for row in images:
        names = {str(row.get(k, "")).strip().lower() for k in ("uuid", "slug", "name", "template")}
        if wanted in names:
            return str(row.get("uuid") or row.get("template") or row.get("id"))
    return None


def catalogue_failures(client: HostwindsClient, props: dict[str, Any]) -> list[dynamic.CheckFailure]:
    """Location, image and plan checked against the account's catalogue, before anything is ordered."""
    data = catalogue(client)
    failures = []
    location = props.get("location_id")
    if not unknown(location) and as_int(location) is not None:
        ids = {as_int(row.get("id")) for row in data["locations"]}
        if ids and as_int(location) not in ids:
            failures.append(
                dynamic.CheckFailure(
                    "location_id", f"{location} is not a Hostwinds location (known: {sorted(ids)})"
                )
            )
    image = props.get("image")
    if (
        isinstance(image, str)
        and not unknown(image)
        and data["images"]
        and resolve_image(data["images"], str(image)) is None
    ):
        known = ", ".join(sorted(str(r.get("slug") or r.get("name")) for r in data["images"]))
        failures.append(dynamic.CheckFailure("image", f"{image!r} is not a public image (known: {known})"))
    plan = props.get("plan_id")
    if not unknown(plan) and as_int(plan) is not None:
        rids = {as_int(row.get("rid", row.get("id"))) for row in data["plans"]}
        if rids and as_int(plan) not in rids:
            failures.append(
                dynamic.CheckFailure("plan_id", f"{plan} is not a plan rid (known: {sorted(rids)})")
            )
    return failures


# -- ownership --------------------------------------------------------------------------------------------


def verify_owned(inst: dict[str, Any], label: str | None, server_uuid: str | None, who: str) -> None:
    """Raise unless ``inst`` carries the recorded label and uuid (a missing recorded uuid is learnt)."""
    live_label = str(inst.get("srvrname") or "")
    live_uuid = str(inst.get("server_uuid") or "")
    sid = inst.get("serviceid")
    if label and live_label != label:
        raise HostwindsOwnershipError(
            f"{who}: instance {sid} is now labelled {live_label!r}, not {label!r} as recorded; refusing to "
            "change or terminate it. If it is still ours, rename it back in the portal; if not, "
            "`pulumi state delete` this resource (the next `up` orders a new one)"
        )
    if server_uuid and live_uuid and live_uuid != server_uuid:
        raise HostwindsOwnershipError(
            f"{who}: instance {sid} ({live_label}) has server_uuid {live_uuid}, not {server_uuid} as recorded: "
            "it was rebuilt or replaced out of band; refusing to change or terminate it. Check it in the "
            "portal, then `pulumi state delete` this resource if it is no longer ours"
        )


# -- waiting ---------------------------------------------------------------------------------------------


def status_of(inst: dict[str, Any]) -> str:
    return str(inst.get("status") or "").upper()


def is_ready(inst: dict[str, Any]) -> bool:
    """ACTIVE with a main IP (and no task under way when the API says so)."""
    return status_of(inst) == "ACTIVE" and bool(inst.get("main_ip")) and not inst.get("task_state")


class Progress:
    """Progress lines for a long wait: on every change of what is seen, and at least once a minute."""

    def __init__(self, who: str):
        self.who = who
        self.started = time.monotonic()
        self.last_line = ""
        self.last_at = self.started

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, line: str) -> None:
        now = time.monotonic()
        if line != self.last_line or now - self.last_at >= REPORT_EVERY_SECONDS:
            report(f"{self.who}: {line} ({now - self.started:.0f} s)")
            self.last_line, self.last_at = line, now


def poll_listing(
    client: HostwindsClient, settings: Settings, interval: float | None = None, since: float | None = None
):
    """The shared listing, or None when this poll failed transiently (the caller polls again).

    ``since`` (a ``time.monotonic()``): only a listing fetched after it will do, for waits that conclude
    something is gone, which a listing from before it existed would also "show".
    """
    max_age = (interval or settings.poll_interval) * 0.9
    if since is not None:
        max_age = max(0.0, min(max_age, time.monotonic() - since))
    try:
        return shared_listing(client, max_age=max_age)
    except HostwindsTransient:
        return None


def wait_ready(
    client: HostwindsClient, settings: Settings, sid: int, who: str, label: str | None = None
) -> dict[str, Any]:
    """Wait until instance ``sid`` is ACTIVE with a main IP, from the shared listing; ERROR or timeout raise."""
    progress = Progress(who)
    deadline = progress.started + settings.build_timeout
    while True:
        listing = poll_listing(client, settings)
        inst = (listing or {}).get(sid)
        if inst is not None and label and str(inst.get("srvrname") or "") != label:
            verify_owned(inst, label, None, who)
        status = status_of(inst) if inst is not None else ("unknown" if listing is None else "not listed")
        if inst is not None and is_ready(inst):
            if progress.last_line:
                report(f"{who}: ACTIVE at {inst['main_ip']} after {progress.elapsed():.0f} s")
            return inst
        if status == "ERROR":
            raise HostwindsError(
                f"{who}: instance {sid} went to ERROR; it is still billed. Terminate it in the portal (or "
                "`pulumi up --replace` this resource) and run `pulumi up` again"
            )
        if time.monotonic() > deadline:
            raise HostwindsError(
                f"{who}: instance {sid} is still {status} after {settings.build_timeout:.0f} s "
                "(hostwinds.build_timeout_seconds); the next `pulumi up` waits for it again"
            )
        progress(f"instance {sid} is {status}")
        time.sleep(settings.poll_interval)


def wait_gone(client: HostwindsClient, settings: Settings, sid: int, who: str) -> None:
    """Wait until ``sid`` has left the shared listing (terminated instances leave it)."""
    interval = min(settings.poll_interval, 0.5)
    progress = Progress(who)
    deadline = progress.started + settings.build_timeout
    while True:
        listing = poll_listing(client, settings, interval, since=progress.started)
        if listing is not None and sid not in listing:
            return
        if time.monotonic() > deadline:
            raise HostwindsError(
                f"{who}: instance {sid} still exists {settings.build_timeout:.0f} s after terminate; "
                "run `pulumi destroy` again"
            )
        if listing is not None:
            progress(f"instance {sid} is {status_of(listing[sid]) or 'unknown'}")
        time.sleep(interval)
