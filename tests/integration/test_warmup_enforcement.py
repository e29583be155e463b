"""The warm-up caps and the quarantine routes on a real Postfix: the daily cap through postfwd, the hourly
one through the transport, and a DNSBL listing of the host's IP pausing its domain through the sender
routes agent.

One converged native host (mx-1) with a daily cap of 4 on its sending IP, and a second podman host (sink)
running a small SMTP server that accepts, defers (451) or bounces (550) by recipient name, so the host's
log gets real ``status=sent/deferred/bounced`` lines of the ``smtp-main`` transport. Four recipients are
accepted, the fifth is answered 450 4.7.1 at RCPT: the client keeps it (nothing is queued for it) and
its retry goes through once postfwd's window is over (the test ends the window by deleting the counter).
The log lines are parsed into per-IP figures by ``modules.reputation.postfix_log``.

The quarantine chain is the real one: a private BIND serves the DNSBL zone, the penguinmails exporter
(in this process) checks the host's IP every few seconds and serves its routes endpoint on podman's
bridge, and the host's agent polls it. Listing the IP pauses the domain: submission answers 450 4.7.1 (the
client keeps the message) and queued mail is deferred; clearing it lets the same message out.
"""

from __future__ import annotations

import email.utils
import json
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devenv.bind import free_port
from devenv.podman_hosts import ensure_default_bridge
from modules.ansible import runner
from modules.config.reputation import DEV_ZONE
from modules.dns import dkim as dns_dkim
from modules.dns.rfc2136 import Change
from modules.monitoring.exporter import Exporter, ExporterConfig
from modules.reputation import postfix_log
from modules.reputation.dnsbl import reverse_ip
from tests.infra.support import Lab, native_host_vars
from tests.support.dns import client, private_bind

pytestmark = pytest.mark.services

ZONE = "penguinmails.test"
DAILY_CAP = 4
ROUTES_TOKEN = uuid.uuid4().hex + uuid.uuid4().hex
SINK = r"""
import asyncore, smtpd, warnings
warnings.simplefilter("ignore")
class Sink(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        local = rcpttos[0].split("@")[0]
        if local.startswith("bounce"):
            return "550 5.1.1 no such user here"
        if local.startswith("defer"):
            return "451 4.3.0 try again later"
        return None
Sink(("0.0.0.0", 25), None, decode_data=False)
asyncore.loop()
"""


def _client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # dev hosts have self-signed certificates
    return context


def _end_window(capped) -> None:
    """Delete postfwd's counter of the IP, as the end of its window does (postfwd exits 1 even then)."""
    done = subprocess.run(
        [
            "podman",
            "exec",
            capped["lab"].podman.container_name("mx-1"),
            "/usr/sbin/postfwd",
            "--delrate=pm_sending_ip=main",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "rate cache item 'pm_sending_ip=main' removed" in done.stdout, done.stdout + done.stderr


def _exec(lab: Lab, name: str, *argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["podman", "exec", "-i", lab.podman.container_name(name), *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{argv}: {done.stderr[-500:]}"
    return done.stdout


@pytest.fixture(scope="module")
def capped(tmp_path_factory, devenv_env):
    folder = tmp_path_factory.mktemp("warmup-enforcement")
    lab = Lab(folder)
    domain = f"w{uuid.uuid4().hex[:8]}.{ZONE}"
    bind_context = private_bind(folder / "dnsbl", [DEV_ZONE])
    bind = bind_context.__enter__()
    exporter = None
    try:
        host = lab.create("mx-1", f"mx-1.{domain}")
        gateway = ensure_default_bridge()
        exporter = Exporter(
            ExporterConfig(
                stack=lab.prefix,
                sending_ips=[host["ip"]],
                dnsbl_zones=[{"name": DEV_ZONE}],
                resolvers=[f"{bind.host}:{bind.port}"],
                check_interval_seconds=2,
                routes_token=ROUTES_TOKEN,
            ),
            f"127.0.0.1:{free_port('127.0.0.1')}",
            routes_listen=f"{gateway}:{free_port(gateway)}",
        ).start()
        sink = lab.create("sink", f"sink.{domain}")
        _exec(lab, "sink", "sh", "-c", "cat > /tmp/sink.py", stdin=SINK)
        subprocess.run(
            ["podman", "exec", "-d", lab.podman.container_name("sink"), "python3", "/tmp/sink.py"],
            check=True,
            timeout=60,
        )
        password = uuid.uuid4().hex
        host_vars = native_host_vars(host, [domain])
        # Late in the plan (no pause per destination: every test recipient goes to the one sink), with the
        # plan's hourly cap spacing deliveries over the whole transport.
        host_vars["postfix_sending_ips"][0].update({"warmup_stage": 18, "hourly_cap": 7200})
        host_vars["postfix_warmup_daily_caps"] = [
            {"name": "main", "daily_cap": DAILY_CAP, "provider_caps": {"google": 2}}
        ]
        host_vars["postfix_sender_routes_url"] = exporter.routes.url
        host_vars["postfix_sender_routes_interval"] = 2
        host_vars["postfix_sender_routes_tenants"] = {domain: "tenant-w"}
        private_pem, _public = dns_dkim.generate_key()  # signs; nobody verifies here
        secret_vars = {
            "dovecot_users": [{"address": f"postmaster@{domain}", "password": password}],
            "opendkim_keys": [{"domain": domain, "selector": "pm1", "private_key": private_pem}],
            "postfix_sender_routes_token": ROUTES_TOKEN,
        }
        text = lab.inventory(names=["mx-1"], host_vars={"mx-1": host_vars})
        runs = []
        for _ in range(2):
            started = time.monotonic()
            runs.append(runner.run_playbook("mailhost.yml", text, stack=lab.prefix, secret_vars=secret_vars))
            runs[-1].wall = time.monotonic() - started
        yield {
            "lab": lab,
            "host": host,
            "sink": sink,
            "domain": domain,
            "login": (f"postmaster@{domain}", password),
            "runs": runs,
            "folder": folder,
            "bind": bind,
            "exporter": exporter,
        }
    finally:
        lab.close()
        if exporter is not None:
            exporter.stop()
        bind_context.__exit__(None, None, None)


def _send(capped, rcpt: str) -> dict:
    """Submit one message on 587 as the tenant; smtplib raises SMTPRecipientsRefused on a refusal."""
    login, password = capped["login"]
    marker = uuid.uuid4().hex
    message = (
        f"From: {login}\r\nTo: {rcpt}\r\nSubject: warm-up {marker}\r\n"
        f"Message-ID: <{marker}@{capped['domain']}>\r\nDate: {email.utils.formatdate()}\r\n\r\nHello.\r\n"
    )
    with smtplib.SMTP(capped["host"]["ip"], 587, timeout=60) as smtp:
        smtp.starttls(context=_client_tls())
        smtp.login(login, password)
        return smtp.sendmail(login, [rcpt], message)


def _queued_recipients(capped) -> list[str]:
    out = _exec(capped["lab"], "mx-1", "postqueue", "-j")
    return [r["address"] for line in out.splitlines() if line for r in json.loads(line)["recipients"]]


def _log(capped) -> list[str]:
    return _exec(capped["lab"], "mx-1", "cat", "/var/log/postfix.log").splitlines()


def test_converge_succeeds_and_a_second_run_changes_nothing(capped):
    first, second = capped["runs"]
    assert first.hosts["mx-1"].failed == 0
    assert second.hosts["mx-1"].changed == 0 and second.hosts["mx-1"].failed == 0


def test_postfwd_listens_on_loopback_only_and_only_submission_asks_it(capped):
    lab = capped["lab"]
    probe = "import socket, sys; socket.create_connection((sys.argv[1], 10040), timeout=5).close()"
    _exec(lab, "mx-1", "python3", "-c", probe, "127.0.0.1")
    with pytest.raises(OSError):
        socket.create_connection((capped["host"]["ip"], 10040), timeout=5).close()
    for service in ("submission/inet", "submissions/inet"):
        restriction = _exec(lab, "mx-1", "postconf", "-P", f"{service}/smtpd_recipient_restrictions")
        assert "check_policy_service inet:127.0.0.1:10040, permit_sasl_authenticated, reject" in restriction
    # Port 25 (inbound mail, unauthenticated) never reaches the policy: a forged tenant sender cannot use
    # up the tenant's cap.
    assert "check_policy_service" not in _exec(lab, "mx-1", "postconf", "-h", "smtpd_recipient_restrictions")


def test_the_hourly_cap_spaces_deliveries_over_the_transport(capped):
    delay = _exec(capped["lab"], "mx-1", "postconf", "-h", "smtp-main_transport_rate_delay")
    assert delay.strip() == "1s"  # 3600 / 7200 rounded up: never more than 7200 an hour


def test_the_daily_cap_accepts_n_and_defers_the_next_without_losing_it(capped):
    sink = f"[{capped['sink']['ip']}]"
    accepted = [f"ok1@{sink}", f"ok2@{sink}", f"defer1@{sink}", f"bounce1@{sink}"]
    assert len(accepted) == DAILY_CAP
    for rcpt in accepted:
        assert _send(capped, rcpt) == {}

    over = f"ok3@{sink}"
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        _send(capped, over)
    code, text = refused.value.recipients[over]
    assert (
        code == 450 and text.startswith(b"4.7.1 ") and b"Daily warm-up cap of sending IP main reached" in text
    )
    # A 4xx: the client keeps the message. Postfix took nothing (no queue file, a NOQUEUE line) …
    assert over not in _queued_recipients(capped)
    assert any(
        "NOQUEUE: reject: RCPT" in line and "<ok3@" in line and ": 450 4.7.1" in line for line in _log(capped)
    )
    # … the retry is refused the same way (refusals do not count) …
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        _send(capped, over)
    # … mail to the host's own mailboxes does not count against the IP …
    login, _ = capped["login"]
    assert _send(capped, login) == {}
    # … and once the window is over (its counter gone) the same message goes out.
    _end_window(capped)
    assert _send(capped, over) == {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if any("to=<ok3@" in line and "status=sent" in line for line in _log(capped)):
            break
        time.sleep(2)
    else:
        pytest.fail("the retried message was not delivered to the sink within 90 s")


def test_the_provider_cap_defers_a_large_receiver_before_the_total(capped):
    # google's cap is 2: its third recipient is deferred even though the total has room again.
    _end_window(capped)
    for n in (1, 2):
        assert _send(capped, f"user{n}@gmail.com") == {}
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        _send(capped, "user3@gmail.com")
    code, text = refused.value.recipients["user3@gmail.com"]
    assert code == 450 and b"for google reached" in text


def test_the_log_parser_counts_sent_deferred_and_bounced_per_ip(capped):
    deadline, lines = time.monotonic() + 180, []
    while time.monotonic() < deadline:
        lines = _log(capped)
        statuses = {
            s
            for s in ("status=sent", "status=deferred", "status=bounced")
            if any(s in line for line in lines)
        }
        if len(statuses) == 3:
            break
        time.sleep(2)
    sample = capped["folder"] / "postfix.log"
    sample.write_text("\n".join(lines) + "\n")  # kept under pytest's basetemp: the unit tests' sample
    now = datetime.now(UTC) + timedelta(minutes=1)
    found = postfix_log.count(lines, now=now, default_ip="main")
    assert set(found) == {"main"}, found
    main = found["main"]
    assert main.delivered >= 2 and main.deferred >= 1 and main.bounced >= 1, main
    assert main.last_sent_at is not None and main.last_sent_at <= now
    assert postfix_log.count(lines, now=now, since=now, default_ip="main") == {}
    print(f"sample log: {Path(sample)}")


def _listing(capped, action: str) -> None:
    name = f"{reverse_ip(capped['host']['ip'])}.{DEV_ZONE}."
    client(capped["bind"]).update(
        DEV_ZONE, [Change(action, name, "A", "127.0.0.2", *([60] if action == "add" else []))]
    )


def _routes(capped) -> str:
    return _exec(capped["lab"], "mx-1", "cat", "/etc/postfix/sender_routes")


def _wait(what: str, predicate, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(1)
    pytest.fail(f"{what} within {seconds:.0f} s")


def test_a_dnsbl_listing_pauses_the_domain_on_the_host_and_clearing_it_lets_the_mail_out(capped):
    """Last in the module (it sends after the log parser test has its figures)."""
    token_file = _exec(capped["lab"], "mx-1", "stat", "-c", "%a %U", "/etc/penguinmails/sender-routes.json")
    assert token_file.split() == ["600", "root"]
    for run in capped["runs"]:  # the token is in no Ansible output (events, stdout) of either converge
        artifacts = [p for p in Path(run.artifact_dir).rglob("*") if p.is_file()]
        assert artifacts, run.artifact_dir
        assert not [p for p in artifacts if ROUTES_TOKEN in p.read_text(errors="replace")]
    assert "@" not in _routes(capped).replace("# ", "")  # clean IP: no override
    _end_window(capped)
    _listing(capped, "add")
    started = time.monotonic()
    paused = _wait(
        "the agent did not pause the domain after the listing",
        lambda: "retry:4.7.1" in _routes(capped) and _routes(capped),
    )
    print(f"\nlisting -> domain paused on the host: {time.monotonic() - started:.1f} s")
    assert f"@{capped['domain']} retry:4.7.1 sending IP {capped['host']['ip']} is quarantined" in paused
    assert capped["exporter"].loop.last.quarantined() == {capped["host"]["ip"]: True}

    # Submission on 587 is answered 450 4.7.1 with the reason (Postfix resolves the recipient's transport
    # at RCPT): the tenant's client keeps the message and retries, nothing is queued.
    refused_rcpt = f"refused{uuid.uuid4().hex[:6]}@[{capped['sink']['ip']}]"
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        _send(capped, refused_rcpt)
    code, text = refused.value.recipients[refused_rcpt]
    assert code == 450 and text.startswith(b"4.7.1 ") and b"is quarantined" in text, text
    assert refused_rcpt not in _queued_recipients(capped)
    # Mail already queued (here: submitted on the host itself, through pickup) is deferred, never sent.
    rcpt = f"held{uuid.uuid4().hex[:6]}@[{capped['sink']['ip']}]"
    _exec(
        capped["lab"], "mx-1", "/usr/sbin/sendmail", "-f", capped["login"][0], rcpt,
        stdin=f"Subject: held {rcpt}\n\nWaits for the listing to clear.\n",
    )  # fmt: skip
    deferred = _wait(
        "the queued message was not deferred with the quarantine reason",
        lambda: [
            line
            for line in _log(capped)
            if f"to=<{rcpt}>" in line and "status=deferred" in line and "is quarantined" in line
        ],
    )
    assert "relay=none" in deferred[0]
    assert rcpt in _queued_recipients(capped)
    assert not any(f"to=<{rcpt}>" in line and "status=sent" in line for line in _log(capped))

    _listing(capped, "delete")
    _wait(
        "the agent did not lift the pause after the listing cleared", lambda: "retry:" not in _routes(capped)
    )
    _exec(capped["lab"], "mx-1", "postqueue", "-f")
    _wait(
        "the held message was not delivered once the listing cleared",
        lambda: any(f"to=<{rcpt}>" in line and "status=sent" in line for line in _log(capped)),
        seconds=90,
    )
    assert rcpt not in _queued_recipients(capped)
    assert _send(capped, refused_rcpt) == {}  # and submission takes the tenant's mail again
