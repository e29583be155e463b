"""Report addresses are deliverable: a DMARC aggregate and a TLS-RPT report land in the stack's report
mailboxes on a converged native host and are read back over IMAP.

The host vars and the mailboxes come from the same functions ``MailHosts`` uses (``plan_host_vars``,
``report_mailbox_addresses``), for a stack whose ``mail.reports`` names a domain that sends nothing.
"""

from __future__ import annotations

import email
import gzip
import imaplib
import smtplib
import ssl
import time
import uuid
from email.message import EmailMessage

import pytest

from modules.ansible import mailhosts, runner
from modules.config.model import StackConfig
from modules.dns import dkim as dns_dkim
from modules.dns.rfc2136 import Change, Rfc2136Client, TsigKey
from tests.infra.support import Lab, publish_dkim

pytestmark = pytest.mark.services

ZONE = "penguinmails.test"


def _client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # dev hosts have self-signed certificates
    return context


@pytest.fixture(scope="module")
def report_host(tmp_path_factory, devenv_env):
    folder = tmp_path_factory.mktemp("dmarc-reports")
    lab = Lab(folder)
    tag = uuid.uuid4().hex[:8]
    sending, reports = f"s{tag}.{ZONE}", f"r{tag}.{ZONE}"
    config = StackConfig.model_validate(
        {
            "fleet": {"nodes": 1, "name_pattern": "mx-{index}"},
            "dns": {"zones": [{"name": ZONE}]},
            "tenants": [{"slug": "acme", "domains": [{"name": sending}]}],
            "mail": {"reports": {"domain": reports}},
        }
    )
    dkim_name = dns_dkim.dkim_name("pm1", sending)
    private_pem, public_b64 = dns_dkim.generate_key()
    try:
        host = lab.create("mx-1", f"mx-1.{sending}")
        publish_dkim(devenv_env, ZONE, dkim_name, dns_dkim.dkim_txt(public_b64))
        addresses = [f"postmaster@{sending}", *mailhosts.report_mailbox_addresses(config)]
        passwords = {address: f"pw-{uuid.uuid4().hex}" for address in addresses}
        secret_vars = {
            "opendkim_keys": [{"domain": sending, "selector": "pm1", "private_key": private_pem}],
            "dovecot_users": [{"address": a, "password": p} for a, p in passwords.items()],
        }
        inventory = [{"name": "mx-1", "fqdn": host["fqdn"], "ip": host["ip"]}]
        host_vars = mailhosts.plan_host_vars(config, inventory)
        text = lab.inventory(host_vars=host_vars)
        started = time.monotonic()
        run = runner.run_playbook("mailhost.yml", text, stack=lab.prefix, secret_vars=secret_vars)
        yield {
            "host": host,
            "reports": reports,
            "passwords": passwords,
            "host_vars": host_vars["mx-1"],
            "run": run,
            "wall": time.monotonic() - started,
        }
    finally:
        lab.close()
        client = Rfc2136Client(
            devenv_env["PENGUINMAILS_DNS_SERVER"],
            int(devenv_env["PENGUINMAILS_DNS_PORT"]),
            TsigKey(devenv_env["PENGUINMAILS_TSIG_KEY_NAME"], devenv_env["PENGUINMAILS_TSIG_SECRET"]),
        )
        client.update(ZONE, [Change("delete", dkim_name, "TXT", dns_dkim.dkim_txt(public_b64))])


def _report(sender_domain: str, to: str, kind: str, marker: str) -> EmailMessage:
    """A report as receivers send it: RFC 7489 aggregate XML, or RFC 8460 TLS JSON, gzipped and attached."""
    message = EmailMessage()
    message["From"] = f"noreply-dmarc@{sender_domain}"
    message["To"] = to
    message["Date"] = email.utils.formatdate()
    message["Message-ID"] = f"<{marker}@{sender_domain}>"
    if kind == "dmarc":
        message["Subject"] = f"Report Domain: example Submitter: {sender_domain} Report-ID: {marker}"
        body = f"<feedback><report_metadata><report_id>{marker}</report_id></report_metadata></feedback>"
        maintype, subtype, name = "application", "gzip", f"{sender_domain}!example!{marker}.xml.gz"
    else:
        message["Subject"] = f"Report Domain: example Submitter: {sender_domain} Report-ID: <{marker}>"
        message["TLS-Report-Domain"] = "example"
        body = f'{{"report-id": "{marker}", "policies": []}}'
        maintype, subtype, name = "application", "tlsrpt+gzip", f"{sender_domain}!example!{marker}.json.gz"
    message.set_content("This is an aggregate report.")
    message.add_attachment(gzip.compress(body.encode()), maintype=maintype, subtype=subtype, filename=name)
    return message


def _fetch(ip: str, address: str, password: str, marker: str, timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with imaplib.IMAP4_SSL(ip, 993, ssl_context=_client_tls(), timeout=30) as imap:
            imap.login(address, password)
            imap.select("INBOX")
            _, found = imap.search(None, "HEADER", "Message-ID", marker)
            if found[0]:
                _, data = imap.fetch(found[0].split()[-1], "(RFC822)")
                return data[0][1]
        time.sleep(1)
    raise AssertionError(f"the report {marker} did not reach {address} within {timeout:.0f} s")


def test_the_report_node_receives_the_report_domain(report_host):
    assert report_host["run"].hosts["mx-1"].failed == 0
    assert report_host["reports"] in report_host["host_vars"]["postfix_virtual_domains"]
    assert report_host["reports"] not in report_host["host_vars"]["opendkim_domains"]


@pytest.mark.parametrize("kind", ["dmarc", "tlsrpt"])
def test_a_report_sent_to_the_published_address_lands_in_its_mailbox(report_host, kind):
    ip, reports = report_host["host"]["ip"], report_host["reports"]
    address = f"dmarc-reports@{reports}" if kind == "dmarc" else f"tlsrpt@{reports}"
    marker = uuid.uuid4().hex
    message = _report("receiver.example", address, kind, marker)
    # Inbound, unauthenticated, on port 25: how a receiving MTA delivers its report.
    with smtplib.SMTP(ip, 25, timeout=60) as smtp:
        smtp.starttls(context=_client_tls())
        assert smtp.send_message(message) == {}
    raw = _fetch(ip, address, report_host["passwords"][address], marker)
    received = email.message_from_bytes(raw)
    (attachment,) = [part for part in received.walk() if part.get_filename()]
    assert marker in gzip.decompress(attachment.get_payload(decode=True)).decode()


def test_mail_to_an_address_of_the_report_domain_without_a_mailbox_is_refused(report_host):
    ip, reports = report_host["host"]["ip"], report_host["reports"]
    with smtplib.SMTP(ip, 25, timeout=60) as smtp:
        smtp.starttls(context=_client_tls())
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail("x@receiver.example", [f"nobody@{reports}"], "Subject: x\r\n\r\nx\r\n")
