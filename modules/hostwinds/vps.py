"""``Vps``: one Hostwinds instance we ordered, and only that one.

``add_instance`` bills at once, answers no id, and its order may take many minutes to show. So:

* **Labels we can prove.** The label is ``<stack>-<resource>-<tag>``, the tag random (the fleet's
  :class:`~modules.hostwinds.identity.FleetIdentity`, or chosen here in ``check`` for a lone ``Vps``) and kept
  in the inputs once chosen. Only such a label is ever adopted. Nodes recorded before tags existed keep
  their old label (``check`` keeps a recorded label) and are never replaced for it; a server carrying an
  old-style label that is not in our state is never adopted.
* **One order per node per run.** ``add_instance`` is sent at most once per node per ``up`` (a process-wide
  ledger, also capped by the fleet's size), retried only when the answer proves nothing was ordered (the
  connection was refused, a 429). After an accepted order or a lost answer we wait for the label, up to
  ``build_timeout_seconds``, with progress lines. If it never shows, the resource is recorded in state as
  *pending* (partial state through the provider host) so the next ``up`` waits for the same label instead
  of ordering again, and ``destroy`` terminates it once it shows.
* **Act only on what is ours.** Before an update, rDNS or firewall change or terminate, the instance is
  read again and must carry the recorded label and ``server_uuid`` (:func:`verify_owned`); the uuid of a
  node recorded before uuids were kept is learnt on first sight (its id and label are in our state).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic as dynamic
from pulumi.runtime.rpc import UNKNOWN

from modules.errors import PartialFailure
from modules.hostwinds.client import (
    HostwindsClient,
    HostwindsError,
    HostwindsInvalidRequest,
    HostwindsNotFound,
    HostwindsTransient,
    HostwindsUnauthorized,
    as_int,
    exact_label_matches,
)
from modules.hostwinds.common import (
    GONE_STATES,
    HostwindsOwnershipError,
    HostwindsProvider,
    Progress,
    Settings,
    catalogue,
    catalogue_failures,
    is_hostname,
    is_ready,
    labelled,
    poll_listing,
    report,
    resolve_image,
    shared_listing,
    status_of,
    unknown,
    verify_owned,
    vps_label,
    wait_gone,
    wait_ready,
)
from modules.hostwinds.identity import is_tag, new_tag

BILLING_CYCLES = ("hourly", "monthly", "quarterly", "semiannually", "annually", "biennially", "triennially")
# Changing these forces a new server (Hostwinds cannot move or re-image an instance in place and keep it).
VPS_REPLACE_KEYS = ("location_id", "image")
# Changed in place: rDNS (set_rdns), firewall (set_instance_firewall), plan (the upgrade flow), billing
# cycle (change_billing_cycle). SSH keys only apply when a server is built.
VPS_UPDATE_KEYS = ("rdns", "firewall_profile", "plan_id", "billing_cycle", "ssh_keys", "wait_until_ready")
VPS_KEYS = ("label", *VPS_REPLACE_KEYS, *VPS_UPDATE_KEYS)
# Inputs that only name things or guard orders: never a reason to change a server.
VPS_NAMING_KEYS = ("name_base", "owner_tag", "order_budget")
QUICK_LOOK_SECONDS = 2.0  # how long a fresh order is looked for by its label before the shared listing
BASE_LENGTH = 52  # leaves room for "-<tag>" within the API's 64 characters
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class VpsInputs:
    """The typed inputs of one Vps, as ``check`` leaves them."""

    label: str
    location_id: int
    image: str
    plan_id: int
    ssh_keys: list[str]
    firewall_profile: str | None
    rdns: str | None
    billing_cycle: str
    wait_until_ready: bool
    owner_tag: str | None
    order_budget: int | None

    @classmethod
    def of(cls, props: dict[str, Any]) -> VpsInputs:
        return cls(
            label=str(props["label"]),
            location_id=int(as_int(props["location_id"]) or 0),
            image=str(props["image"]),
            plan_id=int(as_int(props["plan_id"]) or 0),
            ssh_keys=[str(k) for k in props.get("ssh_keys") or []],
            firewall_profile=props.get("firewall_profile"),
            rdns=props.get("rdns"),
            billing_cycle=str(props.get("billing_cycle") or "hourly"),
            wait_until_ready=bool(props.get("wait_until_ready", True)),
            owner_tag=props.get("owner_tag"),
            order_budget=as_int(props.get("order_budget")),
        )


# -- the order ledger: at most one add_instance per node per run -------------------------------------------


class OrderLedger:
    """Labels this process has ordered, per endpoint and owner: a second order for one is refused.

    One engine operation starts one provider process, so this is "per ``up``". ``budget`` (the fleet's
    node count) caps how many orders one owner may place in one run, whatever goes wrong elsewhere.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ordered: dict[tuple[str, str], set[str]] = {}

    def claim(self, endpoint: str, owner: str, label: str, budget: int | None, who: str) -> None:
        with self._lock:
            ordered = self._ordered.setdefault((endpoint, owner), set())
            if label in ordered:
                raise HostwindsError(
                    f"{who}: add_instance was already sent for {label!r} in this run; refusing to order it "
                    "twice. Run `pulumi up` again: it finds the first order by its label"
                )
            if budget is not None and len(ordered) >= budget:
                raise HostwindsError(
                    f"{who}: this run already placed {len(ordered)} order(s), the fleet's whole size "
                    f"({budget}); refusing to order more. Check `penguinmails fleet orphans` and the portal"
                )
            ordered.add(label)

    def release(self, endpoint: str, owner: str, label: str) -> None:
        """The answer proved nothing was ordered: the label may be ordered again."""
        with self._lock:
            self._ordered.get((endpoint, owner), set()).discard(label)

    def count(self, endpoint: str, owner: str) -> int:
        with self._lock:
            return len(self._ordered.get((endpoint, owner), ()))


LEDGER = OrderLedger()
# Service ids this process terminated: a replacement reuses the label, and a listing fetched before the
# terminate still shows the old server under it, so these are never taken for a new order.
TERMINATED: set[int] = set()


# -- input checks ----------------------------------------------------------------------------------------


def vps_failures(news: dict[str, Any]) -> list[dynamic.CheckFailure]:
    """Every problem with a Vps's inputs (values still unknown in a preview are skipped)."""
    failures: list[dynamic.CheckFailure] = []

    def bad(key: str, reason: str) -> None:
        failures.append(dynamic.CheckFailure(key, reason))

    def known(key: str) -> bool:
        return not unknown(news.get(key))

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
        and all(unknown(k) or (isinstance(k, str) and _LABEL_RE.match(k)) for k in keys)
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
    tag = news.get("owner_tag")
    if known("owner_tag") and tag is not None and not is_tag(tag):
        bad("owner_tag", "must be the fleet identity's tag (10 of [a-z0-9])")
    budget = news.get("order_budget")
    if known("order_budget") and budget is not None and (as_int(budget) is None or as_int(budget) < 1):
        bad("order_budget", f"must be a positive whole number (the fleet's size), got {budget!r}")
    return failures


def choose_label(olds: dict[str, Any], news: dict[str, Any]) -> Any:
    """The physical label: the recorded one while the server stays, else ``<base>-<tag>``.

    A replacement (location or image changed) computes it afresh, so an old-style label becomes a tagged
    one; the old server is terminated and gone before its successor is ordered.
    """
    recorded = (olds or {}).get("label")
    replacing = any(olds.get(k) != news.get(k) for k in VPS_REPLACE_KEYS) if olds else False
    if recorded and not replacing:
        return recorded
    base, tag = news.get("name_base"), news.get("owner_tag")
    if unknown(base) or unknown(tag):
        return news.get("label") if news.get("label") not in (None, "") else UNKNOWN
    if not base:
        return news.get("label")
    return f"{base}-{tag or new_tag()}"


def vps_outs(props: dict[str, Any], inst: dict[str, Any] | None, endpoint: str) -> dict[str, Any]:
    """Every input plus what the instance says now (the root password is never kept)."""
    outs = {k: props.get(k) for k in VPS_KEYS + VPS_NAMING_KEYS}
    inst = inst or {}
    outs.update(
        service_id=as_int(inst.get("serviceid")),
        server_uuid=str(inst.get("server_uuid") or "") or None,
        main_ip=str(inst.get("main_ip") or ""),
        ipv6=str(inst.get("ip_v6") or ""),
        status=status_of(inst),
        template_uuid=str(inst.get("template_uuid") or ""),
        plan_name=str(inst.get("product_name") or ""),
        endpoint=endpoint,
        order_pending=not inst,
        ordered_at=props.get("ordered_at"),
    )
    return outs


def recorded_sid(id_: str, props: dict[str, Any]) -> int | None:
    """The service id in state: an output (new records) or the resource id (records from before)."""
    sid = as_int(props.get("service_id"))
    if sid is None and id_.isdigit():
        sid = int(id_)
    return sid


def _ours_in(listing: dict[int, dict[str, Any]], label: str) -> list[dict[str, Any]]:
    """Live instances of a listing under ``label``, minus those this run terminated."""
    return [i for i in labelled(listing, label) if as_int(i.get("serviceid")) not in TERMINATED]


def _only_one(found: list[dict[str, Any]], label: str, who: str) -> dict[str, Any] | None:
    """The one instance carrying our label, or None; several are refused rather than guessed between."""
    if len(found) > 1:
        ids = ", ".join(str(i.get("serviceid")) for i in found)
        raise HostwindsError(
            f"{who}: {len(found)} instances carry our label {label!r} (service ids {ids}); refusing "
            "to guess which one is this resource. Terminate the extra ones and run `pulumi up` again"
        )
    return found[0] if found else None


class VpsProvider(HostwindsProvider):
    """One Hostwinds instance; see the module docstring for the ordering, waiting and ownership rules."""

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        inputs = dict(news)
        for key in ("location_id", "plan_id", "order_budget"):
            if not unknown(inputs.get(key)) and as_int(inputs.get(key)) is not None:
                inputs[key] = as_int(inputs[key])
        if isinstance(inputs.get("rdns"), str):
            inputs["rdns"] = inputs["rdns"].rstrip(".").lower()
        inputs.setdefault("ssh_keys", [])
        inputs.setdefault("wait_until_ready", True)
        inputs["label"] = choose_label(olds or {}, inputs)
        failures = vps_failures(inputs)
        failed = {f.property for f in failures}
        try:
            for failure in catalogue_failures(self._settings().client(), inputs):
                if failure.property not in failed:
                    failures.append(failure)
        except HostwindsError as exc:
            pulumi.log.warn(f"Vps[{inputs.get('label')}]: catalogue not checked ({exc.message})")
        return dynamic.CheckResult(inputs, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = [k for k in VPS_KEYS if unknown(news.get(k)) or olds.get(k) != news.get(k)]
        if "wait_until_ready" in changed and olds.get("wait_until_ready") is None:
            changed.remove("wait_until_ready")
        replaces = [k for k in changed if k in VPS_REPLACE_KEYS]
        # A pending order must be looked for again; a node recorded before uuids were kept learns its uuid.
        pending = bool(olds.get("order_pending")) or (
            recorded_sid(_id, olds) is not None and not olds.get("server_uuid")
        )
        # Any replacement (also `pulumi up --replace`) terminates first: the successor takes the label.
        return dynamic.DiffResult(
            changes=bool(changed) or pending, replaces=replaces, delete_before_replace=True
        )

    # create -------------------------------------------------------------------------------------------

    @staticmethod
    def _one_labelled(client: HostwindsClient, label: str, who: str) -> dict | None:
        """The live instance carrying exactly ``label``, read fresh (None if none); several are refused."""
        found = []
        for sid in exact_label_matches(client.instance_ids(search=label), label):
            if sid in TERMINATED:
                continue
            try:
                inst = client.instance_get(sid)
            except HostwindsNotFound:
                continue
            if status_of(inst) not in GONE_STATES and str(inst.get("srvrname") or "") == label:
                found.append(inst)
        return _only_one(found, label, who)

    def _await_label(
        self, client: HostwindsClient, settings: Settings, label: str, who: str, why: str
    ) -> dict | None:
        """Wait up to the build timeout for the order to show under ``label`` (orders can take minutes).

        The first seconds ask for the label itself with a short backoff (an order that shows at once costs
        a few cheap searches); after that the wait joins the shared listing, one call per poll for all.
        """
        progress = Progress(who)
        deadline = progress.started + settings.build_timeout
        pause = 0.05
        while time.monotonic() - progress.started < QUICK_LOOK_SECONDS:
            try:
                found = self._one_labelled(client, label, who)
            except HostwindsTransient:
                found = None
            if found is not None:
                return found
            time.sleep(pause)
            pause = min(pause * 2, settings.poll_interval)
        while True:
            listing = poll_listing(client, settings)
            if listing is not None:
                found = _only_one(_ours_in(listing, label), label, who)
                if found is not None:
                    return found
            if time.monotonic() >= deadline:
                return None
            progress(f"{why}; waiting for an instance labelled {label!r} to appear")
            time.sleep(settings.poll_interval)

    def _pending(self, props: dict[str, Any], settings: Settings, who: str, waited: float) -> PartialFailure:
        label = props["label"]
        outs = vps_outs(props, None, settings.endpoint)
        return PartialFailure(
            f"{who}: no instance labelled {label!r} appeared within {waited:.0f} s; an order may exist and "
            "be billed. Run `pulumi up` again: it waits for this label and never orders it twice "
            "(`penguinmails fleet orphans` lists what carries the stack's tag)",
            label,
            outs,
        )

    def _order(self, client: HostwindsClient, settings: Settings, props: dict[str, Any], who: str) -> dict:
        """Adopt our labelled instance if there is one, else order it once and wait for it to show."""
        spec = VpsInputs.of(props)
        existing = self._one_labelled(client, spec.label, who)
        if existing is None:
            # The search is not documented to match labels: one fresh listing (shared by every node
            # ordering now) must not show the label either.
            existing = _only_one(_ours_in(shared_listing(client, max_age=0), spec.label), spec.label, who)
        if existing is not None:
            report(f"{who}: adopting instance {existing.get('serviceid')}, which carries our label")
            return existing
        owner = spec.owner_tag or spec.label
        LEDGER.claim(settings.endpoint, owner, spec.label, spec.order_budget, who)
        template = resolve_image(catalogue(client)["images"], spec.image) or spec.image
        props["ordered_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for attempt in range(1, settings.create_attempts + 1):
            try:
                client.instance_create(
                    template=template,
                    rid=spec.plan_id,
                    location_id=spec.location_id,
                    srvrname=spec.label,
                    keys=spec.ssh_keys,
                    billingcycle=spec.billing_cycle,
                )
                why = "order accepted"
            except HostwindsTransient as exc:
                if not exc.maybe_applied:
                    LEDGER.release(settings.endpoint, owner, spec.label)
                    if attempt < settings.create_attempts:
                        report(f"{who}: the order did not reach Hostwinds ({exc.message}); sending it again")
                        time.sleep(min(2.0 * attempt, 10.0))
                        LEDGER.claim(settings.endpoint, owner, spec.label, spec.order_budget, who)
                        continue
                    raise HostwindsError(
                        f"{who}: add_instance could not reach Hostwinds ({exc.message}); nothing was ordered. "
                        "Run `pulumi up` again"
                    ) from None
                why = f"the order's answer was lost ({exc.message})"
            except (HostwindsInvalidRequest, HostwindsUnauthorized) as exc:
                LEDGER.release(settings.endpoint, owner, spec.label)
                raise HostwindsError(
                    f"{who}: Hostwinds refused the order, nothing was ordered: {exc.message}"
                ) from None
            except Exception as exc:  # an answer we cannot read proves nothing: maybe ordered
                why = f"the order's answer could not be read ({type(exc).__name__})"
            try:
                found = self._await_label(client, settings, spec.label, who, why)
            except HostwindsOwnershipError:
                raise
            except Exception as exc:  # the order may exist: record the node as pending, never re-order
                pending = self._pending(props, settings, who, 0)
                raise PartialFailure(
                    f"{who}: looking for the order failed ({getattr(exc, 'message', exc)}); an order may exist. "
                    "Run `pulumi up` again: it waits for this label and never orders it twice",
                    pending.id,
                    pending.outs,
                ) from None
            if found is None:
                raise self._pending(props, settings, who, settings.build_timeout)
            report(f"{who}: instance {found.get('serviceid')} carries our label ({why})")
            return found
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _network(client: HostwindsClient, sid: int, inst: dict[str, Any], props: dict[str, Any]) -> None:
        if props.get("rdns"):
            client.rdns_set(sid, inst["main_ip"], props["rdns"])
        if props.get("firewall_profile"):
            client.firewall_set(sid, props["firewall_profile"])

    def _finish(
        self, client: HostwindsClient, settings: Settings, props: dict[str, Any], inst: dict, who: str
    ) -> dict[str, Any]:
        """After the instance is known: wait for it and set its network when asked; partial state on failure."""
        sid = int(as_int(inst.get("serviceid")))
        if props.get("wait_until_ready", True):
            try:
                inst = wait_ready(client, settings, sid, who, props["label"])
                fresh = client.instance_get(sid)
                verify_owned(fresh, props["label"], str(inst.get("server_uuid") or ""), who)
                self._network(client, sid, fresh, props)
            except HostwindsError as exc:
                raise PartialFailure(
                    exc.message, str(sid), vps_outs(props, inst, settings.endpoint)
                ) from None
        return vps_outs(props, inst, settings.endpoint)

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        settings = self._settings()
        client = settings.client()
        props = dict(props)
        who = f"Vps[{props['label']}]"
        inst = self._order(client, settings, props, who)
        outs = self._finish(client, settings, props, inst, who)
        return dynamic.CreateResult(id_=str(outs["service_id"]), outs=outs)

    # read ---------------------------------------------------------------------------------------------

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        settings = self._settings()
        who = f"Vps[{props.get('label', id_)}]"
        self._same_endpoint(props, settings, who)
        client = settings.client()
        sid = recorded_sid(id_, props)
        if sid is None:  # an order still pending: has it shown up?
            found = self._one_labelled(client, props["label"], who)
            outs = vps_outs(props, found, settings.endpoint)
            return dynamic.ReadResult(
                id_=id_, outs=outs, inputs={k: outs[k] for k in VPS_KEYS + VPS_NAMING_KEYS}
            )
        inst = poll_listing(client, settings, 30.0) or {}
        inst = inst.get(sid)
        if inst is None:  # the shared listing may predate this instance: ask for it directly
            try:
                inst = client.instance_get(sid)
            except HostwindsNotFound:
                return dynamic.ReadResult(id_="", outs={})
        if status_of(inst) in GONE_STATES:
            return dynamic.ReadResult(id_="", outs={})
        verify_owned(inst, props.get("label"), props.get("server_uuid"), who)
        outs = vps_outs(props, inst, settings.endpoint)
        if is_ready(inst):
            if props.get("rdns") is not None:
                live = client.rdns_get(sid, inst["main_ip"])
                if live is not None:  # None: this API does not report PTRs, so drift cannot be seen
                    outs["rdns"] = live or None
            if props.get("firewall_profile"):
                outs["firewall_profile"] = str(client.firewall_get(sid).get("name") or "") or None
        # Live values become the recorded inputs too, so the next preview displays what drifted.
        return dynamic.ReadResult(id_=id_, outs=outs, inputs={k: outs[k] for k in VPS_KEYS + VPS_NAMING_KEYS})

    # update -------------------------------------------------------------------------------------------

    def _owned(self, client: HostwindsClient, sid: int, olds: dict[str, Any], who: str) -> dict[str, Any]:
        try:
            inst = client.instance_get(sid)
        except HostwindsNotFound:
            raise HostwindsError(f"{who}: instance {sid} no longer exists; run `pulumi refresh`") from None
        verify_owned(inst, olds.get("label"), olds.get("server_uuid"), who)
        return inst

    def _upgrade(self, client: HostwindsClient, settings: Settings, sid: int, rid: int, who: str) -> dict:
        """upgrade_instance → upgrade_server → (RESIZED) confirm_upgrade; resumes a half-done change."""
        inst = client.instance_get(sid)
        if status_of(inst) == "ACTIVE" and as_int(inst.get("product_id")) == rid:
            return wait_ready(client, settings, sid, who)  # done by an earlier run whose answer was lost
        if status_of(inst) not in ("RESIZED", "RESIZE"):
            order = client.upgrade_order_get(sid)
            if order is None:
                report(f"{who}: ordering the upgrade of instance {sid} to plan {rid}")
                try:
                    client.upgrade_order_create(sid, rid)
                except HostwindsTransient as exc:
                    if not exc.maybe_applied:
                        raise HostwindsError(
                            f"{who}: the upgrade order did not reach Hostwinds ({exc.message}); nothing was "
                            "ordered. Run `pulumi up` again"
                        ) from None
                    if client.upgrade_order_get(sid) is None:
                        raise HostwindsError(
                            f"{who}: the upgrade order's answer was lost ({exc.message}) and no order shows; "
                            "check the portal's invoices before running `pulumi up` again"
                        ) from None
                order = client.upgrade_order_get(sid) or {}
            try:
                client.upgrade_apply(sid)
            except (HostwindsInvalidRequest, HostwindsTransient) as exc:
                raise HostwindsError(
                    f"{who}: the upgrade to plan {rid} is ordered (invoice {order.get('invoiceid', '?')}, "
                    f"total {order.get('total', '?')}) but could not be applied: {exc.message}. Pay the "
                    "invoice if it is open, then run `pulumi up` again (it resumes from the pending order)"
                ) from None
        if status_of(inst) != "RESIZED":
            deadline = time.monotonic() + settings.build_timeout
            while True:
                inst = client.instance_get(sid)
                status = status_of(inst)
                if status in ("RESIZED", "ACTIVE") and as_int(inst.get("product_id")) == rid:
                    break
                if status == "ERROR" or time.monotonic() > deadline:
                    raise HostwindsError(
                        f"{who}: the resize of instance {sid} to plan {rid} is {status or 'unknown'}; see the portal"
                    )
                time.sleep(settings.poll_interval)
        if status_of(inst) == "RESIZED":
            client.upgrade_confirm(sid)
            report(f"{who}: plan {as_int(inst.get('product_id'))} confirmed")
        inst = wait_ready(client, settings, sid, who)
        if as_int(inst.get("product_id")) != rid:
            raise HostwindsError(
                f"{who}: confirmed a pending resize to plan {inst.get('product_id')} left by an earlier change; "
                f"run `pulumi up` again to move to plan {rid}"
            )
        return inst

    def _resume_pending(
        self, client: HostwindsClient, settings: Settings, id_: str, olds: dict, news: dict, who: str
    ) -> dynamic.UpdateResult:
        """A create that could not see its order: wait for the same label; never order again."""
        props = {**news, "label": olds["label"], "ordered_at": olds.get("ordered_at")}
        found = self._one_labelled(client, props["label"], who) or self._await_label(
            client, settings, props["label"], who, "an earlier run ordered it"
        )
        if found is None:
            raise self._pending(props, settings, who, settings.build_timeout)
        report(f"{who}: the earlier order showed up as instance {found.get('serviceid')}")
        return dynamic.UpdateResult(outs=self._finish(client, settings, props, found, who))

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        settings = self._settings()
        who = f"Vps[{olds.get('label') or news.get('label')}]"
        self._same_endpoint(olds, settings, who)
        client = settings.client()
        sid = recorded_sid(id_, olds)
        if sid is None:
            return self._resume_pending(client, settings, id_, olds, news, who)
        news = {**news, "label": olds.get("label") or news.get("label")}
        changed = {k for k in VPS_KEYS if olds.get(k) != news.get(k)}
        inst = self._owned(client, sid, olds, who)
        uuid = str(olds.get("server_uuid") or inst.get("server_uuid") or "")
        if news.get("wait_until_ready", True) and olds.get("status") != "ACTIVE":
            # Recorded by a create that did not finish (build timeout, ERROR, a pending order found by a
            # refresh): wait and set the network now, as the create would have.
            return dynamic.UpdateResult(
                outs=self._finish(client, settings, {**news, "ordered_at": olds.get("ordered_at")}, inst, who)
            )
        if "ssh_keys" in changed:
            pulumi.log.warn(
                f"{who}: SSH keys only apply when a server is built; manage authorized_keys with Ansible"
            )
        if changed - {"ssh_keys", "wait_until_ready"}:
            if "plan_id" in changed or status_of(inst) == "RESIZED":
                inst = self._upgrade(client, settings, sid, int(news["plan_id"]), who)
            else:
                inst = wait_ready(client, settings, sid, who, news["label"])
            inst = client.instance_get(sid)
            verify_owned(inst, news["label"], uuid, who)
            if "billing_cycle" in changed:
                client.billing_cycle_set(sid, news["billing_cycle"])
            moved = olds.get("main_ip") and olds.get("main_ip") != inst.get("main_ip")
            if news.get("rdns") and ("rdns" in changed or moved):
                client.rdns_set(sid, inst["main_ip"], news["rdns"])
            if news.get("firewall_profile") and "firewall_profile" in changed:
                client.firewall_set(sid, news["firewall_profile"])
            inst = client.instance_get(sid)
        news["ordered_at"] = olds.get("ordered_at")
        return dynamic.UpdateResult(outs=vps_outs(news, inst, settings.endpoint))

    # delete -------------------------------------------------------------------------------------------

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        settings = self._settings()
        who = f"Vps[{props.get('label', id_)}]"
        self._same_endpoint(props, settings, who)
        client = settings.client()
        sid = recorded_sid(id_, props)
        if sid is None:  # an order we never saw: it is ours once it shows, and must not outlive the stack
            found = self._one_labelled(client, props["label"], who) or self._await_label(
                client, settings, props["label"], who, "terminating an order that had not shown yet"
            )
            if found is None:
                raise HostwindsError(
                    f"{who}: the order for {props['label']!r} has still not shown after "
                    f"{settings.build_timeout:.0f} s; run `pulumi destroy` again later (or check the portal)"
                )
            sid = int(as_int(found.get("serviceid")))
        try:
            inst = client.instance_get(sid)
        except HostwindsNotFound:
            return
        if status_of(inst) != "DELETING":
            verify_owned(inst, props.get("label"), props.get("server_uuid"), who)
            try:
                client.instance_terminate(sid)
            except HostwindsNotFound:
                pass  # a retry after a lost answer: the first terminate was applied
        TERMINATED.add(sid)
        if props.get("owner_tag") and str(props.get("label", "")).endswith(f"-{props['owner_tag']}"):
            return  # a fleet node: its FleetIdentity, deleted after every node, waits for them all at once
        wait_gone(client, settings, sid, who)


class Vps(dynamic.Resource, module="hostwinds", name="Vps"):
    """One Hostwinds VPS. Replaced when ``location_id`` or ``image`` changes; everything else in place."""

    service_id: pulumi.Output[int]
    server_uuid: pulumi.Output[str]
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
        owner_tag: pulumi.Input[str] | None = None,
        order_budget: int | None = None,
        wait_until_ready: bool = True,
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "label": None,
            "name_base": vps_label(pulumi.get_stack(), name, BASE_LENGTH),
            "owner_tag": owner_tag,
            "order_budget": order_budget,
            "location_id": location_id,
            "image": image,
            "plan_id": plan_id,
            "ssh_keys": list(ssh_keys or []),
            "firewall_profile": firewall_profile,
            "rdns": rdns,
            "billing_cycle": billing_cycle,
            "wait_until_ready": wait_until_ready,
            **{
                key: None
                for key in (
                    "service_id",
                    "server_uuid",
                    "main_ip",
                    "ipv6",
                    "status",
                    "template_uuid",
                    "plan_name",
                    "order_pending",
                    "ordered_at",
                )
            },
            "endpoint": None,
        }
        super().__init__(VpsProvider(), name, props, opts)
