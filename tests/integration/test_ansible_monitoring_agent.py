"""The monitoring agent on a real podman mail host: the whole mailhost playbook, converged twice.

The host gets CAP_NET_ADMIN (like tests/integration/test_ansible_firewall.py) so the common role's
nftables firewall and the agent's drop-in really load: the test machine reaches the containers from the
bridge's gateway, which stands for the monitoring host (the devenv Prometheus runs there), and a second
container on the bridge is a host the exporters must not answer. A message to that second container's
port 25 (nothing listens: refused at once) makes Postfix defer it, which the postfix exporter must show.
"""

from __future__ import annotations

import datetime
import json
import re
import socket
import subprocess
import time
import urllib.request
import uuid

import pytest
from cryptography import x509

from devenv import images
from devenv.podman_hosts import HOST_LABEL, PREFIX_LABEL, PodmanHosts, ensure_default_bridge
from modules.ansible import runner
from modules.dns import dkim as dns_dkim
from tests.infra.support import Lab, native_host_vars

pytestmark = pytest.mark.services

ZONE = "penguinmails.test"
NODE_PORT, POSTFIX_PORT = 9100, 9154
CERT = "/etc/ssl/penguinmails/host.crt"
PID_FILES = (
    "/run/prometheus/prometheus-node-exporter.pid",
    "/run/prometheus/prometheus-postfix-exporter.pid",
)


def _podman(*args: str, check: bool = True) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])} failed: {done.stderr.strip()}")
    return done.stdout


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


def _container(lab: Lab, name: str, image: str, *extra: str) -> str:
    """A container with the lab's labels (so its clean-up removes it); returns its bridge IPv4."""
    _podman(
        "run", "--detach", "--name", name, "--hostname", name, "--network", "podman",
        "--label", f"{HOST_LABEL}=1", "--label", f"{PREFIX_LABEL}={lab.prefix}", "--stop-timeout", "2",
        "--env", f"PM_AUTHORIZED_KEYS={lab.public_key}", *extra, image,
    )  # fmt: skip
    return PodmanHosts._ipv4(json.loads(_podman("container", "inspect", name))[0])


def _metrics(ip: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=10) as answer:
        return answer.read().decode()


def _sample(text: str, name: str, labels: str = "") -> float | None:
    """The value of one sample (``name{labels}``) in exposition text, or None when it is absent."""
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else None


def _sendmail(container: str, sender: str, recipient: str) -> None:
    subprocess.run(
        ["podman", "exec", "-i", container, "/usr/sbin/sendmail", "-f", sender, recipient],
        input=f"Subject: deferred {uuid.uuid4().hex}\n\nThis one cannot be delivered.\n",
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _pids(container: str) -> list[str]:
    return [_podman("exec", container, "cat", path).strip() for path in PID_FILES]


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("ansible-monitoring-agent"))
    domain = f"t{uuid.uuid4().hex[:8]}.{ZONE}"
    fqdn = f"mx-1.{domain}"
    name, outsider = f"{lab.prefix}-mx-1", f"{lab.prefix}-outsider"
    try:
        gateway = ensure_default_bridge()
        assert gateway, "podman's default bridge has no gateway address"
        ip = _container(lab, name, images.ensure_image("mailhost"), "--cap-add", "NET_ADMIN")
        outsider_ip = _container(lab, outsider, images.ensure_image("base"))
        _wait_for_ssh(ip)
        host = lab.hosts["mx-1"] = {"name": "mx-1", "fqdn": fqdn, "ip": ip}
        private_pem, _ = dns_dkim.generate_key()
        secret_vars = {
            "opendkim_keys": [{"domain": domain, "selector": "pm1", "private_key": private_pem}],
            "dovecot_users": [{"address": f"alice@{domain}", "password": uuid.uuid4().hex}],
        }
        group_vars = {"common_firewall_enabled": True, "monitoring_agent_allowed_sources": [gateway]}
        text = lab.inventory(host_vars={"mx-1": native_host_vars(host, [domain])}, group_vars=group_vars)
        runs, walls, pids = [], [], []
        for _ in range(2):
            started = time.monotonic()
            runs.append(runner.run_playbook("mailhost.yml", text, stack=lab.prefix, secret_vars=secret_vars))
            walls.append(time.monotonic() - started)
            pids.append(_pids(name))
        print(f"\nmonitoring agent converge: first {walls[0]:.0f} s, second {walls[1]:.0f} s")
        yield {
            "name": name,
            "ip": ip,
            "fqdn": fqdn,
            "domain": domain,
            "gateway": gateway,
            "outsider": outsider,
            "outsider_ip": outsider_ip,
            "runs": runs,
            "pids": pids,
        }
    finally:
        lab.close()


def test_second_converge_changes_nothing_and_keeps_the_exporters_running(agent):
    first, second = agent["runs"]
    assert first.hosts["mx-1"].changed > 10 and first.hosts["mx-1"].failed == 0
    assert second.hosts["mx-1"].changed == 0 and second.hosts["mx-1"].failed == 0
    assert agent["pids"][0] == agent["pids"][1], "the second run restarted an exporter"


def test_node_exporter_serves_the_hosts_metrics_to_the_monitoring_host(agent):
    text = _metrics(agent["ip"], NODE_PORT)
    assert _sample(text, "node_boot_time_seconds") > 0
    assert _sample(text, "node_memory_MemAvailable_bytes") > 0
    # The textfile collector reads its folder, and our file in it parses.
    assert _sample(text, "node_textfile_scrape_error") == 0


def test_certificate_expiry_metric_is_the_certificates_not_after(agent):
    pem = _podman("exec", agent["name"], "cat", CERT).encode()
    not_after = x509.load_pem_x509_certificate(pem).not_valid_after_utc
    text = _metrics(agent["ip"], NODE_PORT)
    value = _sample(text, "penguinmails_tls_certificate_expiry_timestamp_seconds", f'path="{CERT}"')
    assert value is not None, "no expiry metric for the host's certificate"
    assert datetime.datetime.fromtimestamp(value, datetime.UTC) == not_after
    assert _sample(text, "penguinmails_tls_certificate_readable", f'path="{CERT}"') == 1
    assert value > time.time() + 30 * 86400  # a freshly made certificate, far from expiring


def test_postfix_exporter_shows_the_deferred_queue_growing(agent):
    deferred = "postfix_showq_message_age_seconds_count"
    before = _metrics(agent["ip"], POSTFIX_PORT)
    assert _sample(before, "postfix_up", 'path="/var/spool/postfix/public/showq"') == 1
    queued_before = _sample(before, deferred, 'queue="deferred"') or 0
    status_before = _sample(before, "postfix_smtp_status_deferred") or 0
    # Nothing listens on the outsider's port 25: the connection is refused and Postfix defers at once.
    _sendmail(agent["name"], f"root@{agent['fqdn']}", f"nobody@[{agent['outsider_ip']}]")
    deadline = time.monotonic() + 90
    queued = status = 0.0
    while time.monotonic() < deadline:
        text = _metrics(agent["ip"], POSTFIX_PORT)
        queued = _sample(text, deferred, 'queue="deferred"') or 0
        status = _sample(text, "postfix_smtp_status_deferred") or 0
        if queued > queued_before and status > status_before:
            break
        time.sleep(1)
    assert queued == queued_before + 1, "the deferred queue (from showq) did not grow by the message"
    # The same deferral read from the mail log: the exporter follows the postfix role's maillog_file.
    assert status > status_before, "the postfix exporter did not see the deferral in the mail log"


def test_firewall_opens_the_exporters_to_the_monitoring_host_only(agent):
    rules = _podman("exec", agent["name"], "nft", "list", "table", "inet", "penguinmails")
    assert f"ip saddr {agent['gateway']} tcp dport {{ {NODE_PORT}, {POSTFIX_PORT} }} accept" in rules
    assert "policy drop" in rules
    probe = (
        "import socket, sys\n"
        "for port in map(int, sys.argv[2:]):\n"
        "    try:\n"
        "        socket.create_connection((sys.argv[1], port), timeout=3).close(); print(port, 'open')\n"
        "    except TimeoutError: print(port, 'filtered')\n"
        "    except OSError as error: print(port, type(error).__name__)\n"
    )
    done = subprocess.run(
        ["podman", "exec", agent["outsider"], "python3", "-c", probe, agent["ip"], "25", str(NODE_PORT),
         str(POSTFIX_PORT)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # SMTP is open to everyone (the probe itself works); the exporters are dropped for this source.
    assert done.stdout.split("\n")[:3] == ["25 open", f"{NODE_PORT} filtered", f"{POSTFIX_PORT} filtered"]
    # From the allowed source (the gateway: this machine) both answer.
    assert "node_boot_time_seconds" in _metrics(agent["ip"], NODE_PORT)
    assert "postfix_up" in _metrics(agent["ip"], POSTFIX_PORT)


def test_deliveries_are_counted_per_sending_ip(agent):
    """A tenant's message leaves through its sending IP's transport (smtp-main, bound to the host's
    address); cron's counter labels its deferral with that IP (the postfix exporter cannot)."""
    name = "penguinmails_smtp_deliveries_total"
    labels = f'sending_ip="{agent["ip"]}",status="deferred"'
    before = _sample(_metrics(agent["ip"], NODE_PORT), name, labels)
    assert before is not None, "the counter has no series for the host's sending IP"
    _sendmail(agent["name"], f"alice@{agent['domain']}", f"nobody@[{agent['outsider_ip']}]")
    deadline = time.monotonic() + 150  # cron runs the counter once a minute
    value = before
    while time.monotonic() < deadline and value == before:
        time.sleep(2)
        value = _sample(_metrics(agent["ip"], NODE_PORT), name, labels)
    log = _podman("exec", agent["name"], "tail", "-n", "3", "/var/log/postfix.log") if value == before else ""
    assert value == before + 1, f"{name}{{{labels}}} stayed {before}; the mail log ends with:\n{log}"
    text = _metrics(agent["ip"], NODE_PORT)
    assert _sample(text, name, f'sending_ip="{agent["ip"]}",status="bounced"') == 0
