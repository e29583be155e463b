"""The warm-up caps the job decides reach a real Postfix host through the sender routes agent, without a
converge.

One native host converged with what MailHosts gives it (``plan_host_vars``: the plan's start-day caps as
the seed) and an agent polling a stand-in routes endpoint: the exporter's real ``RoutesServer`` on
podman's bridge, answering a clean DNSBL round and a warm-up cycle this test sets. The cycle's daily cap
N for the host's IP becomes postfwd's rule: N recipients over authenticated submission are accepted, the
next is answered 450 4.7.1 and stays with the client (nothing queued); a raised cap lets it through; with
the endpoint down the caps stay; and a converge afterwards, whose variables still hold the start-day
caps, changes nothing, because the role renders what the agent applied (its state file), not its own
variables.
"""

from __future__ import annotations

import email.utils
import json
import math
import smtplib
import ssl
import subprocess
import time
import uuid

import pytest

from devenv.bind import free_port
from devenv.podman_hosts import ensure_default_bridge
from modules.ansible import mailhosts, runner
from modules.config.model import StackConfig
from modules.dns import dkim as dns_dkim
from modules.monitoring.routes import RoutesServer
from modules.monitoring.warmup_loop import WarmupRound
from modules.reputation.checker import Round
from modules.reputation.dnsbl import IpVerdict, Outcome
from modules.reputation.warmup import Caps, IpState, WarmupPlan
from modules.reputation.warmup_store import StoredPlan
from tests.infra.support import Lab

pytestmark = pytest.mark.services

ZONE = "penguinmails.test"
START_DAY = 2
TOKEN = uuid.uuid4().hex + uuid.uuid4().hex
RULES = "/etc/postfix/postfwd.cf"
LOG = "/var/log/penguinmails/sender-routes.log"


def _exec(lab: Lab, *argv: str, check: bool = True) -> str:
    done = subprocess.run(
        ["podman", "exec", lab.podman.container_name("mx-1"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 or not check, f"{argv}: {done.stderr[-500:]}"
    return done.stdout


def _cycle(ip: str, day: int, daily: int, hourly: int) -> WarmupRound:
    caps = Caps(day, daily, hourly, {})
    return WarmupRound(
        time.time(), plans=(StoredPlan(ip, "warming", WarmupPlan(), IpState(day), caps, None, None),)
    )


def _wait(what: str, predicate, seconds: float = 90):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(1)
    pytest.fail(f"{what} within {seconds:.0f} s")


@pytest.fixture(scope="module")
def host(tmp_path_factory, devenv_env):
    lab = Lab(tmp_path_factory.mktemp("warmup-caps-agent"))
    domain = f"c{uuid.uuid4().hex[:8]}.{ZONE}"
    server = None
    try:
        node = lab.create("mx-1", f"mx-1.{domain}")
        endpoint = {
            "round": Round(1.0, 0.1, (), (IpVerdict(node["ip"], Outcome.CLEAN, ()),), {}),
            "warmup": None,
        }
        gateway = ensure_default_bridge()
        server = RoutesServer(
            gateway,
            free_port(gateway),
            TOKEN,
            lab.prefix,
            lambda: endpoint["round"],
            warmup=lambda: endpoint["warmup"],
        ).start()
        config = StackConfig.model_validate(
            {
                "environment": "dev",
                "fleet": {"nodes": 1, "rdns_domain": f"fleet.{ZONE}"},
                "dns": {"zones": [{"name": ZONE}]},
                "tenants": [{"slug": "tenant-c", "domains": [{"name": domain, "sending_node": 1}]}],
                "warmup": {"start_day": START_DAY},
            }
        )
        (planned,) = mailhosts.plan_host_vars(
            config, [{**node, "name": config.fleet.node_names()[0]}]
        ).values()
        host_vars = {**planned, **mailhosts.sender_routes_vars(server.url, 2)}
        password = uuid.uuid4().hex
        private_pem, _public = dns_dkim.generate_key()
        secrets = {
            "dovecot_users": [{"address": f"postmaster@{domain}", "password": password}],
            "opendkim_keys": [{"domain": domain, "selector": "pm1", "private_key": private_pem}],
            "postfix_sender_routes_token": TOKEN,
        }
        text = lab.inventory(
            names=["mx-1"], host_vars={"mx-1": host_vars}, group_vars=mailhosts.playbook_vars(config)
        )

        def converge(**changes):
            inventory = text
            if changes:
                changed = {**host_vars, **changes}
                inventory = lab.inventory(
                    names=["mx-1"], host_vars={"mx-1": changed}, group_vars=mailhosts.playbook_vars(config)
                )
            return runner.run_playbook("mailhost.yml", inventory, stack=lab.prefix, secret_vars=secrets)

        yield {
            "lab": lab,
            "ip": node["ip"],
            "domain": domain,
            "login": (f"postmaster@{domain}", password),
            "endpoint": endpoint,
            "server": server,
            "converge": converge,
            "virtual_domains": host_vars["postfix_virtual_domains"],
            "first": converge(),
        }
    finally:
        lab.close()
        if server is not None:
            server.stop()


def _submit(host, recipients: list[str]) -> dict:
    """One message to ``recipients`` on 587 as the tenant: the recipients Postfix refused, with its answers."""
    login, password = host["login"]
    marker = uuid.uuid4().hex
    message = (
        f"From: {login}\r\nTo: {login}\r\nSubject: caps {marker}\r\n"
        f"Message-ID: <{marker}@{host['domain']}>\r\nDate: {email.utils.formatdate()}\r\n\r\nHello.\r\n"
    )
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # dev hosts: self-signed
    with smtplib.SMTP(host["ip"], 587, timeout=60) as smtp:
        smtp.starttls(context=context)
        smtp.login(login, password)
        try:
            return smtp.sendmail(login, recipients, message)
        except smtplib.SMTPRecipientsRefused as refused:
            return refused.recipients


def _queued(host) -> set[str]:
    out = _exec(host["lab"], "postqueue", "-j")
    return {r["address"] for line in out.splitlines() if line for r in json.loads(line)["recipients"]}


def _recipients(n: int) -> list[str]:
    # TEST-NET: accepted at RCPT, then waits in the queue (nothing here is about delivery).
    return [f"r{uuid.uuid4().hex[:8]}@[192.0.2.1]" for _ in range(n)]


def _rate_delay(host) -> str:
    return _exec(host["lab"], "postconf", "-h", "smtp-main_transport_rate_delay").strip()


def _metric(host, name: str) -> float | None:
    text = _exec(
        host["lab"], "cat", "/var/lib/prometheus/node-exporter/penguinmails_warmup_caps.prom", check=False
    )
    found = [line.split()[-1] for line in text.splitlines() if line.startswith(f'{name}{{ip="{host["ip"]}"')]
    return float(found[0]) if found else None


def test_a_fresh_host_enforces_the_start_days_caps_before_the_agent_has_any(host):
    assert host["first"].hosts["mx-1"].failed == 0
    start = WarmupPlan().caps(START_DAY)
    # The agent is up and has answers, but the warm-up loop has not run (warmup null): the seed stays.
    _wait("the agent did not report its caps", lambda: _metric(host, "penguinmails_warmup_host_daily_cap"))
    assert _metric(host, "penguinmails_warmup_host_daily_cap") == start.daily
    rules = _exec(host["lab"], "cat", RULES)
    assert (
        f"action=rate(pm_sending_ip/{start.daily}/86400/450 4.7.1 Daily warm-up cap of sending IP main"
        in rules
    )
    assert (
        f"id=CAP-main-google ; pm_sending_ip==main ; action=rate(pm_sending_ip/{start.providers['google']}/"
        in rules
    )
    assert _rate_delay(host) == f"{math.ceil(3600 / start.hourly)}s"
    restriction = _exec(host["lab"], "postconf", "-P", "submission/inet/smtpd_recipient_restrictions")
    assert "check_policy_service inet:127.0.0.1:10040" in restriction
    assert (
        _exec(host["lab"], "sh", "-c", "test -e /var/lib/penguinmails/warmup-caps.json || echo absent")
        == "absent\n"
    )


def test_the_endpoints_cap_defers_the_next_recipient_to_the_client_and_a_raise_lets_it_through(host):
    host["endpoint"]["warmup"] = _cycle(host["ip"], 3, daily=3, hourly=1800)
    # The metrics are written last in a pass: postfwd then has the new rules and answers again.
    _wait(
        "the agent did not apply the daily cap 3",
        lambda: _metric(host, "penguinmails_warmup_host_daily_cap") == 3,
    )
    assert "pm_sending_ip/3/86400/" in _exec(host["lab"], "cat", RULES)
    assert _rate_delay(host) == "2s"

    recipients = _recipients(4)
    refused = _submit(host, recipients)
    assert list(refused) == [recipients[3]], refused
    code, text = refused[recipients[3]]
    assert (
        code == 450 and text.startswith(b"4.7.1 ") and b"Daily warm-up cap of sending IP main reached" in text
    )
    queued = _queued(host)
    assert set(recipients[:3]) <= queued and recipients[3] not in queued  # the client keeps it: not lost

    host["endpoint"]["warmup"] = _cycle(host["ip"], 4, daily=5, hourly=1800)
    _wait(
        "the agent did not raise the daily cap to 5",
        lambda: _metric(host, "penguinmails_warmup_host_daily_cap") == 5,
    )
    assert "pm_sending_ip/5/86400/" in _exec(host["lab"], "cat", RULES)
    assert _submit(host, [recipients[3]]) == {}
    assert recipients[3] in _queued(host)


def test_with_the_endpoint_down_the_host_keeps_the_caps_it_has(host):
    before = _exec(host["lab"], "cat", RULES), _rate_delay(host)
    host["server"].stop()
    _wait(
        "the agent did not notice the endpoint is down",
        lambda: "keeping the current routes and caps" in _exec(host["lab"], "cat", LOG),
    )
    assert (_exec(host["lab"], "cat", RULES), _rate_delay(host)) == before
    assert _metric(host, "penguinmails_warmup_host_daily_cap") == 5
    # Still capped at 5 (not the seed's, nor uncapped): one recipient went since the raise, so 4 more do.
    recipients = _recipients(5)
    refused = _submit(host, recipients)
    assert list(refused) == [recipients[4]] and refused[recipients[4]][0] == 450, refused


def test_a_converge_after_the_agent_changed_the_caps_keeps_them(host):
    """The role renders what the agent applied (it reads the agent's state file before main.cf and
    postfwd.cf), so this converge, whose variables still carry the start-day caps, changes nothing: not a
    file, not a reload. Run with the endpoint down, so the agent cannot have re-applied them meanwhile."""
    run = host["converge"]()
    assert run.hosts["mx-1"].failed == 0 and run.hosts["mx-1"].changed == 0
    assert "pm_sending_ip/5/86400/" in _exec(host["lab"], "cat", RULES)
    assert _rate_delay(host) == "2s"


def test_a_converge_that_changes_postfwds_rules_keeps_the_agents_caps_and_counts(host):
    """A new local domain changes postfwd's rules: the role writes them with the agent's caps and restarts
    postfwd (its own handler: Debian's init script cannot stop it), whose counters survive the restart."""
    extra = f"local.{host['domain']}"
    run = host["converge"](postfix_virtual_domains=[*host["virtual_domains"], extra])
    assert run.hosts["mx-1"].failed == 0 and run.hosts["mx-1"].changed > 0
    rules = _exec(host["lab"], "cat", RULES)
    assert f"    recipient_domain=={extra}" in rules and "pm_sending_ip/5/86400/" in rules
    # The IP used its 5 since the raise: the next recipient is still deferred after the restart.
    (rcpt,) = _recipients(1)
    refused = _submit(host, [rcpt])
    assert refused.get(rcpt, (0,))[0] == 450, refused
