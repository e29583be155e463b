"""The native mail roles on a real podman host: converge, idempotence, host checks, mail end to end.

One host from the preinstalled mailhost image, its own SSH key and container prefix (removed at the
end). The DKIM key is made like the DNS component makes it and published in the local BIND; the
signature on the delivered copy is verified by dkimpy against that BIND.
"""

from __future__ import annotations

import email
import imaplib
import smtplib
import ssl
import time
import uuid

import dkim
import pytest

from modules.ansible import runner
from modules.dns import dkim as dns_dkim
from tests.infra.support import Lab, dns_txt, native_host_vars, publish_dkim, run_infra_checks

pytestmark = pytest.mark.services

ZONE = "penguinmails.test"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def _client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # dev hosts have self-signed certificates
    return context


@pytest.fixture(scope="module")
def converged(tmp_path_factory, devenv_env):
    """A host converged twice (the second run must be a no-op), with what the tests need to reach it."""
    folder = tmp_path_factory.mktemp("ansible-mailhost")
    lab = Lab(folder)
    domain = f"t{uuid.uuid4().hex[:8]}.{ZONE}"
    try:
        host = lab.create("mx-1", f"mx-1.{domain}")
        private_pem, public_b64 = dns_dkim.generate_key()
        selector = "pm1"
        publish_dkim(devenv_env, ZONE, dns_dkim.dkim_name(selector, domain), dns_dkim.dkim_txt(public_b64))
        passwords = {user: f"{user}-{uuid.uuid4().hex}" for user in ("alice", "bob")}
        secret_vars = {
            "opendkim_keys": [{"domain": domain, "selector": selector, "private_key": private_pem}],
            "dovecot_users": [{"address": f"{u}@{domain}", "password": p} for u, p in passwords.items()],
        }
        text = lab.inventory(host_vars={"mx-1": native_host_vars(host, [domain])})
        inventory_file = folder / "inventory.yml"
        inventory_file.write_text(text)
        runs = []
        for _ in range(2):
            started = time.monotonic()
            runs.append(runner.run_playbook("mailhost.yml", text, stack=lab.prefix, secret_vars=secret_vars))
            runs[-1].wall = time.monotonic() - started
        print(f"\nmailhost converge: first {runs[0].wall:.0f} s, second {runs[1].wall:.0f} s")
        yield {
            "lab": lab,
            "host": host,
            "domain": domain,
            "passwords": passwords,
            "private_pem": private_pem,
            "runs": runs,
            "inventory_file": inventory_file,
            "env": devenv_env,
        }
    finally:
        lab.close()


def test_first_converge_changes_the_host_and_second_changes_nothing(converged):
    first, second = converged["runs"]
    assert first.hosts["mx-1"].changed > 10
    assert first.hosts["mx-1"].failed == 0
    assert second.host_results() == {
        "mx-1": {**second.host_results()["mx-1"], "changed": 0, "failed": 0, "unreachable": 0}
    }
    assert all(stats.changed == 0 for stats in second.hosts.values())


def test_testinfra_host_checks_pass(converged):
    done = run_infra_checks(converged["inventory_file"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_artifacts_hold_no_secret(converged):
    run = converged["runs"][-1]
    folder = runner.state_dir() / "artifacts" / converged["lab"].prefix
    texts = [p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()]
    assert texts and run.artifact_dir
    key_lines = [line for line in converged["private_pem"].splitlines() if "-----" not in line]
    for text in texts:
        for password in converged["passwords"].values():
            assert password not in text
        assert not any(line in text for line in key_lines)


def test_mail_is_signed_delivered_by_lmtp_and_read_over_imaps(converged):
    ip, domain, passwords = converged["host"]["ip"], converged["domain"], converged["passwords"]
    marker = uuid.uuid4().hex
    message = (
        f"From: alice@{domain}\r\nTo: bob@{domain}\r\nSubject: hello {marker}\r\n"
        f"Message-ID: <{marker}@{domain}>\r\nDate: {email.utils.formatdate()}\r\n\r\nHello Bob, {marker}.\r\n"
    )
    with smtplib.SMTP(ip, 587, timeout=60) as smtp:
        smtp.starttls(context=_client_tls())
        smtp.login(f"alice@{domain}", passwords["alice"])
        assert smtp.sendmail(f"alice@{domain}", [f"bob@{domain}"], message) == {}

    raw = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not raw:
        with imaplib.IMAP4_SSL(ip, 993, ssl_context=_client_tls(), timeout=30) as imap:
            imap.login(f"bob@{domain}", passwords["bob"])
            imap.select("INBOX")
            _, found = imap.search(None, "SUBJECT", f'"hello {marker}"')
            if found[0]:
                _, data = imap.fetch(found[0].split()[-1], "(RFC822)")
                raw = data[0][1]
        if not raw:
            time.sleep(1)
    assert raw, "the message did not arrive in bob's INBOX within 60 s"
    text = raw.decode(errors="replace")
    assert "with LMTP" in text
    assert f"d={domain}" in text and "s=pm1" in text
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: b"".join(dns_txt(converged["env"], name)))


def test_dkim_verification_fails_against_another_key(converged):
    # The check above could pass vacuously if verification ignored DNS: a wrong published key must fail.
    _, other_public = dns_dkim.generate_key()
    domain = converged["domain"]
    signed = dkim.sign(
        f"From: x@{domain}\r\nTo: y@{domain}\r\nSubject: s\r\n\r\nbody\r\n".encode(),
        b"pm1",
        domain.encode(),
        converged["private_pem"].encode(),
    )
    body = f"From: x@{domain}\r\nTo: y@{domain}\r\nSubject: s\r\n\r\nbody\r\n".encode()
    wrong = dns_dkim.dkim_txt(other_public).encode()
    assert dkim.verify(signed + body, dnsfunc=lambda name, timeout=5: wrong) is False
    right = b"".join(dns_txt(converged["env"], f"pm1._domainkey.{domain}"))
    assert dkim.verify(signed + body, dnsfunc=lambda name, timeout=5: right) is True


@pytest.mark.parametrize("port", [25, 587])
def test_gtube_is_rejected_inbound_and_outbound(converged, port):
    ip, domain, passwords = converged["host"]["ip"], converged["domain"], converged["passwords"]
    spam = f"From: alice@{domain}\r\nTo: bob@{domain}\r\nSubject: offer\r\n\r\n{GTUBE}\r\n"
    with smtplib.SMTP(ip, port, timeout=60) as smtp, pytest.raises(smtplib.SMTPDataError) as caught:
        smtp.starttls(context=_client_tls())
        if port == 587:
            smtp.login(f"alice@{domain}", passwords["alice"])
        smtp.sendmail(f"alice@{domain}" if port == 587 else "someone@example.org", [f"bob@{domain}"], spam)
    assert caught.value.smtp_code == 550
    assert b"SpamAssassin" in caught.value.smtp_error


def test_submission_refuses_unauthenticated_relay(converged):
    ip, domain = converged["host"]["ip"], converged["domain"]
    with smtplib.SMTP(ip, 587, timeout=30) as smtp:
        smtp.starttls(context=_client_tls())
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail(f"alice@{domain}", ["someone@example.org"], "Subject: x\r\n\r\nx\r\n")
