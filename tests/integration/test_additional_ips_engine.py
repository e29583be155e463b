"""`pulumi up` with an additional sending IP, through the real program on a private simulator and BIND.

The node is a podman container (mailhost image). The first `up` declares an address the simulator has not
assigned to the instance: it is refused in one line naming node and IP, and nothing uses it (no set_rdns,
no DNS record, no mail host converge). Then the address is "bought in the portal" (the simulator's admin
endpoint, which also adds it to the container's eth0) and the next `up` sets its PTR, publishes its A,
PTR and the pinned domain's SPF, registers it in the OLTP inventory, gives the exporter and the sender
routes agent both IPs, and Postfix sends the pinned domain from it: a sink on the bridge sees the mail
come from the additional address, and the other domain's from the main one; the agent, told the IP is
quarantined, moves the domain to the main IP and its next mail comes from there. A second preview plans
nothing; a PTR changed out of band shows after a refresh and is restored; dropping the address from the
config stops using it, says it stays assigned, and never releases it (no delete_ip, no change_main_ip).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
import time
import uuid

import psycopg
import pytest
from pulumi import automation as auto

from devenv import bridge_ips
from devenv.podman_hosts import PodmanHosts
from modules.dns import verify
from modules.dns.lookup import ServerLookup
from modules.dns.records import reverse_name
from tests.support.dns import private_bind, provider_env
from tests.support.engine import project_stack
from tests.support.hostwinds import private_simulator

pytestmark = [pytest.mark.engine, pytest.mark.services]

ZONE = "pmips.test"
REVERSE = "88.10.in-addr.arpa"
SINK = r"""
import asyncore, smtpd, warnings
warnings.simplefilter("ignore")
class Sink(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        with open("/tmp/peers.log", "a") as log:
            log.write(f"{peer[0]} {mailfrom}\n")
Sink(("0.0.0.0", 25), None, decode_data=False)
asyncore.loop()
"""


def _config(bind, sim, tag: str, address: str) -> dict:
    return {
        "environment": "dev",
        "redis": {"queue_user": f"pm-ips-{tag}", "port": 6390},
        # Which address each domain leaves from, not how fast: the day-1 hourly cap (a 180 s transport rate
        # delay) would hold the probes past the wait; tests/integration/test_warmup_caps_agent.py has the caps.
        "warmup": {"enabled": False},
        "postgres": {
            "oltp": {"name_prefix": f"pm_ips{tag}"},
            **{tier: {"enabled": False} for tier in ("content", "analytics", "queue")},
        },
        "hostwinds": {
            "endpoint": sim.endpoint,
            "poll_interval_seconds": 0.5,
            "lost_answer_wait_seconds": 1,
            "build_timeout_seconds": 300,
        },
        "fleet": {
            "nodes": 1,
            "rdns_domain": f"fleet.{ZONE}",
            "ssh_key_names": ["penguinmails-dev-operator"],
            "additional_ips": {"1": [address]},
        },
        "dns": {
            "ttl": 600,
            "resolvers": [f"{bind.host}:{bind.port}"],
            "zones": [
                {"name": ZONE, "port": bind.port, "tsig_key_name": bind.key_name},
                {"name": REVERSE, "port": bind.port, "tsig_key_name": bind.key_name},
            ],
        },
        "tenants": [
            {
                "slug": "acme",
                "domains": [
                    {"name": f"main.{ZONE}"},
                    {"name": f"pinned.{ZONE}", "sending_ip": "ip2"},
                ],
            }
        ],
    }


def _bridge_address() -> str:
    """An address in podman's subnet that no container has: the upper quarter, which podman (handing out
    the low ones in order) does not reach on this machine, claimed machine-wide so that no simulator of
    another test worker hands it out too."""
    return bridge_ips.pick(ipaddress.ip_network("10.88.192.0/18"))


@contextlib.contextmanager
def _states_server(states: dict):
    """The reputation endpoint's answer for the agent, served on podman's bridge gateway."""
    import http.server
    import threading

    from devenv.bind import free_port
    from devenv.podman_hosts import ensure_default_bridge

    body = json.dumps(states).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    gateway = ensure_default_bridge()
    server = http.server.ThreadingHTTPServer((gateway, free_port(gateway)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{gateway}:{server.server_address[1]}/v1/sending-ips"
    finally:
        server.shutdown()


def _exec(container: str, *argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["podman", "exec", "-i", container, *argv], input=stdin, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"{argv}: {done.stderr[-500:]}"
    return done.stdout


def test_an_additional_ip_is_refused_until_assigned_then_carries_its_pinned_domain(
    tmp_path, devenv_env, monkeypatch
):
    tag = uuid.uuid4().hex[:6]
    prefix = f"pm-ips{tag}"
    monkeypatch.setenv("PENGUINMAILS_PODMAN_IMAGE_KIND", "mailhost")  # read by the simulator's podman backend
    address = _bridge_address()
    try:
        with (
            private_bind(tmp_path / "bind", [ZONE, REVERSE], key_name="pm-ips") as bind,
            private_simulator(tmp_path / "sim", backend="podman", podman_prefix=prefix) as sim,
        ):
            operator_key, _ = sim.service.operator_key()
            stack = project_stack(
                tmp_path,
                "dev",
                config=_config(bind, sim, tag, address),
                secrets={"tsigSecret": bind.tsig_secret()},
                extra_env={
                    **sim.env(),
                    **provider_env(bind),
                    "PENGUINMAILS_FLEET_SSH_PRIVATE_KEY": str(operator_key),
                    "PENGUINMAILS_ANSIBLE_INVENTORY_DIR": str(tmp_path / "inventory"),
                    "PENGUINMAILS_ANSIBLE_STATE_DIR": str(tmp_path / "ansible-state"),
                },
            )
            try:
                _refused_before_any_change(stack, sim, bind, address)
                sid, container = _assigned_and_used(stack, sim, bind, address, prefix, tag, devenv_env)
                _drift_restored(stack, sim, sid, address)
                config = _config(bind, sim, tag, address)
                _dropped_is_only_unused(stack, sim, bind, sid, address, container, config)
            finally:
                with contextlib.suppress(auto.CommandError):
                    stack.destroy(color="never")
            assert not [c for c in sim.calls() if c["action"] in ("delete_ip", "change_main_ip")]
            stack.workspace.remove_stack("dev")
    finally:
        PodmanHosts(prefix).clear()
        bridge_ips.release(address)


def _refused_before_any_change(stack, sim, bind, address):
    started = time.monotonic()
    with pytest.raises(auto.CommandError) as failed:
        stack.up(color="never")
    print(f"\nfirst up (refused) in {time.monotonic() - started:.0f} s")
    lines = [line for line in str(failed.value).splitlines() if f"{address} is not an additional IP" in line]
    assert lines and "AdditionalIps[mx-01]" in lines[0] and "Nothing was changed" in lines[0], str(
        failed.value
    )
    assert "Traceback" not in str(failed.value)
    assert not [c for c in sim.calls() if c["action"] == "set_rdns" and c["params"].get("ip") == address]
    lookup = ServerLookup(bind.host, bind.port, timeout=5)
    assert not lookup(f"mx-01-2.fleet.{ZONE}", "A").values
    types = {r["type"] for r in stack.export_stack().deployment["resources"]}
    assert "pulumi-python:dynamic/ansible:Playbook" not in types
    assert "pulumi-python:dynamic/hostwinds:AdditionalIps" not in types


def _assigned_and_used(stack, sim, bind, address, prefix, tag, devenv_env):
    (instance,) = [i for i in sim.instances() if not i["foreign"]]
    assert sim.assign_ip(instance["serviceid"], address) == address
    started = time.monotonic()
    up = stack.up(color="never")
    print(f"second up (assigned) in {time.monotonic() - started:.0f} s")
    assert up.summary.result == "succeeded"
    host = f"mx-01-2.fleet.{ZONE}"
    (instance,) = [i for i in sim.instances() if not i["foreign"]]
    main_ip = instance["main_ip"]
    assert instance["additional_ips"] == [address] and instance["rdns"][address] == host

    lookup = ServerLookup(bind.host, bind.port, timeout=5)
    assert list(lookup(host, "A").values) == [address]
    assert [v.rstrip(".") for v in lookup(reverse_name(address), "PTR").values] == [host]
    (pinned_spf,) = [v for v in lookup(f"pinned.{ZONE}", "TXT").values if v.startswith("v=spf1")]
    assert pinned_spf.startswith(f"v=spf1 ip4:{address} ip4:{main_ip} ")
    (main_spf,) = [v for v in lookup(f"main.{ZONE}", "TXT").values if v.startswith("v=spf1")]
    assert main_spf.startswith(f"v=spf1 ip4:{main_ip} ip4:{address} ")  # the same tenant's other IP

    outputs = stack.outputs()
    # `penguinmails dns verify`'s checks for the pinned domain: SPF, PTR and HELO (FCrDNS) of its own IP.
    expectations = verify.expectations_from_output(outputs["dns_verification"].value)
    (pinned,) = [e for e in expectations if e.domain == f"pinned.{ZONE}"]
    assert pinned.sending_ips == (address,) and pinned.ptr_host == host
    for check in (verify.check_spf, verify.check_ptr, verify.check_helo):
        result = check(pinned, lookup)
        assert result.passed, result
    (node,) = outputs["fleet_nodes"].value
    assert node["additional_ips"] == [{"name": "ip2", "address": address, "fqdn": host}]
    exporter = outputs["monitoring_exporter_config"].value
    exporter = json.loads(exporter) if isinstance(exporter, str) else exporter
    assert set(exporter["sending_ips"]) == {main_ip, address}
    admin = {
        "host": devenv_env["PENGUINMAILS_POSTGRES_HOST"],
        "port": int(devenv_env["PENGUINMAILS_POSTGRES_PORT"]),
        "user": devenv_env["PENGUINMAILS_POSTGRES_ADMIN_USER"],
        "password": devenv_env["PENGUINMAILS_POSTGRES_ADMIN_PASSWORD"],
    }
    with psycopg.connect(dbname=f"pm_ips{tag}_oltp", connect_timeout=10, **admin) as conn:
        rows = conn.execute(
            "SELECT host(ip_address), rdns_hostname, status FROM fleet.smtp_ip_addresses ORDER BY created"
        ).fetchall()
    assert {(ip, name) for ip, name, _ in rows} == {(main_ip, f"mx-01.fleet.{ZONE}"), (address, host)}

    container = f"{prefix}-hw{instance['serviceid']}"
    assert _exec(container, "postconf", "-P", "smtp-ip2/unix/smtp_bind_address").strip().endswith(address)
    assert f"@pinned.{ZONE} smtp-ip2:" in _exec(container, "cat", "/etc/postfix/sender_transports")
    routes = json.loads(_exec(container, "cat", "/etc/penguinmails/sender-routes.json"))
    assert {ip["address"] for ip in routes["ips"]} == {main_ip, address}

    sink = PodmanHosts(prefix, kind="base").create(
        "sink", [sim.service.operator_key()[1].read_text().strip()]
    )
    sink_container = PodmanHosts(prefix).container_name("sink")
    _exec(sink_container, "sh", "-c", "cat > /tmp/sink.py", stdin=SINK)
    subprocess.run(
        ["podman", "exec", "-d", sink_container, "python3", "/tmp/sink.py"], check=True, timeout=60
    )
    time.sleep(1)  # the sink's listen socket; Postfix would retry anyway, this only keeps the test short

    def send(domain: str) -> None:
        message = f"From: postmaster@{domain}.{ZONE}\nTo: probe@[{sink}]\nSubject: {domain}\n\nHello.\n"
        _exec(container, "sendmail", "-f", f"postmaster@{domain}.{ZONE}", f"probe@[{sink}]", stdin=message)

    def received(count: int) -> list[tuple[str, str]]:
        deadline, lines = time.monotonic() + 120, []
        while time.monotonic() < deadline:
            _exec(container, "postqueue", "-f")
            done = subprocess.run(
                ["podman", "exec", sink_container, "cat", "/tmp/peers.log"], capture_output=True, text=True
            )
            lines = [tuple(line.split()[::-1]) for line in done.stdout.splitlines() if line.strip()]
            if len(lines) >= count:
                break
            time.sleep(2)
        else:  # say why on a failure: the node's queue and the end of its mail log
            for argv in (["postqueue", "-p"], ["sh", "-c", "tail -n 30 /var/log/mail.log 2>/dev/null"]):
                shown = subprocess.run(["podman", "exec", container, *argv], capture_output=True, text=True)
                print(shown.stdout[-4000:])
        return lines

    send("pinned")
    send("main")
    assert set(received(2)) == {(f"postmaster@pinned.{ZONE}", address), (f"postmaster@main.{ZONE}", main_ip)}

    # The sender routes agent's move path, with the real second IP: ip2 quarantined, main warmed (same
    # tenant), so the pinned domain moves to main and its next message leaves from the main address.
    states = {
        "ips": {
            address: {"quarantined": True, "status": "warming"},
            main_ip: {"quarantined": False, "status": "warmed"},
        }
    }
    with _states_server(states) as url:
        routes["url"] = url
        _exec(container, "sh", "-c", "umask 077; cat > /tmp/routes.json", stdin=json.dumps(routes))
        once = _exec(
            container,
            "python3",
            "/opt/penguinmails/sender_routes.py",
            "--config",
            "/tmp/routes.json",
            "--once",
        )
    assert once.strip() == "changed"
    assert f"@pinned.{ZONE} smtp-main:" in _exec(container, "cat", "/etc/postfix/sender_routes")
    send("pinned")
    assert received(3)[2] == (f"postmaster@pinned.{ZONE}", main_ip)

    preview = stack.preview(color="never", expect_no_changes=True)
    assert set(preview.change_summary) == {"same"}
    return instance["serviceid"], container


def _drift_restored(stack, sim, sid, address):
    """A PTR changed in the portal shows after a refresh and the next `up` sets it back."""
    sim.client().rdns_set(sid, address, f"elsewhere.{ZONE}")
    stack.refresh(color="never")
    preview = stack.preview(color="never", diff=True)
    assert preview.change_summary.get("update", 0) >= 1 and f"elsewhere.{ZONE}" in preview.stdout
    stack.up(color="never")
    (instance,) = [i for i in sim.instances() if i["serviceid"] == sid]
    assert instance["rdns"][address] == f"mx-01-2.fleet.{ZONE}"
    assert set(stack.preview(color="never", expect_no_changes=True).change_summary) == {"same"}


def _dropped_is_only_unused(stack, sim, bind, sid, address, container, config):
    """Removing the address from the config stops using it and says it stays assigned; nothing released."""
    config["fleet"]["additional_ips"] = {}
    config["tenants"][0]["domains"][1].pop("sending_ip")
    stack.set_config("penguinmails:fleet", auto.ConfigValue(json.dumps(config["fleet"])))
    stack.set_config("penguinmails:tenants", auto.ConfigValue(json.dumps(config["tenants"])))
    up = stack.up(color="never")
    assert f"{address} no longer used for sending; still assigned to instance {sid}" in up.stdout
    assert "never calls delete_ip" in up.stdout
    (instance,) = [i for i in sim.instances() if i["serviceid"] == sid]
    assert instance["additional_ips"] == [address]  # still the server's
    assert "smtp-ip2" not in _exec(container, "cat", "/etc/postfix/sender_transports")
    lookup = ServerLookup(bind.host, bind.port, timeout=5)
    assert not lookup(f"mx-01-2.fleet.{ZONE}", "A").values
