"""The on-call runbooks against one converged podman mail host (converged once for the whole module).

Check mode must change nothing on the host (a fingerprint of the files and the queue is compared); drain
must keep outgoing mail queued (a message to a sink on the podman bridge stays in the queue) and undrain
must deliver it; reconverge must find and repair a hand-edited main.cf; bad requests fail before any change.
"""

from __future__ import annotations

import json
import socketserver
import subprocess
import threading
import time
import uuid

import pytest

from modules.ansible import runner
from modules.cli import runbook_cmd
from modules.dns import dkim as dns_dkim
from modules.runbooks import catalog
from modules.runbooks import run as rb
from tests.infra.support import Lab, native_host_vars

pytestmark = pytest.mark.services

ZONE = "penguinmails.test"
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
def lab(tmp_path_factory, devenv_env):
    """One host converged with the mail playbook; its inventory is the stack's generated inventory."""
    folder = tmp_path_factory.mktemp("runbooks")
    lab = Lab(folder)
    domain = f"rb{uuid.uuid4().hex[:8]}.{ZONE}"
    mp = pytest.MonkeyPatch()
    mp.setenv(runner.INVENTORY_DIR_ENV, str(folder / "inventory"))
    try:
        host = lab.create("mx-1", f"mx-1.{domain}")
        private_pem, _ = dns_dkim.generate_key()
        secret_vars = {
            "opendkim_keys": [{"domain": domain, "selector": "pm1", "private_key": private_pem}],
            "dovecot_users": [{"address": f"postmaster@{domain}", "password": uuid.uuid4().hex}],
        }
        text = lab.inventory(host_vars={"mx-1": native_host_vars(host, [domain])})
        runner.write_inventory(lab.prefix, text)
        started = time.monotonic()
        runner.run_playbook("mailhost.yml", text, stack=lab.prefix, secret_vars=secret_vars)
        print(f"\nrunbooks lab: converge {time.monotonic() - started:.0f} s")
        yield {
            "lab": lab,
            "stack": lab.prefix,
            "host": host,
            "domain": domain,
            "text": text,
            "secret_vars": secret_vars,
            "container": lab.podman.container_name("mx-1"),
        }
    finally:
        mp.undo()
        lab.close()


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
