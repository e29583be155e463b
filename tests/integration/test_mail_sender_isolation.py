"""Tenant sender isolation on one shared native mail host, converged from a stack config.

Two tenants send from the same podman host: tenant A with two domains, tenant B with one, each domain
with its stack-made ``postmaster@`` mailbox and its own DKIM key published in the local BIND. The host
vars come from ``mailhosts.plan_host_vars`` (so the login → domains map is the stack's), the playbook is
the real one. A's login tries to send as B on 587 and 465 (envelope, then From:/Sender: forgeries) and
is refused; mail claiming a tenant domain on port 25 reaches local mailboxes unsigned; A sending as A is
signed, delivered, read back over IMAPS and verified by dkimpy against the published keys.
"""

from __future__ import annotations

import email
import email.utils
import imaplib
import smtplib
import ssl
import subprocess
import time
import uuid

import dkim
import pytest

from modules.ansible import mailhosts, runner
from modules.config.model import StackConfig
from modules.dns import dkim as dns_dkim
from tests.infra.support import Lab, dns_txt, publish_dkim

pytestmark = pytest.mark.services

ZONE = "penguinmails.test"
SELECTOR = "pm1"
PORTS = (587, 465)


def _client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # dev hosts have self-signed certificates
    return context


@pytest.fixture(scope="module")
def shared(tmp_path_factory, devenv_env):
    """One host carrying tenant A (a1, a2) and tenant B (b), converged twice from the stack's plan."""
    folder = tmp_path_factory.mktemp("sender-isolation")
    lab = Lab(folder)
    tag = uuid.uuid4().hex[:8]
    domains = {"a1": f"a{tag}.{ZONE}", "a2": f"a2{tag}.{ZONE}", "b": f"b{tag}.{ZONE}"}
    config = StackConfig.model_validate(
        {
            "environment": "dev",
            "fleet": {"nodes": 1, "rdns_domain": f"fleet{tag}.{ZONE}"},
            "dns": {"zones": [{"name": ZONE}]},
            "tenants": [
                {"slug": "tenant-a", "domains": [{"name": domains["a1"]}, {"name": domains["a2"]}]},
                {"slug": "tenant-b", "domains": [{"name": domains["b"]}]},
            ],
        }
    )
    try:
        (node,) = config.fleet.node_names()
        host = lab.create(node, config.fleet.node_fqdn(node))
        keys, passwords = [], {}
        for domain in domains.values():
            private_pem, public_b64 = dns_dkim.generate_key()
            publish_dkim(
                devenv_env, ZONE, dns_dkim.dkim_name(SELECTOR, domain), dns_dkim.dkim_txt(public_b64)
            )
            keys.append({"domain": domain, "selector": SELECTOR, "private_key": private_pem})
            passwords[mailhosts.postmaster_address(domain)] = uuid.uuid4().hex
        host_vars = mailhosts.plan_host_vars(config, [host])
        secret_vars = {
            "opendkim_keys": keys,
            "dovecot_users": [{"address": a, "password": p} for a, p in sorted(passwords.items())],
        }
        text = lab.inventory(host_vars=host_vars)
        runs = []
        for _ in range(2):
            runs.append(
                runner.run_playbook(
                    "mailhost.yml",
                    text,
                    stack=lab.prefix,
                    extra_vars=mailhosts.playbook_vars(config),
                    secret_vars=secret_vars,
                )
            )
        yield {
            "lab": lab,
            "host": host,
            "node": node,
            "domains": domains,
            "passwords": passwords,
            "host_vars": host_vars[node],
            "runs": runs,
            "env": devenv_env,
        }
    finally:
        lab.close()


def _login(shared, key: str) -> tuple[str, str]:
    address = mailhosts.postmaster_address(shared["domains"][key])
    return address, shared["passwords"][address]


def _message(sender_headers: str, to: str, marker: str) -> str:
    return (
        f"{sender_headers}\r\nTo: {to}\r\nSubject: isolation {marker}\r\n"
        f"Message-ID: <{marker}@test.invalid>\r\nDate: {email.utils.formatdate()}\r\n\r\nBody {marker}.\r\n"
    )


def _submit(ip: str, port: int, login: tuple[str, str] | None, envelope: str, rcpt: str, message: str):
    """Send one message; returns the refusals dict of smtplib (raises on refusal of all recipients)."""
    if port == 465:
        smtp = smtplib.SMTP_SSL(ip, port, timeout=60, context=_client_tls())
    else:
        smtp = smtplib.SMTP(ip, port, timeout=60)
    with smtp:
        if port != 465:
            smtp.starttls(context=_client_tls())
        if login:
            smtp.login(*login)
        return smtp.sendmail(envelope, [rcpt], message)


def _read_back(ip: str, login: tuple[str, str], marker: str, wait: float = 60) -> bytes:
    deadline = time.monotonic() + wait
    while True:
        with imaplib.IMAP4_SSL(ip, 993, ssl_context=_client_tls(), timeout=30) as imap:
            imap.login(*login)
            imap.select("INBOX")
            _, found = imap.search(None, "SUBJECT", f'"isolation {marker}"')
            if found[0]:
                _, data = imap.fetch(found[0].split()[-1], "(RFC822)")
                return data[0][1]
        if time.monotonic() > deadline:
            raise AssertionError(f"message {marker} did not arrive in {login[0]}'s INBOX within {wait:.0f} s")
        time.sleep(1)


def _on_host(shared, command: str) -> str:
    name = shared["lab"].podman.container_name(shared["node"])
    done = subprocess.run(
        ["podman", "exec", name, "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_plan_gives_each_login_its_own_tenant_domains_only(shared):
    domains = shared["domains"]
    plan = {e["login"]: e["domains"] for e in shared["host_vars"]["postfix_sender_logins"]}
    tenant_a = sorted([domains["a1"], domains["a2"]])
    assert plan == {
        f"postmaster@{domains['a1']}": tenant_a,
        f"postmaster@{domains['a2']}": tenant_a,
        f"postmaster@{domains['b']}": [domains["b"]],
    }
    assert shared["host_vars"]["postfix_inet_protocols"] == "ipv4"


def test_converge_succeeds_and_second_run_changes_nothing(shared):
    first, second = shared["runs"]
    node = shared["node"]
    assert first.hosts[node].failed == 0 and first.hosts[node].changed > 10
    assert second.hosts[node].changed == 0 and second.hosts[node].failed == 0


def test_smtp_listens_on_ipv4_only_and_the_sender_milter_on_loopback(shared):
    assert _on_host(shared, "postconf -h inet_protocols").strip() == "ipv4"
    listeners = [line.split()[3] for line in _on_host(shared, "ss -Hltn").splitlines()]
    for port in (25, 465, 587):
        assert f"0.0.0.0:{port}" in listeners
        assert not any(a.endswith(f":{port}") and a.startswith("[") for a in listeners), listeners
    assert "127.0.0.1:8893" in listeners
    assert not any(a.endswith(":8893") and not a.startswith("127.0.0.1") for a in listeners), listeners


@pytest.mark.parametrize("port", PORTS)
@pytest.mark.parametrize("as_domain", ["a1", "a2"])
def test_tenant_sends_as_its_domains_signed_delivered_and_verified(shared, port, as_domain):
    ip, domains = shared["host"]["ip"], shared["domains"]
    sender = f"news@{domains[as_domain]}"
    marker = uuid.uuid4().hex
    recipient = _login(shared, "b")
    message = _message(f'From: "Tenant A News" <{sender}>', recipient[0], marker)
    assert _submit(ip, port, _login(shared, "a1"), sender, recipient[0], message) == {}

    raw = _read_back(ip, recipient, marker)
    signatures = [v for k, v in email.message_from_bytes(raw).items() if k.lower() == "dkim-signature"]
    assert len(signatures) == 1, signatures
    assert f"d={domains[as_domain]};" in signatures[0].replace(" ", "") and f"s={SELECTOR}" in signatures[0]
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: b"".join(dns_txt(shared["env"], name)))


def test_dkim_verification_fails_against_another_tenants_key(shared):
    # The verifications above must not pass vacuously: a1's signature checked against b's key fails.
    ip, domains = shared["host"]["ip"], shared["domains"]
    marker = uuid.uuid4().hex
    recipient = _login(shared, "b")
    sender = f"news@{domains['a1']}"
    _submit(
        ip, 587, _login(shared, "a1"), sender, recipient[0], _message(f"From: {sender}", recipient[0], marker)
    )
    raw = _read_back(ip, recipient, marker)
    b_key = b"".join(dns_txt(shared["env"], f"{SELECTOR}._domainkey.{domains['b']}"))
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: b_key) is False


@pytest.mark.parametrize("port", PORTS)
@pytest.mark.parametrize("envelope", ["ceo@{b}", "postmaster@{b}", "someone@example.org", "ceo@sub.{a1}"])
def test_envelope_sender_the_login_does_not_own_is_refused(shared, port, envelope):
    ip, domains = shared["host"]["ip"], shared["domains"]
    sender = envelope.format(**domains)
    recipient = _login(shared, "b")[0]
    message = _message(f"From: {sender}", recipient, uuid.uuid4().hex)
    with pytest.raises((smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused)) as caught:
        _submit(ip, port, _login(shared, "a1"), sender, recipient, message)
    error = caught.value
    code, text = (
        next(iter(error.recipients.values()))
        if isinstance(error, smtplib.SMTPRecipientsRefused)
        else (error.smtp_code, error.smtp_error)
    )
    assert code == 553 and b"not owned by user" in text, (code, text)


FORGED_HEADERS = {
    "plain": "From: ceo@{b}",
    "display name shows A": 'From: "postmaster@{a1}" <ceo@{b}>',
    "display name shows B": 'From: "ceo@{b}" <news@{a1}>',
    "encoded display name": "From: =?utf-8?q?ceo=40{b}?= <news@{a1}>",
    "comment": "From: ceo@{b} (news@{a1})",
    "two mailboxes": "From: news@{a1}, ceo@{b}",
    "two From fields": "From: news@{a1}\r\nFrom: ceo@{b}",
    "Sender of B": "From: news@{a1}\r\nSender: ceo@{b}",
    "From of B, Sender of A": "From: ceo@{b}\r\nSender: news@{a1}",
    "quoted local part": 'From: "ceo@{b}"@{a1}',
    "unparsable": "From: news@{a1} <ceo@{b}>",
    "no From": "Sender: news@{a1}",
    "upper case B": "From: CEO@{B}",
}


@pytest.mark.parametrize("port", PORTS)
@pytest.mark.parametrize("forged", sorted(FORGED_HEADERS))
def test_header_sender_of_another_tenant_is_refused(shared, port, forged):
    ip, domains = shared["host"]["ip"], shared["domains"]
    names = {**domains, "B": domains["b"].upper()}
    recipient = _login(shared, "b")[0]
    message = _message(FORGED_HEADERS[forged].format(**names), recipient, uuid.uuid4().hex)
    with pytest.raises(smtplib.SMTPDataError) as caught:
        _submit(ip, port, _login(shared, "a1"), f"news@{domains['a1']}", recipient, message)
    assert caught.value.smtp_code == 550 and b"Sender rejected" in caught.value.smtp_error


def test_null_envelope_with_another_tenants_from_is_refused(shared):
    ip, domains = shared["host"]["ip"], shared["domains"]
    recipient = _login(shared, "b")[0]
    message = _message(f"From: ceo@{domains['b']}", recipient, uuid.uuid4().hex)
    with pytest.raises(smtplib.SMTPDataError) as caught:
        _submit(ip, 587, _login(shared, "a1"), "", recipient, message)
    assert caught.value.smtp_code == 550


def test_port_25_offers_no_auth(shared):
    with smtplib.SMTP(shared["host"]["ip"], 25, timeout=30) as smtp:
        smtp.starttls(context=_client_tls())
        smtp.ehlo()
        assert "auth" not in smtp.esmtp_features


@pytest.mark.parametrize("claimed", ["b", "a1"])
def test_port_25_mail_claiming_a_tenant_domain_is_delivered_locally_and_never_signed(shared, claimed):
    ip, domains = shared["host"]["ip"], shared["domains"]
    sender = f"ceo@{domains[claimed]}"
    recipient = _login(shared, "a1")
    marker = uuid.uuid4().hex
    assert _submit_25(ip, sender, recipient[0], _message(f"From: {sender}", recipient[0], marker)) == {}
    raw = _read_back(ip, recipient, marker)
    assert "dkim-signature" not in {k.lower() for k in email.message_from_bytes(raw).keys()}


def test_port_25_mail_claiming_a_tenant_domain_cannot_relay(shared):
    ip, domains = shared["host"]["ip"], shared["domains"]
    sender = f"ceo@{domains['b']}"
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        _submit_25(ip, sender, "someone@example.org", _message(f"From: {sender}", "x", uuid.uuid4().hex))


def _submit_25(ip: str, envelope: str, rcpt: str, message: str):
    with smtplib.SMTP(ip, 25, timeout=60) as smtp:
        smtp.starttls(context=_client_tls())
        return smtp.sendmail(envelope, [rcpt], message)
