"""The common role's nftables firewall, for real, on a host that may load rules.

Dev fleet containers lack CAP_NET_ADMIN, so the dev stack turns the firewall off. This test gives one
container that capability (its own network namespace: the rules only filter that container) so the
firewall tasks, the rules template and its handler are exercised as they run on a VPS: SSH, the mail ports
and HTTPS pass, everything else is dropped, and a second run changes nothing. The same capability lets the
common role put an additional sending IP on the host itself (dev containers get theirs from the simulator).
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
import uuid

import pytest

from devenv import images
from devenv.podman_hosts import HOST_LABEL, PREFIX_LABEL, PodmanHosts
from modules.ansible import runner
from tests.infra.support import DEV_GROUP_VARS, Lab

pytestmark = pytest.mark.services


def _podman(*args: str) -> str:
    return subprocess.run(["podman", *args], check=True, capture_output=True, text=True, timeout=120).stdout


def _wait_for_ssh(ip: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, 22), timeout=2) as conn:
                if conn.recv(8).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"sshd at {ip} did not answer within {timeout:.0f} s")


def _probe(ip: str, port: int) -> str:
    """open, refused (allowed by the firewall, nothing listening) or filtered (dropped: no answer)."""
    try:
        with socket.create_connection((ip, port), timeout=3):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "filtered"


@pytest.fixture(scope="module")
def firewalled(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("ansible-firewall"), kind="base")
    name = f"{lab.prefix}-fw-1"
    try:
        # PodmanHosts makes hosts without extra capabilities; this one is made the same way plus NET_ADMIN,
        # with the same labels, so the lab's clean-up removes it.
        _podman(
            "run", "--detach", "--name", name, "--hostname", "fw-1.penguinmails.test", "--network", "podman",
            "--cap-add", "NET_ADMIN", "--label", f"{HOST_LABEL}=1", "--label", f"{PREFIX_LABEL}={lab.prefix}",
            "--stop-timeout", "2", "--env", f"PM_AUTHORIZED_KEYS={lab.public_key}", images.ensure_image("base"),
        )  # fmt: skip
        info = json.loads(_podman("container", "inspect", name))[0]
        ip = PodmanHosts._ipv4(info)
        extra = f"{ip.rsplit('.', 2)[0]}.250.{secrets.randbelow(250) + 2}"  # far above podman's allocations
        _wait_for_ssh(ip)
        lab.hosts["fw-1"] = {"name": "fw-1", "fqdn": "fw-1.penguinmails.test", "ip": ip}
        group_vars = {
            **DEV_GROUP_VARS,
            "common_firewall_enabled": True,
            # The test machine reaches the containers from the bridge's gateway.
            "common_firewall_ssh_sources": [f"{ip.rsplit('.', 2)[0]}.0.0/16"],
            # An additional sending IP to put on the host (NET_ADMIN: the role adds it itself here).
            "common_additional_addresses": [extra],
        }
        text = lab.inventory(group="mailu", group_vars=group_vars)
        secret = {"mailu_secret_key": uuid.uuid4().hex}
        runs = [
            runner.run_playbook("mailu.yml", text, stack=lab.prefix, secret_vars=secret) for _ in range(2)
        ]
        yield {"name": name, "ip": ip, "runs": runs, "extra": extra}
    finally:
        lab.close()


def test_firewall_converges_and_second_run_changes_nothing(firewalled):
    first, second = firewalled["runs"]
    assert first.hosts["fw-1"].changed > 0
    assert second.hosts["fw-1"].changed == 0


def test_firewall_rules_are_loaded(firewalled):
    rules = _podman("exec", firewalled["name"], "nft", "list", "table", "inet", "penguinmails")
    assert "policy drop" in rules
    assert "tcp dport 22 accept" in rules
    # A MailU host opens exactly what its compose file publishes, and forwards it to MailU's network.
    assert "tcp dport { 25, 80, 443, 465, 587, 993 } accept" in rules
    assert rules.count("443") == 1  # its published 443 only: no second rule from common_firewall_web_ports
    assert "ct status dnat ip daddr 192.168.203.0/24 accept" in rules
    assert "ip saddr 192.168.203.0/24 accept" in rules


def test_reloading_the_rules_leaves_the_container_runtimes_tables_alone(firewalled):
    """Docker and podman keep their NAT for published ports in tables of their own: a reload of ours
    (what the handler runs) must neither remove them nor pile up copies of our table."""
    name = firewalled["name"]
    runtime = (
        "table ip runtime-nat {\n  chain POSTROUTING {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        "    ip saddr 192.168.203.0/24 masquerade\n  }\n}\n"
    )
    subprocess.run(
        ["podman", "exec", "-i", name, "nft", "-f", "/dev/stdin"],
        input=runtime, check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    try:
        for _ in range(2):
            _podman("exec", name, "/usr/sbin/nft", "-f", "/etc/nftables.conf")
        ruleset = _podman("exec", name, "nft", "list", "ruleset")
        assert "table ip runtime-nat" in ruleset and "masquerade" in ruleset
        assert ruleset.count("table inet penguinmails") == 1
        assert ruleset.count("tcp dport 22 accept") == 1
    finally:
        _podman("exec", name, "nft", "delete", "table", "ip", "runtime-nat")


def test_firewall_lets_ssh_and_mail_ports_in_and_drops_the_rest(firewalled):
    ip, name = firewalled["ip"], firewalled["name"]
    _podman("exec", "--detach", name, "python3", "-m", "http.server", "8080")
    deadline = time.monotonic() + 10
    while "8080" not in _podman("exec", name, "ss", "-ltn") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _probe(ip, 22) == "open"
    # Nothing listens on the mail ports of a MailU host before `docker compose up`: allowed, so refused.
    assert _probe(ip, 465) == "refused"
    assert _probe(ip, 443) == "refused", "HTTPS (the MTA-STS policy) passes the firewall"
    # A listening service on a port the firewall does not open is unreachable.
    assert _probe(ip, 8080) == "filtered"
    inside = subprocess.run(
        ["podman", "exec", name, "python3", "-c", "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080').status)"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert inside.stdout.strip() == "200", "the service itself works; only the firewall keeps it from outside"


def test_the_additional_sending_ip_is_on_the_host_and_comes_back(firewalled):
    name, extra = firewalled["name"], firewalled["extra"]
    assert f" inet {extra}/32 " in _podman("exec", name, "ip", "-o", "-4", "addr", "show")
    # As after a reboot: the address is gone, and the boot script puts it back (once).
    _podman("exec", name, "ip", "addr", "del", f"{extra}/32", "dev", "eth0")
    assert "added" in _podman("exec", name, "/etc/init.d/penguinmails-addresses", "start")
    assert "added" not in _podman("exec", name, "/etc/init.d/penguinmails-addresses", "start")
    assert _podman("exec", name, "ip", "-o", "-4", "addr", "show").count(f" inet {extra}/32 ") == 1
    # Reachable at the new address from this machine, as a receiver would reach it.
    assert _probe(extra, 22) == "open"
