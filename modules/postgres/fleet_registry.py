"""One fleet node in the OLTP tier's inventory: its ``fleet.vps_instances`` row and one
``fleet.smtp_ip_addresses`` row per sending IP, main and additional (a Pulumi dynamic resource per node).

Why: the DNSBL checker writes its verdicts, the quarantine marks and the warm-up plans onto those rows; a
node nobody registered is checked but its listing is never stored, and it never gets a plan. The stack
that orders the node knows its Hostwinds id, name and address, so it registers them (as the tier's admin).

Ownership (schemas/oltp/0011): the VPS row carries ``registered_by = 'pulumi:<project>/<stack>/<node>'``.
Create refuses a row of the same Hostwinds id or IP that does not carry this node's mark; it adopts one
that does (an earlier create whose answer was lost). Update and delete touch only the row whose id is in
the state *and* whose mark is ours; anything else is left alone and named. A new IP starts ``warming``.
Delete removes the VPS row and, by cascade, its IPs with their plans and assignments: the server is gone.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields
from typing import Any

import psycopg
import pulumi
import pulumi.dynamic as dynamic

from modules.postgres import admin
from modules.postgres.client import PostgresError, connect, run
from modules.postgres.resources import _changed, _PostgresProvider, _read_result, _unknown, with_server

APPLICATION = "penguinmails-fleet-registry"
INITIAL_IP_STATUS = "warming"


@dataclass(frozen=True)
class FleetNodeArgs:
    """The node as the fleet knows it; ``mark`` is ``pulumi:<project>/<stack>/<node>``."""

    tier: str
    database: pulumi.Input[str]
    mark: str
    server_id: pulumi.Input[str]
    hostname: pulumi.Input[str]
    ip: pulumi.Input[str]
    # The node's proven additional IPs (``[{name, address, fqdn}]``): each its own row, PTR name as rdns.
    additional_ips: pulumi.Input[list] = ()
    # The admin connection of an oltp tier on a fleet VPS (secret); None: from the stack config.
    server: pulumi.Input[dict[str, Any]] | None = None

    def props(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies, and Outputs cannot be copied outside serialization.
        return {
            **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "server"},
            "additional_ips": self.additional_ips if self.additional_ips != () else [],
            "vps_id": None,
            "ip_id": None,
            "drift": [],
        }


def _check(news: dict[str, Any]) -> list[dynamic.CheckFailure]:
    failures = []
    if news.get("tier") != "oltp":
        failures.append(dynamic.CheckFailure("tier", "the fleet inventory lives in the oltp tier"))
    problem = admin.database_name_problem(news.get("database"))
    if problem and not _unknown(news.get("database")):
        failures.append(dynamic.CheckFailure("database", problem))
    mark = news.get("mark")
    if not isinstance(mark, str) or not mark.startswith("pulumi:") or mark.count("/") != 2:
        failures.append(dynamic.CheckFailure("mark", "must be pulumi:<project>/<stack>/<node>"))
    for key in ("server_id", "hostname"):
        value = news.get(key)
        if not _unknown(value) and (not isinstance(value, str) or not value.strip() or len(value) > 253):
            failures.append(dynamic.CheckFailure(key, "must be a non-empty string of at most 253 characters"))
    ip = news.get("ip")
    if not _unknown(ip):
        try:
            ipaddress.ip_address(ip)
        except (TypeError, ValueError):
            failures.append(dynamic.CheckFailure("ip", f"{ip!r} is not an IPv4 or IPv6 address"))
    extras = news.get("additional_ips") or []
    if not _unknown(extras):
        for row in extras:
            try:
                ipaddress.ip_address(row["address"])
            except (TypeError, ValueError, KeyError):
                failures.append(dynamic.CheckFailure("additional_ips", f"{row!r} has no valid address"))
    return failures


def _ips(props: dict[str, Any]) -> list[tuple[str, str]]:
    """(address, rdns hostname) of every sending IP of the node, main first."""
    extras = [
        (str(r["address"]), str(r.get("fqdn") or props["hostname"]))
        for r in props.get("additional_ips") or []
    ]
    return [(props["ip"], props["hostname"]), *extras]


class FleetNodeProvider(_PostgresProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        return dynamic.CheckResult(news, _check(news))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = _changed(olds, news, ("tier", "database", "mark", "server_id", "hostname", "ip", "drift"))
        if (olds.get("additional_ips") or []) != (news.get("additional_ips") or []):  # absent in older state
            changed.append("additional_ips")
        replaces = [key for key in changed if key in ("tier", "database", "mark", "server_id")]
        return dynamic.DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=True)

    def _label(self, props: dict[str, Any]) -> str:
        return f"FleetNode[{props['mark'].rsplit('/', 1)[-1]}]"

    def _connect(self, props: dict[str, Any]) -> tuple[Any, psycopg.Connection]:
        target = self._target(props)
        return target, connect(target, props["database"], autocommit=False, application_name=APPLICATION)

    def _register(self, props: dict[str, Any], recorded: str | None) -> dict[str, Any]:
        target, conn = self._connect(props)
        label = self._label(props)
        with conn:

            def register() -> tuple[str, str]:
                found = conn.execute(
                    "SELECT id::text, registered_by FROM fleet.vps_instances "
                    "WHERE hostwinds_instance_id = %s OR registered_by = %s FOR UPDATE",
                    [props["server_id"], props["mark"]],
                ).fetchall()
                foreign = [row for row in found if row[1] != props["mark"]]
                if foreign:
                    raise PostgresError(
                        f"{label}: fleet.vps_instances already has Hostwinds id {props['server_id']} "
                        f"(row {foreign[0][0]}, registered by {foreign[0][1] or 'hand'}), not marked as this "
                        "node's; it is left alone: remove or re-mark it if it is stale, then run `up` again"
                    )
                ours = [row for row in found if row[1] == props["mark"]]
                if ours and recorded is not None and ours[0][0] != recorded:
                    raise PostgresError(
                        f"{label}: the row marked as this node's ({ours[0][0]}) is not the one this stack "
                        f"recorded ({recorded}); it is left alone"
                    )
                if ours:
                    vps_id = ours[0][0]
                    conn.execute(
                        "UPDATE fleet.vps_instances SET hostwinds_instance_id = %s, hostname = %s, "
                        "ip_address = %s::inet, status = 'active', updated = now() WHERE id = %s::uuid AND registered_by = %s",
                        [props["server_id"], props["hostname"], props["ip"], vps_id, props["mark"]],
                    )
                else:
                    vps_id = conn.execute(
                        "INSERT INTO fleet.vps_instances (hostwinds_instance_id, hostname, ip_address, status, "
                        "registered_by) VALUES (%s, %s, %s::inet, 'active', %s) RETURNING id::text",
                        [props["server_id"], props["hostname"], props["ip"], props["mark"]],
                    ).fetchone()[0]
                ips = _ips(props)
                for address, _ in ips:
                    taken = conn.execute(
                        "SELECT id::text, vps_instance_id::text FROM fleet.smtp_ip_addresses WHERE ip_address = %s::inet",
                        [address],
                    ).fetchone()
                    if taken is not None and taken[1] != vps_id:
                        raise PostgresError(
                            f"{label}: IP {address} is already fleet.smtp_ip_addresses row {taken[0]} of "
                            "another VPS; it is left alone"
                        )
                # This node's other IP rows (an address that changed, or no longer declared) go.
                conn.execute(
                    "DELETE FROM fleet.smtp_ip_addresses WHERE vps_instance_id = %s::uuid "
                    "AND NOT ip_address = ANY(%s::inet[])",
                    [vps_id, [address for address, _ in ips]],
                )
                ids = []
                for address, hostname in ips:
                    found = (
                        conn.execute(
                            "UPDATE fleet.smtp_ip_addresses SET rdns_hostname = %s, updated = now() "
                            "WHERE vps_instance_id = %s::uuid AND ip_address = %s::inet RETURNING id::text",
                            [hostname, vps_id, address],
                        ).fetchone()
                        or conn.execute(
                            "INSERT INTO fleet.smtp_ip_addresses (vps_instance_id, ip_address, rdns_hostname, status) "
                            "VALUES (%s::uuid, %s::inet, %s, %s) RETURNING id::text",
                            [vps_id, address, hostname, INITIAL_IP_STATUS],
                        ).fetchone()
                    )
                    ids.append(found[0])
                return vps_id, ids[0]

            vps_id, ip_id = run(target, f"register {label} in {props['database']}", register)
        return {**props, "vps_id": vps_id, "ip_id": ip_id, "drift": []}

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        outs = self._register(props, None)
        return dynamic.CreateResult(id_=outs["vps_id"], outs=outs)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        return dynamic.UpdateResult(outs=self._register(news, olds.get("vps_id") or id_))

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        target, conn = self._connect(props)
        with conn:
            rows = run(
                target,
                f"read {self._label(props)}",
                lambda: conn.execute(
                    "SELECT v.hostwinds_instance_id, v.hostname, host(s.ip_address) FROM fleet.vps_instances v "
                    "LEFT JOIN fleet.smtp_ip_addresses s ON s.vps_instance_id = v.id "
                    "WHERE v.id::text = %s AND v.registered_by = %s ORDER BY s.created, s.ip_address",
                    [id_, props["mark"]],
                ).fetchall(),
            )
        if not rows:
            return dynamic.ReadResult(id_="", outs={})  # gone (or no longer ours): the next up registers it
        live_ips = {r[2] for r in rows if r[2]}
        declared = {address for address, _ in _ips(props)}
        main = props["ip"] if props["ip"] in live_ips else (rows[0][2] if len(live_ips) == 1 else None)
        row = (rows[0][0], rows[0][1], main)
        drift = [
            f"{column} is {live!r}, not {props[key]!r}"
            for key, column, live in (
                ("server_id", "hostwinds_instance_id", row[0]),
                ("hostname", "hostname", row[1]),
                ("ip", "smtp_ip_addresses.ip_address", row[2]),
            )
            if live != props[key]
        ]
        drift += [f"smtp_ip_addresses lacks {a}" for a in sorted(declared - live_ips - {props["ip"]})]
        drift += [f"smtp_ip_addresses has {a}, not declared" for a in sorted(live_ips - declared - {row[2]})]
        return _read_result(id_, {**props, "drift": drift})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        target, conn = self._connect(props)
        with conn:
            run(
                target,
                f"remove {self._label(props)}",
                lambda: conn.execute(
                    "DELETE FROM fleet.vps_instances WHERE id::text = %s AND registered_by = %s",
                    [props.get("vps_id") or id_, props["mark"]],
                ),
            )


class FleetNode(dynamic.Resource, module="postgres", name="FleetNode"):
    """A fleet node registered in the OLTP tier (``vps_id`` / ``ip_id`` are the rows' ids)."""

    vps_id: pulumi.Output[str]
    ip_id: pulumi.Output[str]
    drift: pulumi.Output[list]

    def __init__(self, resource_name: str, args: FleetNodeArgs, opts: pulumi.ResourceOptions | None = None):
        props, opts = with_server(args.props(), args.server, opts)
        super().__init__(FleetNodeProvider(), resource_name, props, opts)
