"""The native mail roles on a real podman host: converge, idempotence, host checks, mail end to end.

One host from the preinstalled mailhost image, its own SSH key and container prefix (removed at the
end), converged once for the whole module; the on-call runbooks run last against the same host. The DKIM key is made like the DNS component makes it and published in the local BIND; the
signature on the delivered copy is verified by dkimpy against that BIND.

Runbooks: check mode must change nothing on the host (a fingerprint of the files and the queue is compared);
drain must keep outgoing mail queued (a message to a sink on the podman bridge stays in the queue) and undrain
must deliver it; reconverge must find and repair a hand-edited main.cf; bad requests fail before any change.
"""

from __future__ import annotations

import email
import imaplib
import json
import smtplib
import socketserver
import ssl
import subprocess
import threading
import time
import uuid

import dkim
import pytest

from modules.ansible import runner
from modules.cli import runbook_cmd
from modules.dns import dkim as dns_dkim
from modules.runbooks import catalog
from modules.runbooks import run as rb
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
            "text": text,
            "secret_vars": secret_vars,
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


# --- on-call runbooks (last: they change the host) ---

SINK_ADDRESS = "10.88.0.1"  # the podman bridge's gateway: this machine, as the hosts reach it
FINGERPRINT = (
    "md5sum /etc/postfix/main.cf /etc/postfix/master.cf /etc/postfix/sender_transports "
    "/etc/opendkim/KeyTable 2>&1; ls /etc/penguinmails; postqueue -j | sort; postconf -h defer_transports"
)


class _Sink(socketserver.ThreadingTCPServer):
    """A minimal SMTP receiver (no TLS): collects the DATA of every message it is given."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address):
        super().__init__(address, _SinkHandler)
        self.messages: list[str] = []


class _SinkHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        def say(line: str) -> None:
            self.wfile.write(line.encode() + b"\r\n")

        say("220 sink ESMTP")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line.decode(errors="replace").strip().upper()
            if verb.startswith(("EHLO", "HELO")):
                say("250-sink")
                say("250 8BITMIME")
            elif verb.startswith("DATA"):
                say("354 go on")
                data = []
                while (chunk := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                    data.append(chunk.decode(errors="replace"))
                self.server.messages.append("".join(data))
                say("250 queued")
            elif verb.startswith("QUIT"):
                say("221 bye")
                return
            else:
                say("250 ok")


@pytest.fixture(scope="module")
def sink():
    try:
        server = _Sink((SINK_ADDRESS, 25))
    except OSError as exc:
        pytest.fail(f"cannot listen on {SINK_ADDRESS}:25 for the SMTP sink: {exc}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def lab(converged):
    """The converged host, as the runbooks see it: the stack's generated inventory and its secret variables.

    The runbook tests come last in this module (they drain, hand-edit and reconverge the host), so the
    mail tests above run on the host as the first converge left it, and the host is converged only once.
    """
    mp = pytest.MonkeyPatch()
    mp.setenv(runner.INVENTORY_DIR_ENV, str(converged["lab"].folder / "inventory"))
    try:
        runner.write_inventory(converged["lab"].prefix, converged["text"])
        yield {
            **converged,
            "stack": converged["lab"].prefix,
            "container": converged["lab"].podman.container_name("mx-1"),
        }
    finally:
        mp.undo()


def on_host(lab, script: str) -> str:
    done = subprocess.run(
        ["podman", "exec", lab["container"], "sh", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def send(lab, marker: str) -> None:
    message = f"From: postmaster@{lab['domain']}\nTo: sink@[{SINK_ADDRESS}]\nSubject: {marker}\n\n{marker}\n"
    subprocess.run(
        ["podman", "exec", "-i", lab["container"], "sendmail", "-f", f"postmaster@{lab['domain']}",
         f"sink@[{SINK_ADDRESS}]"],
        input=message, text=True, check=True, timeout=60,
    )  # fmt: skip


def arrived(sink, marker: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(marker in m for m in sink.messages):
            return True
        time.sleep(0.5)
    return False


def runbook(lab, name: str, check: bool, **extra):
    book = catalog.get(name)
    limit = extra.pop("limit", None)
    secret_vars = lab["secret_vars"] if book.needs_mail_vars else None
    return rb.run_runbook(
        book,
        lab["text"],
        stack=lab["stack"],
        extra_vars=extra,
        secret_vars=secret_vars,
        check=check,
        limit=limit,
    )


@pytest.mark.parametrize("name", ["drain", "undrain"])
def test_check_mode_changes_nothing_on_the_host(lab, name):
    before = on_host(lab, FINGERPRINT)
    run = runbook(lab, name, True, runbook_host="mx-1")
    assert run.hosts["mx-1"].failed == 0
    assert on_host(lab, FINGERPRINT) == before
    if name == "drain":  # it reports what it would change, without changing it
        assert run.hosts["mx-1"].changed >= 2


def test_drain_keeps_outgoing_mail_queued_and_undrain_delivers_it(lab, sink):
    control = f"control-{uuid.uuid4().hex}"
    send(lab, control)
    assert arrived(sink, control, 60), "the sink got nothing before the drain: the test would prove nothing"

    drained = runbook(lab, "drain", False, runbook_host="mx-1", runbook_reason="test")
    assert drained.hosts["mx-1"].changed >= 2
    assert "smtp-main" in on_host(lab, "postconf -h defer_transports").split()
    held = f"held-{uuid.uuid4().hex}"
    send(lab, held)
    assert not arrived(sink, held, 15), "a drained host delivered outgoing mail"
    queued = on_host(lab, "postqueue -j")
    assert queued.count("queue_name") == 1 and f"sink@[{SINK_ADDRESS}]" in queued
    # Draining again changes one thing only: the message deferred since is put on hold too.
    assert runbook(lab, "drain", False, runbook_host="mx-1").hosts["mx-1"].changed == 1
    assert [json.loads(line)["queue_name"] for line in on_host(lab, "postqueue -j").splitlines()] == ["hold"]

    # A converge would end the drain: reconverge refuses the drained host (before any change).
    with pytest.raises(rb.RunbookFailed, match="mx-1 is drained"):
        runbook(lab, "reconverge", False, limit="mx-1")

    runbook(lab, "undrain", False, runbook_host="mx-1")
    assert arrived(sink, held, 60), "undrain did not deliver the queued message"
    assert on_host(lab, "postconf -h defer_transports").strip() == ""
    assert "runbook-drained" not in on_host(lab, "ls /etc/penguinmails")
    assert on_host(lab, "postqueue -j").strip() == ""


def test_reconverge_finds_and_repairs_a_hand_edited_file(lab):
    original = on_host(lab, "md5sum /etc/postfix/main.cf")
    on_host(lab, "echo 'smtpd_banner = edited by hand' >> /etc/postfix/main.cf")
    edited = on_host(lab, FINGERPRINT)

    checked = runbook(lab, "reconverge", True, limit="mx-1")
    assert checked.hosts["mx-1"].changed >= 1
    assert on_host(lab, FINGERPRINT) == edited  # check mode saw the edit and left it

    fixed = runbook(lab, "reconverge", False, limit="mx-1")
    assert fixed.hosts["mx-1"].changed >= 1
    assert on_host(lab, "md5sum /etc/postfix/main.cf") == original
    assert "edited by hand" not in on_host(lab, "postconf -h smtpd_banner")


def test_unknown_host_fails_before_any_change(lab):
    before = on_host(lab, FINGERPRINT)
    # Through the CLI: refused before ansible-playbook starts, naming the host and the known ones.
    with pytest.raises(catalog.RunbookError, match=r"host 'mx-9' is not a mail host .*mail hosts: mx-1"):
        runbook_cmd.execute("drain", lab["stack"], False, ["runbook_host=mx-9"], None, lab["lab"].folder)
    with pytest.raises(catalog.RunbookError, match="pass --limit"):
        runbook_cmd.execute("reconverge", lab["stack"], False, [], None, lab["lab"].folder)
    # Plain ansible-playbook path: the playbook's own first play refuses it.
    with pytest.raises(rb.RunbookFailed, match=r"runbook_host=mx-9 is not a mail host"):
        runbook(lab, "drain", False, runbook_host="mx-9")
    with pytest.raises(rb.RunbookFailed, match="pass --limit"):
        runbook(lab, "reconverge", False)
    assert on_host(lab, FINGERPRINT) == before


def test_controller_runbooks_refuse_incomplete_requests(lab, tmp_path):
    with pytest.raises(catalog.RunbookError, match="runbook_queue"):
        runbook_cmd.execute("replay-dead-letters", lab["stack"], True, [], None, tmp_path)
    with pytest.raises(rb.RunbookFailed, match="runbook_all=true"):
        runbook(lab, "replay-dead-letters", True)
    with pytest.raises(catalog.RunbookError, match="runbook_tier"):
        runbook_cmd.execute("restore-tier", lab["stack"], True, ["runbook_tier=olap"], None, tmp_path)
    with pytest.raises(rb.RunbookFailed, match="runbook_tier=oltp"):
        runbook(lab, "restore-tier", True, runbook_tier="oltp")
