"""Hostwinds as Pulumi dynamic resources: ``SshKey``, ``Vps`` and ``FleetReady``.

``Vps`` orders one instance. ``add_instance`` answers no id and bills at once, so every instance carries a
label (srvrname) made from the stack and the resource name: before ordering, and again after a lost
answer, the provider looks the label up and adopts what it finds instead of buying a second server.

With ``wait_until_ready`` (the default) ``create`` waits for ACTIVE with a main IP, then sets rDNS and the
firewall profile. A fleet passes ``wait_until_ready=False`` so each create returns as soon as the id is
known, and one ``FleetReady`` resource waits for all nodes together by polling one shared listing — the
provider process serves at most four calls at once, so waiting per node would take N/4 build times.

Refresh reads one ``get_instances`` listing per provider process (shared, short TTL, thread-safe) instead
of one ``get_instance`` per node, plus the rDNS and firewall of each node, which no listing carries.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic as dynamic
from pulumi.runtime.rpc import UNKNOWN

from modules.config.model import HostwindsConfig
from modules.hostwinds.client import (
    HostwindsClient,
    HostwindsError,
    HostwindsInvalidRequest,
    HostwindsNotFound,
    HostwindsTransient,
    as_int,
    exact_label_matches,
)
from modules.providers import ProviderSettings

BILLING_CYCLES = ("hourly", "monthly", "quarterly", "semiannually", "annually", "biennially", "triennially")
# Changing these forces a new server (Hostwinds cannot move or re-image an instance in place and keep it).
VPS_REPLACE_KEYS = ("location_id", "image")
# Changed in place: label (edit_instance), rDNS (set_rdns), firewall (set_instance_firewall), plan (the
# upgrade flow), billing cycle (change_billing_cycle). SSH keys only apply when a server is built.
VPS_UPDATE_KEYS = (
    "label",
    "rdns",
    "firewall_profile",
    "plan_id",
    "billing_cycle",
    "ssh_keys",
    "wait_until_ready",
)
VPS_KEYS = VPS_REPLACE_KEYS + VPS_UPDATE_KEYS
GONE_STATES = frozenset({"DELETING", "DELETED", "SOFT_DELETED", "TERMINATED"})
LISTING_TTL_SECONDS = 30.0
CATALOGUE_TTL_SECONDS = 300.0
CATALOGUE_FAILURE_SECONDS = 30.0
FLEET_WORKERS = 8
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def vps_label(stack: str, resource_name: str) -> str:
    """The instance label for ``resource_name`` in ``stack``: unique per stack, stable across runs."""
    raw = f"{stack}-{resource_name}".lower()
    text = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")
    if len(text) > 63:
        text = text[:54].rstrip("-") + "-" + hashlib.sha256(raw.encode()).hexdigest()[:8]
    return text


def is_hostname(value: str) -> bool:
    labels = value.rstrip(".").split(".")
    return len(value) <= 253 and len(labels) >= 2 and all(_HOST_LABEL.match(label) for label in labels)


def _unknown(value: Any) -> bool:
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

    def client(self) -> HostwindsClient:
        return HostwindsClient(self.endpoint, self.api_key, timeout=self.request_timeout)


def settings_from(provider_settings: ProviderSettings) -> Settings:
    """Endpoint from ``PENGUINMAILS_HOSTWINDS_ENDPOINT`` else config; key from env else the secret."""
    section = HostwindsConfig.model_validate(provider_settings.section("hostwinds"))
    endpoint = os.environ.get("PENGUINMAILS_HOSTWINDS_ENDPOINT") or section.endpoint
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


class _HostwindsProvider(dynamic.ResourceProvider):
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
                "(PENGUINMAILS_HOSTWINDS_ENDPOINT or hostwinds.endpoint); refusing to read or change it there"
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

    Single flight: concurrent callers wait for the one fetch under way instead of each listing.
    """
    entry = _cache("listing", client)
    with entry.lock:
        if entry.data is not None and time.monotonic() - entry.at <= max_age:
            return entry.data
        started = time.monotonic()
        rows = client.instance_list()
        entry.data = {sid: row for row in rows if (sid := as_int(row.get("serviceid"))) is not None}
        entry.at = started
        return entry.data


def forget_listing(client: HostwindsClient) -> None:
    entry = _cache("listing", client)
    with entry.lock:
        entry.data = None


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
    if not _unknown(location) and as_int(location) is not None:
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
        and not _unknown(image)
        and data["images"]
        and resolve_image(data["images"], str(image)) is None
    ):
        known = ", ".join(sorted(str(r.get("slug") or r.get("name")) for r in data["images"]))
        failures.append(dynamic.CheckFailure("image", f"{image!r} is not a public image (known: {known})"))
    plan = props.get("plan_id")
    if not _unknown(plan) and as_int(plan) is not None:
        rids = {as_int(row.get("rid", row.get("id"))) for row in data["plans"]}
        if rids and as_int(plan) not in rids:
            failures.append(
                dynamic.CheckFailure("plan_id", f"{plan} is not a plan rid (known: {sorted(rids)})")
            )
    return failures


# -- waiting ---------------------------------------------------------------------------------------------


def _status(inst: dict[str, Any]) -> str:
    return str(inst.get("status") or "").upper()


def is_ready(inst: dict[str, Any]) -> bool:
    """ACTIVE with a main IP (and no task under way when the API says so)."""
    return _status(inst) == "ACTIVE" and bool(inst.get("main_ip")) and not inst.get("task_state")


def wait_ready(client: HostwindsClient, settings: Settings, sid: int, who: str) -> dict[str, Any]:
    """Poll ``get_instance`` until ACTIVE with a main IP; ERROR or the build timeout raise."""
    started = time.monotonic()
    deadline = started + settings.build_timeout
    last_status, last_report = "", started
    while True:
        try:
            inst = client.instance_get(sid)
        except HostwindsTransient as exc:
            inst = {"status": f"unknown ({exc.message})"}
        status = _status(inst)
        if is_ready(inst):
            if last_status:
                report(f"{who}: ACTIVE at {inst['main_ip']} after {time.monotonic() - started:.0f} s")
            return inst
        if status == "ERROR":
            raise HostwindsError(
                f"{who}: instance {sid} went to ERROR; it is still billed. Terminate it in the portal (or "
                "`pulumi up --replace` this resource) and run `pulumi up` again"
            )
        now = time.monotonic()
        if now > deadline:
            raise HostwindsError(
                f"{who}: instance {sid} is still {status or 'unknown'} after {settings.build_timeout:.0f} s "
                "(hostwinds.build_timeout_seconds); the next `pulumi up` waits for it again"
            )
        if status != last_status or now - last_report >= 60:
            report(f"{who}: instance {sid} is {status or 'unknown'} ({now - started:.0f} s)")
            last_status, last_report = status, now
        time.sleep(settings.poll_interval)


def wait_gone(client: HostwindsClient, settings: Settings, sid: int, who: str) -> None:
    deadline = time.monotonic() + settings.build_timeout
    interval = min(settings.poll_interval, 2.0)
    while True:
        try:
            if not client.instance_exists(sid):
                return
        except HostwindsTransient:
            pass
        if time.monotonic() > deadline:
            raise HostwindsError(
                f"{who}: instance {sid} still exists {settings.build_timeout:.0f} s after terminate"
            )
        time.sleep(interval)


# -- SshKey ----------------------------------------------------------------------------------------------


class SshKeyProvider(_HostwindsProvider):
    """An account SSH key (``add_ssh_key``); instances name it in ``add_instance``'s ``keys[]``."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures = []
        name = news.get("key_name")
        if not _unknown(name) and not (isinstance(name, str) and _LABEL_RE.match(name)):
            failures.append(dynamic.CheckFailure("key_name", "1-64 letters, digits, '.', '_' or '-'"))
        key = news.get("public_key")
        if not _unknown(key):
            words = key.split() if isinstance(key, str) else []
            if len(words) < 2 or not words[0].startswith(("ssh-", "ecdsa-")) or "\n" in key.strip():
                failures.append(
                    dynamic.CheckFailure(
                        "public_key", "must be one OpenSSH public key line ('ssh-ed25519 AAAA…')"
                    )
                )
        return dynamic.CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = [k for k in ("key_name", "public_key") if olds.get(k) != news.get(k)]
        # A new key under the same name must go first (names are unique on the account).
        return dynamic.DiffResult(
            changes=bool(changed), replaces=changed, delete_before_replace="key_name" not in changed
        )

    def _live(self, client: HostwindsClient, name: str) -> str | None:
        for row in client.ssh_key_list():
            if row.get("name") == name:
                return str(row.get("public_key") or row.get("key") or "").strip()
        return None

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        settings = self._settings()
        client = settings.client()
        name, key = props["key_name"], props["public_key"].strip()
        who = f"SshKey[{name}]"
        for attempt in range(1, 4):
            try:
                client.ssh_key_add(name, key)
                break
            except (HostwindsTransient, HostwindsInvalidRequest) as exc:
                problem = exc
            # The name may exist already: ours after a lost answer (adopt it), or someone else's (refuse).
            live = self._live(client, name)
            if live is not None:
                if live.split()[:2] != key.split()[:2]:
                    raise HostwindsError(f"{who}: a different key already has this name on the account")
                break
            if isinstance(problem, HostwindsInvalidRequest) or attempt == 3:
                raise HostwindsError(f"{who}: the key could not be added: {problem.message}")
        return dynamic.CreateResult(id_=name, outs={**props, "endpoint": settings.endpoint})

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        settings = self._settings()
        self._same_endpoint(props, settings, f"SshKey[{id_}]")
        live = self._live(settings.client(), id_)
        if live is None:
            return dynamic.ReadResult(id_="", outs={})
        outs = dict(props)
        if live.split()[:2] != str(props.get("public_key", "")).split()[:2]:
            outs["public_key"] = live
        return dynamic.ReadResult(id_=id_, outs=outs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        settings = self._settings()
        self._same_endpoint(props, settings, f"SshKey[{id_}]")
        try:
            settings.client().ssh_key_delete(id_)
        except HostwindsNotFound:
            pass


class SshKey(dynamic.Resource, module="hostwinds", name="SshKey"):
    """A public key registered on the Hostwinds account under ``key_name``."""

    key_name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        key_name: str,
        public_key: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__(
            SshKeyProvider(), name, {"key_name": key_name, "public_key": public_key, "endpoint": None}, opts
        )


# -- Vps -------------------------------------------------------------------------------------------------


def vps_failures(news: dict[str, Any]) -> list[dynamic.CheckFailure]:
    """Every problem with a Vps's inputs (values still unknown in a preview are skipped)."""
    failures: list[dynamic.CheckFailure] = []

    def bad(key: str, reason: str) -> None:
        failures.append(dynamic.CheckFailure(key, reason))

    def known(key: str) -> bool:
        return not _unknown(news.get(key))

    label = news.get("label")
    if known("label") and not (isinstance(label, str) and _LABEL_RE.match(label)):
        bad("label", "must be 1-64 letters, digits, '.', '_' or '-' (it is how a lost order is found again)")
    for key in ("location_id", "plan_id"):
        value = news.get(key)
        if known(key) and (isinstance(value, bool) or as_int(value) is None or as_int(value) < 1):
            bad(key, f"must be a positive whole number, got {value!r}")
    if known("image") and not (isinstance(news.get("image"), str) and news["image"].strip()):
        bad("image", "must name a public image (slug, name or template UUID)")
    if known("billing_cycle") and news.get("billing_cycle") not in BILLING_CYCLES:
        bad("billing_cycle", f"must be one of {', '.join(BILLING_CYCLES)}, got {news.get('billing_cycle')!r}")
    keys = news.get("ssh_keys")
    if known("ssh_keys") and not (
        isinstance(keys, list)
        and all(_unknown(k) or (isinstance(k, str) and _LABEL_RE.match(k)) for k in keys)
    ):
        bad("ssh_keys", "must be a list of SSH key names registered on the account")
    rdns = news.get("rdns")
    if known("rdns") and rdns is not None and not (isinstance(rdns, str) and is_hostname(rdns)):
        bad("rdns", f"must be a host name such as mx-01.example.com, got {rdns!r}")
    firewall = news.get("firewall_profile")
    if (
        known("firewall_profile")
        and firewall is not None
        and not (isinstance(firewall, str) and firewall.strip())
    ):
        bad("firewall_profile", "must be a firewall profile name (e.g. smtp) or null to leave it alone")
    if known("wait_until_ready") and not isinstance(news.get("wait_until_ready"), bool):
        bad("wait_until_ready", "must be true or false")
    return failures


def vps_outs(props: dict[str, Any], inst: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """Every input plus what the instance says now (the root password is never kept)."""
    outs = {k: props.get(k) for k in VPS_KEYS}
    sid = as_int(inst.get("serviceid"))
    outs.update(
        service_id=sid,
        label=str(inst.get("srvrname") or props.get("label")),
        main_ip=str(inst.get("main_ip") or ""),
        ipv6=str(inst.get("ip_v6") or ""),
        status=_status(inst),
        template_uuid=str(inst.get("template_uuid") or ""),
        plan_name=str(inst.get("product_name") or ""),
        endpoint=endpoint,
    )
    return outs


class VpsProvider(_HostwindsProvider):
    """One Hostwinds instance; see the module docstring for the ordering and waiting rules."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        inputs = dict(news)
        for key in ("location_id", "plan_id"):
            if not _unknown(inputs.get(key)) and as_int(inputs.get(key)) is not None:
                inputs[key] = as_int(inputs[key])
        if isinstance(inputs.get("rdns"), str):
            inputs["rdns"] = inputs["rdns"].rstrip(".").lower()
        inputs.setdefault("ssh_keys", [])
        inputs.setdefault("wait_until_ready", True)
        failures = vps_failures(inputs)
        failed = {f.property for f in failures}
        try:
            for failure in catalogue_failures(self._settings().client(), inputs):
                if failure.property not in failed:
                    failures.append(failure)
        except HostwindsTransient as exc:
            pulumi.log.warn(f"Vps[{inputs.get('label')}]: catalogue not checked ({exc.message})")
        return dynamic.CheckResult(inputs, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = [k for k in VPS_KEYS if _unknown(news.get(k)) or olds.get(k) != news.get(k)]
        if "wait_until_ready" in changed and olds.get("wait_until_ready") is None:
            changed.remove("wait_until_ready")
        replaces = [k for k in changed if k in VPS_REPLACE_KEYS]
        # Replacement terminates first: the new server takes over the label, which must not find the old one.
        return dynamic.DiffResult(
            changes=bool(changed), replaces=replaces, delete_before_replace=bool(replaces)
        )

    # create -------------------------------------------------------------------------------------------

    @staticmethod
    def _labelled(client: HostwindsClient, label: str) -> list[dict[str, Any]]:
        """Live instances whose label is exactly ``label`` (terminated ones are skipped)."""
        found = []
        for sid in exact_label_matches(client.instance_ids(search=label), label):
            try:
                inst = client.instance_get(sid)
            except HostwindsNotFound:
                continue
            if _status(inst) not in GONE_STATES:
                found.append(inst)
        return found

    def _one_labelled(self, client: HostwindsClient, label: str, who: str) -> dict[str, Any] | None:
        found = self._labelled(client, label)
        if len(found) > 1:
            ids = ", ".join(str(i.get("serviceid")) for i in found)
            raise HostwindsError(
                f"{who}: {len(found)} instances carry the label {label!r} (service ids {ids}); refusing "
                "to guess which one is this resource. Terminate the extra ones and run `pulumi up` again"
            )
        return found[0] if found else None

    def _await_label(self, client: HostwindsClient, settings: Settings, label: str, who: str) -> dict | None:
        deadline = time.monotonic() + settings.lost_answer_wait
        while True:
            found = self._one_labelled(client, label, who)
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(min(settings.poll_interval, 2.0))

    def _order(self, client: HostwindsClient, settings: Settings, props: dict[str, Any], who: str) -> dict:
        """Adopt the labelled instance if there is one, else order it; a lost answer is settled by label."""
        label = props["label"]
        existing = self._one_labelled(client, label, who)
        if existing is not None:
            report(f"{who}: adopting instance {existing.get('serviceid')} that already carries the label")
            return existing
        template = resolve_image(catalogue(client)["images"], props["image"]) or props["image"]
        for attempt in range(1, settings.create_attempts + 1):
            try:
                client.instance_create(
                    template=template,
                    rid=as_int(props["plan_id"]),
                    location_id=as_int(props["location_id"]),
                    srvrname=label,
                    keys=props.get("ssh_keys") or [],
                    billingcycle=props.get("billing_cycle"),
                )
            except HostwindsTransient as exc:
                found = self._await_label(client, settings, label, who) if exc.maybe_applied else None
                if found is not None:
                    report(
                        f"{who}: the order's answer was lost ({exc.message}); adopting instance "
                        f"{found.get('serviceid')} found by its label"
                    )
                    return found
                if attempt < settings.create_attempts:
                    report(
                        f"{who}: the order failed ({exc.message}) and no instance carries the label: "
                        "ordering again"
                    )
                    continue
                raise HostwindsError(
                    f"{who}: add_instance failed {attempt} time(s), last: {exc.message}. No instance "
                    f"carries the label {label!r} after {settings.lost_answer_wait:.0f} s. Run `pulumi up` "
                    "again: it looks the label up before ordering"
                ) from None
            found = self._await_label(client, settings, label, who)
            if found is not None:
                return found
            raise HostwindsError(
                f"{who}: add_instance was accepted but no instance labelled {label!r} appeared within "
                f"{settings.lost_answer_wait:.0f} s. Run `pulumi up` again once it shows: it adopts it "
                "by label"
            )
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _network(client: HostwindsClient, sid: int, inst: dict[str, Any], props: dict[str, Any]) -> None:
        if props.get("rdns"):
            client.rdns_set(sid, inst["main_ip"], props["rdns"])
        if props.get("firewall_profile"):
            client.firewall_set(sid, props["firewall_profile"])

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        settings = self._settings()
        client = settings.client()
        who = f"Vps[{props['label']}]"
        inst = self._order(client, settings, props, who)
        sid = as_int(inst.get("serviceid"))
        forget_listing(client)
        if props.get("wait_until_ready", True):
            inst = wait_ready(client, settings, sid, who)
            self._network(client, sid, inst, props)
        return dynamic.CreateResult(id_=str(sid), outs=vps_outs(props, inst, settings.endpoint))

    # read ---------------------------------------------------------------------------------------------

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        settings = self._settings()
        who = f"Vps[{props.get('label', id_)}]"
        self._same_endpoint(props, settings, who)
        client = settings.client()
        sid = int(id_)
        inst = shared_listing(client).get(sid)
        if inst is None:  # the shared listing may predate this instance: ask for it directly
            try:
                inst = client.instance_get(sid)
            except HostwindsNotFound:
                return dynamic.ReadResult(id_="", outs={})
        if _status(inst) in GONE_STATES:
            return dynamic.ReadResult(id_="", outs={})
        outs = vps_outs(props, inst, settings.endpoint)
        if is_ready(inst):
            if props.get("rdns") is not None:
                live = client.rdns_get(sid, inst["main_ip"])
                if live is not None:  # None: this API does not report PTRs, so drift cannot be seen
                    outs["rdns"] = live or None
            if props.get("firewall_profile"):
                outs["firewall_profile"] = str(client.firewall_get(sid).get("name") or "") or None
        # Live values become the recorded inputs too, so the next preview displays what drifted.
        return dynamic.ReadResult(id_=id_, outs=outs, inputs={k: outs[k] for k in VPS_KEYS})

    # update -------------------------------------------------------------------------------------------

    def _upgrade(self, client: HostwindsClient, settings: Settings, sid: int, rid: int, who: str) -> dict:
        """upgrade_instance → upgrade_server → (RESIZED) confirm_upgrade; resumes a half-done change."""
        inst = client.instance_get(sid)
        if _status(inst) == "ACTIVE" and as_int(inst.get("product_id")) == rid:
            return wait_ready(client, settings, sid, who)  # done by an earlier run whose answer was lost
        if _status(inst) not in ("RESIZED", "RESIZE"):
            order = client.upgrade_order_get(sid)
            if order is None:
                report(f"{who}: ordering the upgrade of instance {sid} to plan {rid}")
                client.upgrade_order_create(sid, rid)
                order = client.upgrade_order_get(sid) or {}
            try:
                client.upgrade_apply(sid)
            except HostwindsInvalidRequest as exc:
                raise HostwindsError(
                    f"{who}: the upgrade to plan {rid} is ordered (invoice {order.get('invoiceid', '?')}, "
                    f"total {order.get('total', '?')}) but could not be applied: {exc.message}. Pay the "
                    "invoice if it is open, then run `pulumi up` again (it resumes from the pending order)"
                ) from None
        if _status(inst) != "RESIZED":
            deadline = time.monotonic() + settings.build_timeout
            while True:
                inst = client.instance_get(sid)
                status = _status(inst)
                if status in ("RESIZED", "ACTIVE") and as_int(inst.get("product_id")) == rid:
                    break
                if status == "ERROR" or time.monotonic() > deadline:
                    raise HostwindsError(
                        f"{who}: the resize of instance {sid} to plan {rid} is {status or 'unknown'}; see the portal"
                    )
                time.sleep(settings.poll_interval)
        if _status(inst) == "RESIZED":
            client.upgrade_confirm(sid)
            report(f"{who}: plan {as_int(inst.get('product_id'))} confirmed")
        inst = wait_ready(client, settings, sid, who)
        if as_int(inst.get("product_id")) != rid:
            raise HostwindsError(
                f"{who}: confirmed a pending resize to plan {inst.get('product_id')} left by an earlier change; "
                f"run `pulumi up` again to move to plan {rid}"
            )
        return inst

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        settings = self._settings()
        who = f"Vps[{news['label']}]"
        self._same_endpoint(olds, settings, who)
        client = settings.client()
        sid = int(id_)
        changed = {k for k in VPS_KEYS if olds.get(k) != news.get(k)}
        try:
            inst = client.instance_get(sid)
        except HostwindsNotFound:
            raise HostwindsError(f"{who}: instance {sid} no longer exists; run `pulumi refresh`") from None
        if "ssh_keys" in changed:
            pulumi.log.warn(
                f"{who}: SSH keys only apply when a server is built; manage authorized_keys with Ansible"
            )
        if changed - {"ssh_keys", "wait_until_ready"}:
            if "plan_id" in changed or _status(inst) == "RESIZED":
                inst = self._upgrade(client, settings, sid, int(news["plan_id"]), who)
            else:
                inst = wait_ready(client, settings, sid, who)
            if "label" in changed:
                client.instance_rename(sid, news["label"])
            if "billing_cycle" in changed:
                client.billing_cycle_set(sid, news["billing_cycle"])
            moved = olds.get("main_ip") and olds.get("main_ip") != inst.get("main_ip")
            if news.get("rdns") and ("rdns" in changed or moved):
                client.rdns_set(sid, inst["main_ip"], news["rdns"])
            if news.get("firewall_profile") and "firewall_profile" in changed:
                client.firewall_set(sid, news["firewall_profile"])
            inst = client.instance_get(sid)
        forget_listing(client)
        return dynamic.UpdateResult(outs=vps_outs(news, inst, settings.endpoint))

    # delete -------------------------------------------------------------------------------------------

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        settings = self._settings()
        who = f"Vps[{props.get('label', id_)}]"
        self._same_endpoint(props, settings, who)
        client = settings.client()
        sid = int(id_)
        try:
            client.instance_terminate(sid)
        except HostwindsNotFound:
            return
        wait_gone(client, settings, sid, who)
        forget_listing(client)


class Vps(dynamic.Resource, module="hostwinds", name="Vps"):
    """One Hostwinds VPS. Replaced when ``location_id`` or ``image`` changes; everything else in place."""

    service_id: pulumi.Output[int]
    label: pulumi.Output[str]
    main_ip: pulumi.Output[str]
    ipv6: pulumi.Output[str]
    status: pulumi.Output[str]
    plan_name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        location_id: int,
        image: str,
        plan_id: int,
        ssh_keys: list[pulumi.Input[str]] | None = None,
        firewall_profile: str | None = None,
        rdns: str | None = None,
        billing_cycle: str = "hourly",
        label: str | None = None,
        wait_until_ready: bool = True,
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "label": label or vps_label(pulumi.get_stack(), name),
            "location_id": location_id,
            "image": image,
            "plan_id": plan_id,
            "ssh_keys": list(ssh_keys or []),
            "firewall_profile": firewall_profile,
            "rdns": rdns,
            "billing_cycle": billing_cycle,
            "wait_until_ready": wait_until_ready,
            **{
                key: None for key in ("service_id", "main_ip", "ipv6", "status", "template_uuid", "plan_name")
            },
            "endpoint": None,
        }
        super().__init__(VpsProvider(), name, props, opts)


# -- FleetReady ------------------------------------------------------------------------------------------

NODE_KEYS = ("name", "label", "service_id", "fqdn", "rdns", "firewall_profile")


def _nodes(props: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: node.get(k) for k in NODE_KEYS} for node in props.get("nodes") or []]


def wait_all(
    client: HostwindsClient, settings: Settings, nodes: list[dict[str, Any]], who: str
) -> dict[int, dict[str, Any]]:
    """Wait until every node is ACTIVE with a main IP, polling one listing for all of them at a time."""
    sids = {int(n["service_id"]): n["name"] for n in nodes}
    started = time.monotonic()
    deadline = started + settings.build_timeout
    last_line, last_report, missing_twice = "", started, set()
    while True:
        try:
            listing = shared_listing(client, max_age=0)
        except HostwindsTransient as exc:
            listing = None
            line = f"listing failed ({exc.message}), retrying"
        if listing is not None:
            ready = {sid: listing[sid] for sid in sids if sid in listing and is_ready(listing[sid])}
            failed = sorted(sids[sid] for sid in sids if sid in listing and _status(listing[sid]) == "ERROR")
            missing = {sid for sid in sids if sid not in listing or _status(listing[sid]) in GONE_STATES}
            if failed:
                raise HostwindsError(
                    f"{who}: node(s) {', '.join(failed)} went to ERROR; they are still billed. Replace them "
                    "(`pulumi up --replace <urn>`) or terminate them in the portal and run `pulumi up` again"
                )
            gone = sorted(sids[sid] for sid in missing & missing_twice)
            if gone:
                raise HostwindsError(
                    f"{who}: node(s) {', '.join(gone)} no longer exist; run `pulumi refresh`"
                )
            missing_twice = missing
            if len(ready) == len(sids):
                report(f"{who}: all {len(sids)} node(s) ACTIVE after {time.monotonic() - started:.0f} s")
                return ready
            line = f"{len(ready)}/{len(sids)} node(s) ACTIVE"
        now = time.monotonic()
        if now > deadline:
            pending = sorted(sids[s] for s in sids if listing is None or not is_ready(listing.get(s, {})))
            raise HostwindsError(
                f"{who}: {len(pending)} node(s) not ACTIVE after {settings.build_timeout:.0f} s: "
                f"{', '.join(pending[:20])}; the next `pulumi up` waits for them again"
            )
        if line != last_line or now - last_report >= 60:
            report(f"{who}: {line} ({now - started:.0f} s)")
            last_line, last_report = line, now
        time.sleep(settings.poll_interval)


class FleetReadyProvider(_HostwindsProvider):
    """The fleet-wide readiness step: waits for all nodes at once, then sets new nodes' rDNS and firewall.

    It owns nothing on the account (delete does nothing); its ``inventory`` output lists every node's name,
    FQDN, main IP and service id, ready for an Ansible inventory.
    """

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures = []
        nodes = news.get("nodes")
        if not _unknown(nodes):
            if not isinstance(nodes, list):
                failures.append(dynamic.CheckFailure("nodes", "must be a list of nodes"))
            else:
                names = [n.get("name") for n in nodes if isinstance(n, dict)]
                if len(names) != len(nodes) or any(not isinstance(x, str) or not x for x in names):
                    failures.append(dynamic.CheckFailure("nodes", "every node needs a name"))
                elif len(set(names)) != len(names):
                    failures.append(dynamic.CheckFailure("nodes", "node names must be unique"))
        return dynamic.CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        if _unknown(news.get("nodes")):
            return dynamic.DiffResult(changes=True, replaces=[], delete_before_replace=False)
        changed = _nodes(olds) != _nodes(news)
        return dynamic.DiffResult(changes=changed, replaces=[], delete_before_replace=False)

    def _converge(self, props: dict[str, Any], configure: list[dict[str, Any]]) -> dict[str, Any]:
        settings = self._settings()
        client = settings.client()
        nodes = _nodes(props)
        who = f"FleetReady[{len(nodes)} node(s)]"
        ready = wait_all(client, settings, nodes, who) if nodes else {}

        def network(node: dict[str, Any]) -> str | None:
            sid = int(node["service_id"])
            try:
                if node.get("rdns"):
                    client.rdns_set(sid, ready[sid]["main_ip"], node["rdns"])
                if node.get("firewall_profile"):
                    client.firewall_set(sid, node["firewall_profile"])
            except HostwindsError as exc:
                return f"{node['name']}: {exc.message}"
            return None

        if configure:
            with ThreadPoolExecutor(max_workers=FLEET_WORKERS) as pool:
                problems = [p for p in pool.map(network, configure) if p]
            if problems:
                raise HostwindsError(
                    f"{who}: rDNS/firewall failed for {len(problems)} node(s); `pulumi up` retries them:\n  "
                    + "\n  ".join(problems[:20])
                )
        inventory = [
            {
                "name": n["name"],
                "fqdn": n.get("fqdn"),
                "ip": str(ready[int(n["service_id"])].get("main_ip")),
                "service_id": int(n["service_id"]),
            }
            for n in nodes
        ]
        return {"nodes": nodes, "inventory": inventory, "endpoint": settings.endpoint}

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        outs = self._converge(props, configure=_nodes(props))
        digest = hashlib.sha256(",".join(str(n["service_id"]) for n in outs["nodes"]).encode()).hexdigest()
        return dynamic.CreateResult(id_=f"fleet-{digest[:12]}", outs=outs)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        self._same_endpoint(olds, self._settings(), "FleetReady")
        known = {(n["service_id"], n["name"]) for n in _nodes(olds)}
        fresh = [n for n in _nodes(news) if (n["service_id"], n["name"]) not in known]
        return dynamic.UpdateResult(outs=self._converge(news, configure=fresh))

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        settings = self._settings()
        self._same_endpoint(props, settings, "FleetReady")
        listing = shared_listing(settings.client())
        nodes, inventory = [], []
        for node in _nodes(props):
            inst = listing.get(int(node["service_id"]))
            if inst is None or _status(inst) in GONE_STATES:
                continue  # dropped: the next preview shows the fleet must converge again
            nodes.append(node)
            inventory.append(
                {
                    "name": node["name"],
                    "fqdn": node.get("fqdn"),
                    "ip": str(inst.get("main_ip") or ""),
                    "service_id": int(node["service_id"]),
                }
            )
        return dynamic.ReadResult(id_=id_, outs={**props, "nodes": nodes, "inventory": inventory})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


class FleetReady(dynamic.Resource, module="hostwinds", name="FleetReady"):
    """All nodes ACTIVE, with rDNS and firewall set; ``inventory`` is [{name, fqdn, ip, service_id}]."""

    inventory: pulumi.Output[list[dict[str, Any]]]

    def __init__(self, name: str, nodes: list[dict[str, Any]], opts: pulumi.ResourceOptions | None = None):
        super().__init__(
            FleetReadyProvider(), name, {"nodes": nodes, "inventory": None, "endpoint": None}, opts
        )
