"""``FleetReady``: the fleet-wide readiness step, waiting for every node at once.

Each fleet ``Vps`` returns as soon as its order shows; this one resource then polls one shared listing
for all nodes (one API call per poll however large the fleet) and sets new nodes' rDNS and firewall, with
the same proof of ownership as ``Vps``: the listed label and ``server_uuid`` must be the recorded ones.
It owns nothing on the account (delete does nothing); its ``inventory`` output lists every node's name,
FQDN, main IP and service id, ready for an Ansible inventory.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pulumi
import pulumi.dynamic as dynamic

from modules.hostwinds.client import HostwindsClient, HostwindsError
from modules.hostwinds.common import (
    GONE_STATES,
    HostwindsOwnershipError,
    HostwindsProvider,
    Progress,
    Settings,
    is_ready,
    poll_listing,
    report,
    shared_listing,
    status_of,
    unknown,
    verify_owned,
)

FLEET_WORKERS = 64
NODE_KEYS = ("name", "label", "service_id", "fqdn", "rdns", "firewall_profile")


def _nodes(props: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: node.get(k) for k in NODE_KEYS} for node in props.get("nodes") or []]


def _uuids(props: dict[str, Any]) -> dict[int, str]:
    """service id → recorded server_uuid (nodes recorded before uuids were kept have none)."""
    found = {}
    for node in props.get("nodes") or []:
        if node.get("service_id") is not None and node.get("server_uuid"):
            found[int(node["service_id"])] = str(node["server_uuid"])
    return found


def wait_all(
    client: HostwindsClient,
    settings: Settings,
    nodes: list[dict[str, Any]],
    uuids: dict[int, str],
    who: str,
    on_ready: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[int, dict[str, Any]]:
    """Wait until every node is ACTIVE with a main IP, polling one listing for all of them at a time.

    ``on_ready`` is called once per node as soon as it is seen ready, so its network can be set while
    the others still build.
    """
    sids = {int(n["service_id"]): n for n in nodes}
    progress = Progress(who)
    deadline = progress.started + settings.build_timeout
    missing_twice: set[int] = set()
    seen: set[int] = set()
    while True:
        listing = poll_listing(client, settings)
        line = "listing failed, retrying"
        if listing is not None:
            for sid, node in sids.items():
                if sid in listing:
                    verify_owned(
                        listing[sid], node.get("label"), uuids.get(sid), f"{who} node {node['name']}"
                    )
            ready = {sid: listing[sid] for sid in sids if sid in listing and is_ready(listing[sid])}
            for sid in ready.keys() - seen:
                seen.add(sid)
                if on_ready is not None:
                    on_ready(sid, ready[sid])
            failed = sorted(
                sids[s]["name"] for s in sids if s in listing and status_of(listing[s]) == "ERROR"
            )
            missing = {s for s in sids if s not in listing or status_of(listing[s]) in GONE_STATES}
            if failed:
                raise HostwindsError(
                    f"{who}: node(s) {', '.join(failed)} went to ERROR; they are still billed. Replace them "
                    "(`pulumi up --replace <urn>`) or terminate them in the portal and run `pulumi up` again"
                )
            gone = sorted(sids[s]["name"] for s in missing & missing_twice)
            if gone:
                raise HostwindsError(
                    f"{who}: node(s) {', '.join(gone)} no longer exist; run `pulumi refresh`"
                )
            missing_twice = missing
            if len(ready) == len(sids):
                report(f"{who}: all {len(sids)} node(s) ACTIVE after {progress.elapsed():.0f} s")
                return ready
            line = f"{len(ready)}/{len(sids)} node(s) ACTIVE"
        if time.monotonic() > deadline:
            pending = sorted(
                sids[s]["name"] for s in sids if listing is None or not is_ready(listing.get(s, {}))
            )
            raise HostwindsError(
                f"{who}: {len(pending)} node(s) not ACTIVE after {settings.build_timeout:.0f} s: "
                f"{', '.join(pending[:20])}; the next `pulumi up` waits for them again"
            )
        progress(line)
        time.sleep(settings.poll_interval)


class FleetReadyProvider(HostwindsProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures = []
        nodes = news.get("nodes")
        if not unknown(nodes):
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
        if unknown(news.get("nodes")):
            return dynamic.DiffResult(changes=True, replaces=[], delete_before_replace=False)
        changed = _nodes(olds) != _nodes(news) or _uuids(olds) != _uuids(news)
        return dynamic.DiffResult(changes=changed, replaces=[], delete_before_replace=False)

    def _converge(self, props: dict[str, Any], configure: list[dict[str, Any]]) -> dict[str, Any]:
        settings = self._settings()
        client = settings.client()
        nodes = _nodes(props)
        uuids = _uuids(props)
        who = f"FleetReady[{len(nodes)} node(s)]"
        wanted = {int(n["service_id"]): n for n in configure}

        def network(node: dict[str, Any], inst: dict[str, Any]) -> str | None:
            sid = int(node["service_id"])
            try:
                fresh = client.instance_get(sid)  # ownership is proven on what we are about to change
                verify_owned(fresh, node.get("label"), uuids.get(sid), f"node {node['name']}")
                if node.get("rdns"):
                    client.rdns_set(sid, fresh.get("main_ip") or inst["main_ip"], node["rdns"])
                if node.get("firewall_profile"):
                    client.firewall_set(sid, node["firewall_profile"])
            except HostwindsOwnershipError as exc:
                return exc.message
            except HostwindsError as exc:
                return f"{node['name']}: {exc.message}"
            return None

        with ThreadPoolExecutor(max_workers=FLEET_WORKERS) as pool:
            started: dict[int, Future] = {}

            def on_ready(sid: int, inst: dict[str, Any]) -> None:
                if sid in wanted:
                    started[sid] = pool.submit(network, wanted[sid], inst)

            ready = wait_all(client, settings, nodes, uuids, who, on_ready) if nodes else {}
            problems = [p for p in (f.result() for f in started.values()) if p]
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
        recorded = [{**n, "server_uuid": uuids.get(int(n["service_id"]))} for n in nodes]
        return {"nodes": recorded, "inventory": inventory, "endpoint": settings.endpoint}

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
        uuids = _uuids(props)
        nodes, inventory = [], []
        for node in _nodes(props):
            inst = listing.get(int(node["service_id"]))
            if inst is None or status_of(inst) in GONE_STATES:
                continue  # dropped: the next preview shows the fleet must converge again
            nodes.append({**node, "server_uuid": uuids.get(int(node["service_id"]))})
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
