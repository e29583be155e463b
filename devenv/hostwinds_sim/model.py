"""The simulated Hostwinds account: instances, their state machine, IPs, rDNS, firewall, keys, orders.

Answers use the shapes of the real API (see ``shared/reference/hostwinds-api.md``): data as
``{"success": …}``, accepted changes as a list of ``{"result": "success", …}``, errors as a list of
``{"result": "error", …}``, all with HTTP 200. Instance objects carry the root ``password`` and
``configkey`` in plain text, as the real ones do, so clients are tested on keeping them out of logs.

Time moves lazily: an instance in BUILD becomes ACTIVE when its build time has passed *and* its backend
reported an address; every read advances the state first. All methods take the account lock.

Order processing: an ordered instance stays invisible for ``processing_seconds`` (like a real order that
sits in the billing queue): the API neither lists it nor knows its service id, and its build time only
starts when it shows up. The simulator's own listing (``own_listing``) shows every instance, with
``visible``, so tests can count pending orders too.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

log = logging.getLogger("hostwinds_sim")

LOCATIONS = [
    {"id": 1, "name": "Seattle, WA", "country": "US"},
    {"id": 2, "name": "Dallas, TX", "country": "US"},
    {"id": 3, "name": "Amsterdam", "country": "NL"},
]
_IMAGE_NS = uuid.UUID("6f1c1d52-8b7e-4c55-9d2a-3e1f0c9a7b10")
IMAGES = [
    {"id": 7001 + i, "uuid": str(uuid.uuid5(_IMAGE_NS, slug)), "name": name, "slug": slug, "type": "base"}
    for i, (slug, name) in enumerate(
        [("debian-12", "Debian 12"), ("ubuntu-24-04", "Ubuntu 24.04 LTS"), ("rocky-9", "Rocky Linux 9")]
    )
]
# rid → plan; numbers as strings, the way the price list sends them.
PLANS = {
    1: {
        "name": "Unmanaged SSD VPS 1 GB",
        "ram": "1024",
        "cpu": "1",
        "disk": "30",
        "bandwidth": "1000",
        "monthly": "4.99",
    },
    2: {
        "name": "Unmanaged SSD VPS 2 GB",
        "ram": "2048",
        "cpu": "1",
        "disk": "50",
        "bandwidth": "2000",
        "monthly": "9.99",
    },
    3: {
        "name": "Unmanaged SSD VPS 4 GB",
        "ram": "4096",
        "cpu": "2",
        "disk": "75",
        "bandwidth": "3000",
        "monthly": "19.99",
    },
    4: {
        "name": "Unmanaged SSD VPS 8 GB",
        "ram": "8192",
        "cpu": "4",
        "disk": "150",
        "bandwidth": "5000",
        "monthly": "38.99",
    },
}
BILLING_CYCLES = ("hourly", "monthly", "quarterly", "semiannually", "annually", "biennially", "triennially")
_RULE = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp"}
FIREWALL_PROFILES = {
    "default": [{**_RULE, "port_range_min": 1, "port_range_max": 65535, "description": "all TCP"}],
    "smtp": [
        {**_RULE, "port_range_min": p, "port_range_max": p, "description": d}
        for p, d in [(22, "ssh"), (25, "smtp"), (465, "smtps"), (587, "submission"), (993, "imaps")]
    ],
    "web": [
        {**_RULE, "port_range_min": p, "port_range_max": p, "description": d}
        for p, d in [(22, "ssh"), (80, "http"), (443, "https")]
    ],
    "custom": [],
}
GONE_STATES = ("DELETING",)
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")


class SimError(Exception):
    """An API error answer: ``[{"result": "error", "action": …, "message": …, "ERROR": …}]``."""

    def __init__(self, message: str, action: str = "", code: str | None = None):
        super().__init__(message)
        self.message = message
        self.action = action
        self.code = code

    def answer(self) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"result": "error", "action": self.action, "message": self.message}
        if self.code:
            body["ERROR"] = self.code
        return [body]


def accepted(action: str, message: str) -> list[dict[str, str]]:
    return [{"result": "success", "action": action, "message": message}]


def hostname_for(label: str) -> str:
    """A valid single-label host name made from an instance label (for the podman container)."""
    text = re.sub(r"[^a-z0-9-]+", "-", label.lower()).strip("-")[:63].strip("-")
    return text or "vps"


def public_key_ok(key: str) -> bool:
    words = key.strip().split()
    return len(words) >= 2 and words[0] in _KEY_TYPES and "\n" not in key.strip()


@dataclass
class Instance:
    sid: int
    srvrname: str
    location_id: int
    template_uuid: str
    rid: int
    billingcycle: str
    keys: list[str]
    created_at: float
    ready_at: float
    status: str = "BUILD"
    backend_ip: str = ""
    build_error: str = ""
    main_ip: str = ""
    ip_v6: str = ""
    rdns: dict[str, str] = field(default_factory=dict)
    # Secondary IPv4s bought "in the portal" (POST /_sim/ips): listed by get_instance_ips, rDNS settable.
    additional_ips: list[str] = field(default_factory=list)
    firewall: str = "default"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    configkey: str = field(default_factory=lambda: secrets.token_hex(16))
    server_uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    resize_at: float = 0.0
    resize_from: int = 0
    delete_at: float = 0.0
    backend_deleted: bool = False
    # When the order is processed and the API starts to show the instance (0: always visible, which is
    # also what snapshots written before this field load as).
    visible_at: float = 0.0
    # Made by /_sim/foreign (someone ordered it in the portal), not by add_instance.
    foreign: bool = False

    def new_identity(self) -> None:
        """A rebuilt server: new UUID, root password and config key (the service id stays)."""
        self.password = secrets.token_urlsafe(18)
        self.configkey = secrets.token_hex(16)
        self.server_uuid = str(uuid.uuid4())


@dataclass
class UpgradeOrder:
    rid: int
    id: int
    orderid: int
    invoiceid: int
    total: str
    duedate: str


class Backend:
    """What an instance is. ``build``/``destroy`` report back through callbacks (maybe from a thread)."""

    name = "abstract"

    def build(
        self, sid: int, hostname: str, public_keys: list[str], done: Callable[[str, str], None]
    ) -> None:
        raise NotImplementedError

    def destroy(self, sid: int, done: Callable[[], None]) -> None:
        raise NotImplementedError

    def ipv6(self, sid: int) -> str:
        return ""

    def change_ip(self, sid: int) -> str:
        raise SimError("Changing the main IP is not possible for this server.", "Change Main IP")

    def add_ip(self, sid: int, ip: str | None) -> str:
        """Give the server one more address (``ip``, or one the backend picks) and return it."""
        raise SimError("Additional IPs are not possible for this server.", "Add IP")

    def snapshot(self) -> dict[str, Any]:
        return {}

    def restore(self, data: dict[str, Any]) -> None:
        return None


class Account:
    """One Hostwinds account; ``call(action, params)`` answers like the API (raises :class:`SimError`)."""

    def __init__(
        self,
        backend: Backend,
        build_seconds: float = 5.0,
        delete_seconds: float = 0.5,
        resize_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
        hourly_enabled: bool = True,
        processing_seconds: float = 0.0,
    ):
        self.backend = backend
        self.build_seconds = build_seconds
        self.processing_seconds = processing_seconds
        self.delete_seconds = delete_seconds
        self.resize_seconds = resize_seconds
        self.clock = clock
        self.hourly_enabled = hourly_enabled
        self.lock = threading.RLock()
        self.instances: dict[int, Instance] = {}
        self.keys: dict[str, str] = {}
        self.orders: dict[int, UpgradeOrder] = {}
        self.next_sid = 240001
        self.next_invoice = 880001
        # Instances add_instance created, ever (a terminated one still counts), in all and by label.
        self.order_count = 0
        self.order_labels: Counter[str] = Counter()
        self.on_change: Callable[[], None] = lambda: None
        # Asked once per build: True makes that build end in ERROR (fault injection).
        self.build_fails: Callable[[], bool] = lambda: False

    # -- the state machine ------------------------------------------------------------------------------

    def _advance(self, inst: Instance) -> None:
        now = self.clock()
        if inst.status == "BUILD":
            if inst.build_error:
                inst.status = "ERROR"
            elif inst.backend_ip and now >= inst.ready_at:
                inst.status = "ACTIVE"
                inst.main_ip = inst.backend_ip
                inst.ip_v6 = self.backend.ipv6(inst.sid)
        elif inst.status == "RESIZE" and now >= inst.resize_at:
            inst.status = "RESIZED"
        elif inst.status == "DELETING" and inst.backend_deleted and now >= inst.delete_at:
            self.instances.pop(inst.sid, None)
            self.orders.pop(inst.sid, None)

    def advance_all(self) -> None:
        with self.lock:
            for inst in list(self.instances.values()):
                self._advance(inst)

    def visible(self, inst: Instance) -> bool:
        """Whether the API shows ``inst`` yet (its order has been processed)."""
        return self.clock() >= inst.visible_at

    def _shown(self) -> list[Instance]:
        """The instances the API shows, by service id, state advanced."""
        self.advance_all()
        return [i for i in sorted(self.instances.values(), key=lambda i: i.sid) if self.visible(i)]

    def _get(self, params: dict[str, list[str]], action: str) -> Instance:
        raw = _param(params, "serviceid") or _param(params, "sid")
        sid = _int(raw)
        inst = self.instances.get(sid) if sid is not None else None
        if inst is not None:
            self._advance(inst)
            inst = self.instances.get(sid)
        if inst is None or not self.visible(inst):
            raise SimError("A valid serviceid is required.", action, "342432")
        return inst

    def _require(self, inst: Instance, action: str, *states: str) -> None:
        if inst.status not in states:
            raise SimError(
                f"Instance Server#{inst.sid} is {inst.status}; this needs {' or '.join(states)}.",
                action,
                "721334",
            )

    # -- rendering ---------------------------------------------------------------------------------------

    def render(self, inst: Instance) -> dict[str, Any]:
        plan = PLANS.get(inst.rid, {})
        image = next((i for i in IMAGES if i["uuid"] == inst.template_uuid), {"name": "unknown"})
        active = inst.status == "ACTIVE"
        return {
            "serviceid": inst.sid,
            "userid": 4242,
            "location_id": inst.location_id,
            "server_uuid": inst.server_uuid,
            "volume_uuid": None,
            "password": inst.password,
            "port_uuid": str(uuid.uuid5(_IMAGE_NS, f"port-{inst.sid}")),
            "main_ip": inst.main_ip,
            "private_ip": "",
            "ips": [ip for ip in (inst.main_ip, *inst.additional_ips) if ip] or None,
            "upgrade_available": 1,
            "is_suspended": 0,
            "configkey": inst.configkey,
            "ssh_keys": list(inst.keys),
            "hourly": 1 if inst.billingcycle == "hourly" else 0,
            "bandwidth": plan.get("bandwidth", "0"),
            "pswd_changed": 0,
            "srvrname": inst.srvrname,
            "template_uuid": inst.template_uuid,
            "app_id": None,
            "locked": 0,
            "hostname": f"hwsrv-{inst.sid}.hostwindsdns.test",
            "product_id": str(inst.rid),
            "billingcycle": inst.billingcycle,
            "product_name": plan.get("name", ""),
            "disk_type": "ssd",
            "status": inst.status,
            "disp_status": "RUNNING" if active else inst.status,
            "image": {"name": image["name"], "uuid": inst.template_uuid},
            "ip_v6": inst.ip_v6,
            "flavor": {"ram": plan.get("ram"), "vcpus": plan.get("cpu"), "disk": plan.get("disk")},
            "vm_state": {"BUILD": "building", "ACTIVE": "active", "RESIZED": "resized"}.get(
                inst.status, "active"
            ),
            "task_state": {"BUILD": "spawning", "RESIZE": "resize_migrating", "DELETING": "deleting"}.get(
                inst.status
            ),
            "ram": plan.get("ram"),
            "cpu": plan.get("cpu"),
            "disk": plan.get("disk"),
            "created_at": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(inst.created_at)),
            "power_state": 1 if inst.status in ("ACTIVE", "RESIZED") else 0,
        }

    def own_listing(self, with_secrets: bool = False) -> list[dict[str, Any]]:
        """The simulator's own view for tests: every instance, including ones still being deleted."""
        with self.lock:
            self.advance_all()
            rows = []
            for inst in sorted(self.instances.values(), key=lambda i: i.sid):
                row = {
                    "serviceid": inst.sid,
                    "srvrname": inst.srvrname,
                    "visible": self.visible(inst),
                    "foreign": inst.foreign,
                    "server_uuid": inst.server_uuid,
                    "status": inst.status,
                    "main_ip": inst.main_ip,
                    "ip_v6": inst.ip_v6,
                    "location_id": inst.location_id,
                    "template_uuid": inst.template_uuid,
                    "rid": inst.rid,
                    "billingcycle": inst.billingcycle,
                    "keys": list(inst.keys),
                    "rdns": dict(inst.rdns),
                    "additional_ips": list(inst.additional_ips),
                    "firewall": inst.firewall,
                }
                if with_secrets:
                    row["password"] = inst.password
                    row["configkey"] = inst.configkey
                rows.append(row)
            return rows

    # -- persistence -------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "instances": [asdict(i) for i in self.instances.values()],
                "keys": dict(self.keys),
                "orders": {str(sid): asdict(o) for sid, o in self.orders.items()},
                "next_sid": self.next_sid,
                "next_invoice": self.next_invoice,
                "order_count": self.order_count,
                "order_labels": dict(self.order_labels),
                "backend": self.backend.snapshot(),
            }

    def restore(self, data: dict[str, Any]) -> None:
        known = {f.name for f in fields(Instance)}
        with self.lock:
            # Fields a snapshot lacks take their defaults; fields this version does not know are dropped.
            self.instances = {
                row["sid"]: Instance(**{k: v for k, v in row.items() if k in known})
                for row in data.get("instances", [])
            }
            self.keys = dict(data.get("keys", {}))
            self.orders = {int(sid): UpgradeOrder(**o) for sid, o in data.get("orders", {}).items()}
            self.next_sid = int(data.get("next_sid", self.next_sid))
            self.next_invoice = int(data.get("next_invoice", self.next_invoice))
            self.order_count = int(data.get("order_count", self.order_count))
            self.order_labels = Counter({str(k): int(v) for k, v in data.get("order_labels", {}).items()})
            self.backend.restore(data.get("backend", {}))

    def resume_background_work(self) -> None:
        """After a restart: builds and deletions that were under way are started again."""
        with self.lock:
            for inst in list(self.instances.values()):
                if inst.status == "BUILD" and not inst.backend_ip and not inst.build_error:
                    self._start_build(inst, faultable=not inst.foreign)
                elif inst.status == "DELETING" and not inst.backend_deleted:
                    self.backend.destroy(inst.sid, self._destroyed(inst.sid))
                elif inst.backend_ip and not inst.build_error:
                    for ip in inst.additional_ips:  # a restarted container lost them
                        try:
                            self.backend.add_ip(inst.sid, ip)
                        except Exception as exc:  # best effort: the API still lists the address
                            log.warning("instance %s: could not add %s again: %s", inst.sid, ip, exc)

    def ensure_key(self, name: str, public_key: str) -> None:
        """Register an account SSH key (as if uploaded in the portal); kept if already there."""
        with self.lock:
            self.keys[name] = public_key.strip()
        self.on_change()

    # -- out-of-band changes (admin endpoints, no API call) ----------------------------------------------

    def replace(self, sid: int, change_ip: bool = False) -> Instance:
        """Rebuild instance ``sid`` behind the client's back: same service id, new server UUID, root
        password and config key, status ACTIVE again; with ``change_ip`` it also gets a new main IP.

        Raises ValueError (unknown, pending, being deleted or never built) or SimError (the backend
        cannot change the IP). Only the identity changes: a podman container is kept as it is.
        """
        with self.lock:
            inst = self.instances.get(sid)
            if inst is not None:
                self._advance(inst)
                inst = self.instances.get(sid)
            if inst is None:
                raise ValueError(f"no instance {sid}")
            if not self.visible(inst):
                raise ValueError(f"instance {sid} is still an order being processed")
            if inst.status in GONE_STATES:
                raise ValueError(f"instance {sid} is being deleted")
            if not inst.backend_ip:
                raise ValueError(f"instance {sid} has no server yet ({inst.status}); nothing to replace")
            if change_ip:
                old = inst.main_ip
                inst.backend_ip = self.backend.change_ip(sid)
                inst.rdns.pop(old, None)
            inst.new_identity()
            inst.status, inst.build_error = "ACTIVE", ""
            inst.main_ip = inst.backend_ip
            inst.ip_v6 = inst.ip_v6 or self.backend.ipv6(sid)
            inst.ready_at = min(inst.ready_at, self.clock())
        self.on_change()
        return inst

    def assign_ip(self, sid: int, ip: str | None = None) -> str:
        """An additional IPv4 bought for ``sid`` in the portal (no API action does it): the backend adds it
        to the server, ``get_instance_ips`` lists it and ``set_rdns`` accepts it. Returns the address.

        Raises ValueError (unknown instance, not built yet, an address another instance holds).
        """
        with self.lock:
            inst = self.instances.get(sid)
            if inst is not None:
                self._advance(inst)
                inst = self.instances.get(sid)
            if inst is None or inst.status in GONE_STATES:
                raise ValueError(f"no instance {sid}")
            if inst.status != "ACTIVE" or not inst.main_ip:
                raise ValueError(f"instance {sid} is {inst.status}; an IP can be added once it is ACTIVE")
            if ip is not None:
                taken = [i.sid for i in self.instances.values() if ip in (i.main_ip, *i.additional_ips)]
                if taken and taken != [sid]:
                    raise ValueError(f"{ip} belongs to instance {taken[0]}")
                if ip in inst.additional_ips:
                    return ip
            address = self.backend.add_ip(sid, ip)
            if address not in inst.additional_ips:
                inst.additional_ips.append(address)
        self.on_change()
        return address

    def add_foreign(
        self,
        srvrname: str,
        location_id: int,
        image: str,
        rid: int,
        keys: list[str] | None = None,
        billingcycle: str = "monthly",
    ) -> int:
        """An instance someone ordered in the portal: visible at once, no build time, not counted as an
        order, never hit by build faults. It is ACTIVE as soon as the backend reports an address (at once
        for ``memory``; a podman container is built first, like any other instance).
        """
        template = next((i["uuid"] for i in IMAGES if image in (i["uuid"], i["slug"])), None)
        if template is None:
            raise ValueError(f"unknown image {image!r} (known: {', '.join(i['slug'] for i in IMAGES)})")
        if location_id not in {loc["id"] for loc in LOCATIONS}:
            raise ValueError(f"unknown location_id {location_id!r}")
        if rid not in PLANS:
            raise ValueError(f"unknown rid {rid!r} (known: {', '.join(map(str, PLANS))})")
        if billingcycle not in BILLING_CYCLES:
            raise ValueError(f"unknown billingcycle {billingcycle!r}")
        if not srvrname.strip():
            raise ValueError("srvrname must not be empty")
        with self.lock:
            missing = [key for key in keys or [] if key not in self.keys]
            if missing:
                raise ValueError(f"unknown account SSH key(s): {', '.join(missing)}")
            sid = self.next_sid
            self.next_sid += 1
            now = self.clock()
            inst = Instance(
                sid=sid,
                srvrname=srvrname.strip(),
                location_id=location_id,
                template_uuid=template,
                rid=rid,
                billingcycle=billingcycle,
                keys=list(keys or []),
                created_at=now,
                ready_at=now,
                visible_at=now,
                foreign=True,
            )
            self.instances[sid] = inst
            self._start_build(inst, faultable=False)
            self._advance(inst)
        self.on_change()
        return sid

    def status_of(self, sid: int) -> str:
        """The current status of ``sid`` ("" when it is gone), state advanced."""
        with self.lock:
            inst = self.instances.get(sid)
            if inst is None:
                return ""
            self._advance(inst)
            return inst.status if sid in self.instances else ""

    # -- dispatch ----------------------------------------------------------------------------------------

    MUTATING = frozenset(
        {
            "add_instance",
            "terminate",
            "edit_instance",
            "set_rdns",
            "change_main_ip",
            "set_instance_firewall",
            "upgrade_instance",
            "upgrade_server",
            "confirm_upgrade",
            "revert_upgrade",
            "change_billing_cycle",
            "add_ssh_key",
            "delete_ssh_key",
            "boot",
            "shutdown",
            "reboot",
        }
    )

    def call(self, action: str, params: dict[str, list[str]]) -> Any:
        handler = getattr(self, f"_a_{action}", None) if re.fullmatch(r"[a-z_]+", action or "") else None
        if handler is None:
            raise SimError("Invalid Action.", "", "6734")
        with self.lock:
            return handler(params)

    # -- catalogue ---------------------------------------------------------------------------------------

    def _a_get_locations(self, params):
        return {"success": LOCATIONS}

    def _a_get_public_images(self, params):
        return {"success": IMAGES}

    def _a_get_price_list(self, params):
        # A PHP array: an object keyed by index, as the real list sometimes arrives.
        plans = {}
        for index, (rid, plan) in enumerate(sorted(PLANS.items())):
            monthly = float(plan["monthly"])
            plans[str(index)] = {
                "id": str(rid),
                "rid": rid,
                **plan,
                "quarterly": f"{monthly * 3:.2f}",
                "annually": f"{monthly * 12:.2f}",
                "cycles": list(BILLING_CYCLES),
            }
        return {"success": plans}

    def _a_get_firewall_profiles(self, params):
        return {"success": [{"id": i + 1, "name": name} for i, name in enumerate(FIREWALL_PROFILES)]}

    # -- SSH keys ----------------------------------------------------------------------------------------

    def _a_get_ssh_keys(self, params):
        return {"success": [{"name": n, "public_key": k} for n, k in sorted(self.keys.items())]}

    def _a_add_ssh_key(self, params):
        name, key = _param(params, "name"), _param(params, "public_key")
        if not name:
            raise SimError("A key name is required.", "Add SSH Key")
        if not key or not public_key_ok(key):
            raise SimError("A valid public key is required.", "Add SSH Key")
        if name in self.keys:
            raise SimError("An SSH key with this name already exists.", "Add SSH Key")
        self.keys[name] = key.strip()
        return accepted("Add SSH Key", "SSH key added.")

    def _a_delete_ssh_key(self, params):
        name = _param(params, "name")
        if name not in self.keys:
            raise SimError("SSH key not found.", "Delete SSH Key")
        del self.keys[name]
        return accepted("Delete SSH Key", "SSH key deleted.")

    # -- instances ---------------------------------------------------------------------------------------

    def _a_add_instance(self, params):
        act = "Add Instance"
        location = _int(_param(params, "location_id"))
        template = _param(params, "template") or ""
        rid = _int(_param(params, "rid"))
        cycle = _param(params, "billingcycle") or "monthly"
        keys = params.get("keys[]", []) + params.get("keys", [])
        qty = _int(_param(params, "qty")) or 1
        if location not in {loc["id"] for loc in LOCATIONS}:
            raise SimError("Location Id is invalid", act, "5529903")
        if template not in {img["uuid"] for img in IMAGES}:
            raise SimError("Template is invalid", act, "5529904")
        if rid not in PLANS:
            raise SimError("Product rid is invalid", act, "5529905")
        if cycle not in BILLING_CYCLES:
            raise SimError("Billing cycle is invalid", act, "5529906")
        if cycle == "hourly" and not self.hourly_enabled:
            raise SimError("Hourly products are disabled! Please contact customer service.", act)
        for key in keys:
            if key not in self.keys:
                raise SimError(f"Invalid SSH key name: {key}", act, "5529907")
        if not 1 <= qty <= 10:
            raise SimError("Quantity must be between 1 and 10", act)
        srvrname = _param(params, "srvrname") or ""
        now = self.clock()
        visible_at = now + self.processing_seconds
        invoice = self.next_invoice
        self.next_invoice += 1
        for _ in range(qty):
            sid = self.next_sid
            self.next_sid += 1
            inst = Instance(
                sid=sid,
                srvrname=srvrname or f"hwsrv-{sid}",
                location_id=location,
                template_uuid=template,
                rid=rid,
                billingcycle=cycle,
                keys=list(keys),
                created_at=now,
                visible_at=visible_at,
                ready_at=visible_at + self.build_seconds,
            )
            self.instances[sid] = inst
            self.order_count += 1
            self.order_labels[inst.srvrname] += 1
            self._start_build(inst)
        return [
            {"result": "success", "action": "Invoice Paid", "message": f"Invoice #{invoice} has been paid."},
            {"result": "success", "action": act, "message": "Server is being Created!"},
        ]

    def _start_build(self, inst: Instance, faultable: bool = True) -> None:
        sid = inst.sid
        public_keys = [self.keys[name] for name in inst.keys if name in self.keys]

        def done(ip: str, error: str) -> None:
            if not error and faultable and self.build_fails():
                ip, error = "", "build failed (injected fault)"
            with self.lock:
                current = self.instances.get(sid)
                if current is not None and current.status == "BUILD":
                    current.backend_ip, current.build_error = ip, error
            self.on_change()

        self.backend.build(sid, hostname_for(inst.srvrname), public_keys, done)

    def _destroyed(self, sid: int) -> Callable[[], None]:
        def done() -> None:
            with self.lock:
                current = self.instances.get(sid)
                if current is not None:
                    current.backend_deleted = True
            self.on_change()

        return done

    def _a_get_instances(self, params):
        return {"success": [self.render(i) for i in self._shown()]}

    def _a_get_instance(self, params):
        return {"success": self.render(self._get(params, "Get Instance"))}

    def _a_check_serviceid(self, params):
        self._get(params, "Check Service Id")
        return {"success": True}

    def _a_get_instance_ids(self, params):
        search = (_param(params, "search") or "").lower()
        location = _int(_param(params, "location_id"))
        limit = max(1, min(_int(_param(params, "limit")) or 50, 500))
        page = max(1, _int(_param(params, "page")) or 1)
        rows = []
        for inst in self._shown():
            haystack = f"{inst.srvrname} hwsrv-{inst.sid} {inst.main_ip}".lower()
            if (search and search not in haystack) or (location and inst.location_id != location):
                continue
            rows.append(
                {
                    "id": inst.sid,
                    "hostname": f"hwsrv-{inst.sid}.hostwindsdns.test",
                    "srvrname": inst.srvrname,
                    "ips": inst.main_ip,
                    "dedicatedip": inst.main_ip,
                    "ip_v6": inst.ip_v6,
                }
            )
        return {"success": rows[(page - 1) * limit : page * limit]}

    def _a_terminate(self, params):
        inst = self._get(params, "Terminate")
        if inst.status in GONE_STATES:
            raise SimError("A valid serviceid is required.", "Terminate", "342432")
        inst.status = "DELETING"
        inst.delete_at = self.clock() + self.delete_seconds
        self.backend.destroy(inst.sid, self._destroyed(inst.sid))
        return accepted("Terminate", "Instance deleted")

    def _a_edit_instance(self, params):
        inst = self._get(params, "Edit Instance")
        name = (_param(params, "srvrname") or "").strip()
        if not name:
            raise SimError("A server name is required.", "Edit Instance")
        inst.srvrname = name
        return accepted("Edit Instance", "Instance updated.")

    def _a_boot(self, params):
        inst = self._get(params, "Boot")
        self._require(inst, "Boot", "SHUTOFF")
        inst.status = "ACTIVE"
        return accepted("Boot", f"Instance Server#{inst.sid} has been started!")

    def _a_shutdown(self, params):
        inst = self._get(params, "Shutdown")
        self._require(inst, "Shutdown", "ACTIVE")
        inst.status = "SHUTOFF"
        return accepted("Shutdown", f"Instance Server#{inst.sid} has been shut down!")

    def _a_reboot(self, params):
        inst = self._get(params, "Reboot")
        self._require(inst, "Reboot", "ACTIVE", "SHUTOFF")
        inst.status = "ACTIVE"
        return accepted("Reboot", "Instance rebooted")

    def _a_change_billing_cycle(self, params):
        inst = self._get(params, "Change Billing Cycle")
        cycle = _param(params, "billingcycle") or "monthly"
        if cycle not in BILLING_CYCLES:
            raise SimError("Billing cycle is invalid", "Change Billing Cycle")
        inst.billingcycle = cycle
        return accepted("Change Billing Cycle", "Billing cycle updated.")

    # -- networking --------------------------------------------------------------------------------------

    def _a_get_instance_ips(self, params):
        inst = self._get(params, "Get Instance IPs")
        rows = []
        if inst.main_ip:
            rows.append(
                {"ip": inst.main_ip, "type": "IPv4", "main": 1, "rdns": inst.rdns.get(inst.main_ip, "")}
            )
        if inst.ip_v6:
            rows.append({"ip": inst.ip_v6, "type": "IPv6", "main": 0, "rdns": inst.rdns.get(inst.ip_v6, "")})
        for ip in inst.additional_ips:
            rows.append({"ip": ip, "type": "IPv4", "main": 0, "rdns": inst.rdns.get(ip, "")})
        return {"success": {"IP Addresses": rows, "count": len(rows)}}

    def _a_set_rdns(self, params):
        inst = self._get(params, "Set rDNS")
        ip = _param(params, "ip") or ""
        name = (_param(params, "rdns") or _param(params, "rdata") or "").rstrip(".").lower()
        if ip not in (inst.main_ip, inst.ip_v6, *inst.additional_ips) or not ip:
            raise SimError("IP does not belong to this instance.", "Set rDNS")
        labels = name.split(".")
        if len(labels) < 2 or not all(_HOST_LABEL.match(label) for label in labels):
            raise SimError("A valid rDNS hostname is required.", "Set rDNS")
        inst.rdns[ip] = name
        return accepted("Set rDNS", "rDNS record updated.")

    def _a_change_main_ip(self, params):
        inst = self._get(params, "Change Main IP")
        self._require(inst, "Change Main IP", "ACTIVE")
        old = inst.main_ip
        inst.main_ip = inst.backend_ip = self.backend.change_ip(inst.sid)
        inst.rdns.pop(old, None)
        return accepted("Change Main IP", "Main IP changed.")

    def _a_get_instance_firewall_profile(self, params):
        inst = self._get(params, "Get Firewall Profile")
        names = list(FIREWALL_PROFILES)
        return {
            "success": {
                "id": names.index(inst.firewall) + 1,
                "name": inst.firewall,
                "description": f"{inst.firewall} profile",
                "security_group_rules": FIREWALL_PROFILES[inst.firewall],
            }
        }

    def _a_set_instance_firewall(self, params):
        inst = self._get(params, "Set Firewall")
        name = _param(params, "name") or ""
        if name not in FIREWALL_PROFILES:
            raise SimError(
                f"Firewall profile is invalid (known: {', '.join(FIREWALL_PROFILES)})", "Set Firewall"
            )
        self._require(inst, "Set Firewall", "ACTIVE", "SHUTOFF", "RESIZED")
        inst.firewall = name
        return accepted("Set Firewall", "Firewall profile applied.")

    # -- plan changes ------------------------------------------------------------------------------------

    def _a_upgrade_instance(self, params):
        act = "Upgrade Instance"
        inst = self._get(params, act)
        rid = _int(_param(params, "rid"))
        if rid not in PLANS:
            raise SimError("Product rid is invalid", act, "5529905")
        if inst.sid in self.orders:
            raise SimError("There is already a pending upgrade order for this instance.", act)
        if rid == inst.rid:
            raise SimError("The instance already has this plan.", act)
        invoice = self.next_invoice
        self.next_invoice += 1
        due = time.strftime("%Y-%m-%d", time.gmtime(self.clock()))
        self.orders[inst.sid] = UpgradeOrder(
            rid, invoice, invoice + 5000, invoice, PLANS[rid]["monthly"], due
        )
        return [
            {"result": "success", "action": "Invoice Paid", "message": f"Invoice #{invoice} has been paid."},
            {"result": "success", "action": act, "message": "Upgrade order created."},
        ]

    def _a_check_upgrade_order(self, params):
        inst = self._get(params, "Check Upgrade Order")
        order = self.orders.get(inst.sid)
        if order is None:
            raise SimError("No upgrade order found.", "Check Upgrade Order")
        row = asdict(order)
        row.pop("rid")
        return {"success": row}

    def _a_check_upgrade_reboot(self, params):
        self._get(params, "Check Upgrade Reboot")
        return {"success": True}

    def _a_upgrade_server(self, params):
        act = "Upgrade Server"
        inst = self._get(params, act)
        order = self.orders.get(inst.sid)
        if order is None:
            raise SimError("No paid upgrade order found for this instance.", act)
        self._require(inst, act, "ACTIVE", "SHUTOFF")
        inst.resize_from, inst.rid = inst.rid, order.rid
        inst.status = "RESIZE"
        seconds = self.resize_seconds if self.resize_seconds is not None else self.build_seconds / 2
        inst.resize_at = self.clock() + seconds
        return accepted(act, "Server is being upgraded.")

    def _a_confirm_upgrade(self, params):
        inst = self._get(params, "Confirm Upgrade")
        self._require(inst, "Confirm Upgrade", "RESIZED")
        inst.status = "ACTIVE"
        self.orders.pop(inst.sid, None)
        return accepted("Confirm Upgrade", "Upgrade confirmed.")

    def _a_revert_upgrade(self, params):
        inst = self._get(params, "Revert Upgrade")
        self._require(inst, "Revert Upgrade", "RESIZED")
        inst.status, inst.rid = "ACTIVE", inst.resize_from
        self.orders.pop(inst.sid, None)
        return accepted("Revert Upgrade", "Upgrade reverted.")


def _param(params: dict[str, list[str]], key: str) -> str | None:
    values = params.get(key)
    return values[0] if values else None


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None
