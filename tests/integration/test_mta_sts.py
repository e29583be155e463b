"""MTA-STS for real: the mail playbook's nginx serves each domain's policy, and `dns verify` fetches it.

One podman host of our own (unique prefix and SSH key) converged with the native mail playbook, which now
ends with the ``mta_sts`` role; a private BIND (its own port and zone) holds the records the generator makes
for two sending domains whose mail host is that container. The policy host's certificate comes from a CA of
this test (until ACME lands) and the verifier trusts only that CA. Then each thing the check exists for is
broken on the real host or in the real zone (a policy with the wrong MX, an expired certificate, a TXT id
that does not match) and the verification must fail with the reason.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
import uuid

import pytest
from typer.testing import CliRunner

from modules.ansible import runner
from modules.cli import dns_cmd
from modules.cli.main import app
from modules.config.loader import validate_config
from modules.dns import dkim as dns_dkim
from modules.dns import mailauth
from modules.dns.generate import NodeAddresses, plan_mail_dns
from modules.dns.rfc2136 import Change
from modules.dns.sts_fetch import PolicyFetcher
from modules.dns.verify import verify
from tests.infra.support import Lab, native_host_vars, run_infra_checks
from tests.support import dns as dns_support
from tests.support.mta_sts import LabCa

# Two converges of the whole mail playbook: on a busy 2-core machine they alone can pass the 900 s default.
pytestmark = [pytest.mark.services, pytest.mark.timeout(2400)]

CERT_FILE, KEY_FILE = "/etc/ssl/penguinmails/mta-sts.crt", "/etc/ssl/penguinmails/mta-sts.key"


def _podman(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["podman", *args], input=stdin, check=True, capture_output=True, text=True, timeout=120
    )
    return done.stdout


def _put(container: str, path: str, text: str, mode: str = "0644") -> None:
    _podman(
        "exec", "-i", container, "sh", "-c", f"umask 077; cat > {path} && chmod {mode} {path}", stdin=text
    )


@pytest.fixture(scope="module")
def sts(tmp_path_factory, devenv_env):
    folder = tmp_path_factory.mktemp("mta-sts")
    lab = Lab(folder)
    zone = f"sts{uuid.uuid4().hex[:8]}.test"
    domains = [f"a.{zone}", f"b.{zone}"]
    with dns_support.private_bind(folder / "bind", [zone]) as bind:
        try:
            host = lab.create("mx-1", f"mx-1.{zone}")
            container = f"{lab.prefix}-mx-1"
            config = validate_config(
                {
                    "fleet": {"nodes": 1},
                    "dns": {"zones": [{"name": zone}]},
                    "tenants": [{"slug": "sts", "domains": [{"name": d} for d in domains]}],
                }
            )
            keys = {d: dns_dkim.generate_key() for d in domains}
            plan = plan_mail_dns(
                config, {1: NodeAddresses(host["ip"])}, {(d, "pm1"): keys[d][1] for d in domains}
            )
            changes = [
                Change("add", r.name, r.type, value, r.ttl) for r in plan.records[zone] for value in r.values
            ]
            dns_support.client(bind).update(zone, changes)

            ca = LabCa()
            ca_file = str(ca.write(folder / "ca.pem"))
            good = ca.issue([f"mta-sts.{d}" for d in domains])
            _podman("exec", container, "mkdir", "-p", "/etc/ssl/penguinmails")
            _put(container, CERT_FILE, good[0])
            _put(container, KEY_FILE, good[1], "0600")

            host_vars = native_host_vars(host, domains) | {
                "mta_sts_policies": {d: plan.mta_sts_policies[d] for d in domains},
                "mta_sts_cert_file": CERT_FILE,
                "mta_sts_key_file": KEY_FILE,
            }
            secret_vars = {
                "opendkim_keys": [
                    {"domain": d, "selector": "pm1", "private_key": keys[d][0]} for d in domains
                ],
                "dovecot_users": [
                    {"address": f"postmaster@{d}", "password": uuid.uuid4().hex} for d in domains
                ],
            }
            text = lab.inventory(host_vars={"mx-1": host_vars})
            (folder / "inventory.yml").write_text(text)
            runs = []
            for _ in range(2):
                started = time.monotonic()
                runs.append(
                    runner.run_playbook("mailhost.yml", text, stack=lab.prefix, secret_vars=secret_vars)
                )
                runs[-1].wall = time.monotonic() - started
            yield {
                "folder": folder,
                "plan": plan,
                "zone": zone,
                "domains": domains,
                "host": host,
                "container": container,
                "bind": bind,
                "ca": ca,
                "ca_file": ca_file,
                "good": good,
                "runs": runs,
            }
        finally:
            lab.close()


def _verify(sts, domains=None):
    expectations = [e for e in sts["plan"].expectations if e.domain in (domains or sts["domains"])]
    lookup = dns_support.lookup(sts["bind"])
    return verify(expectations, lookup, checks=["MTA-STS"], fetcher=PolicyFetcher(sts["ca_file"], timeout=5))


def _reason(sts, domain):
    (report,) = _verify(sts, [domain])
    (result,) = report.results
    return result


def _tls(ip: str, server_name: str, ca_file: str) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=ca_file)
    sock = socket.create_connection((ip, 443), timeout=5)
    return context.wrap_socket(sock, server_hostname=server_name)


def _get(sts, domain: str, path: str) -> tuple[int, dict[str, str], bytes]:
    import http.client

    connection = http.client.HTTPSConnection(
        f"mta-sts.{domain}", 443, timeout=5, context=ssl.create_default_context(cafile=sts["ca_file"])
    )
    connection.sock = _tls(sts["host"]["ip"], f"mta-sts.{domain}", sts["ca_file"])
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def test_the_role_converges_and_a_second_run_changes_nothing(sts):
    first, second = sts["runs"]
    assert first.hosts["mx-1"].changed > 0 and first.hosts["mx-1"].failed == 0
    assert second.hosts["mx-1"].changed == 0, "the second converge must be a no-op"


def test_testinfra_host_checks_pass_with_the_policy_host(sts):
    done = run_infra_checks(sts["folder"] / "inventory.yml")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
    assert "failed" not in done.stdout


def test_each_domain_passes_by_a_real_https_fetch(sts):
    reports = _verify(sts)
    assert [r.domain for r in reports] == sts["domains"]
    for report in reports:
        assert report.passed, report.failures()
        reason = report.results[0].reason
        assert f"fetched over HTTPS from {sts['host']['ip']}" in reason
        assert f"mx mail.{report.domain}" in reason


def test_the_served_text_is_exactly_the_computed_policy_and_nothing_else_is_served(sts):
    domain = sts["domains"][0]
    status, headers, body = _get(sts, domain, "/.well-known/mta-sts.txt")
    assert status == 200 and body.decode() == sts["plan"].mta_sts_policies[domain]
    assert headers["content-type"] == "text/plain"
    assert headers["server"] == "nginx", "no version in the Server header (server_tokens off)"
    for path in ("/", "/.well-known/", "/mta-sts.txt", "/.well-known/mta-sts.txt/x"):
        assert _get(sts, domain, path)[0] == 404, path
    # A name that is no policy host gets no TLS session at all (not Debian's example site).
    with pytest.raises(ssl.SSLError):
        _tls(sts["host"]["ip"], f"www.{sts['zone']}", sts["ca_file"]).close()
    config = _podman("exec", sts["container"], "nginx", "-T")
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in config
    assert "listen 80" not in config


def _s_client(sts, version: str) -> subprocess.CompletedProcess:
    """OpenSSL's client on the host itself, at security level 0 so that only the server can refuse."""
    command = ["podman", "exec", sts["container"], "openssl", "s_client", "-connect", "127.0.0.1:443",
               "-servername", f"mta-sts.{sts['domains'][0]}", version, "-cipher", "DEFAULT:@SECLEVEL=0"]  # fmt: skip
    return subprocess.run(command, input="", capture_output=True, text=True, timeout=30)


def test_tls_below_1_2_is_refused(sts):
    assert _s_client(sts, "-tls1_2").returncode == 0, "control: TLS 1.2 is accepted"
    assert _s_client(sts, "-tls1_3").returncode == 0, "control: TLS 1.3 is accepted"
    for version in ("-tls1_1", "-tls1"):
        done = _s_client(sts, version)
        assert done.returncode != 0, f"{version} was accepted"


def test_a_served_policy_with_the_wrong_mx_fails(sts):
    domain = sts["domains"][0]
    path = f"/var/www/mta-sts/{domain}/mta-sts.txt"
    wrong = mailauth.mta_sts_policy("testing", [f"mail.elsewhere.{sts['zone']}"], 604800)
    _put(sts["container"], path, wrong)
    try:
        result = _reason(sts, domain)
    finally:
        _put(sts["container"], path, sts["plan"].mta_sts_policies[domain])
    assert not result.passed
    assert result.reason == (
        f"{domain}: MX mail.{domain} matches no mx: line of the served policy (mx: mail.elsewhere.{sts['zone']})"
    )
    assert _reason(sts, domain).passed, "restored"


def test_an_expired_certificate_fails(sts):
    container, domain = sts["container"], sts["domains"][1]
    expired = sts["ca"].issue([f"mta-sts.{d}" for d in sts["domains"]], expired=True)
    _put(container, CERT_FILE, expired[0])
    _put(container, KEY_FILE, expired[1], "0600")
    _podman("exec", container, "nginx", "-s", "reload")
    try:
        time.sleep(1)
        result = _reason(sts, domain)
    finally:
        _put(container, CERT_FILE, sts["good"][0])
        _put(container, KEY_FILE, sts["good"][1], "0600")
        _podman("exec", container, "nginx", "-s", "reload")
        time.sleep(1)
    assert not result.passed
    assert result.reason.startswith(f"{domain}: https://mta-sts.{domain}/.well-known/mta-sts.txt at ")
    assert f"the certificate is not valid for mta-sts.{domain}: certificate has expired" in result.reason
    assert _reason(sts, domain).passed, "restored"


def test_a_txt_id_that_does_not_match_the_served_policy_fails(sts):
    domain = sts["domains"][0]
    name = f"_mta-sts.{domain}"
    published = mailauth.mta_sts_txt(sts["plan"].mta_sts_policies[domain])
    stale = "v=STSv1; id=20250101000000"
    client = dns_support.client(sts["bind"])
    client.update(
        sts["zone"], [Change("delete", name, "TXT", published), Change("add", name, "TXT", stale, 300)]
    )
    try:
        result = _reason(sts, domain)
    finally:
        client.update(
            sts["zone"], [Change("delete", name, "TXT", stale), Change("add", name, "TXT", published, 300)]
        )
    assert not result.passed
    derived = mailauth.sts_id(sts["plan"].mta_sts_policies[domain])
    assert f"{name} has id=20250101000000, but the served policy's id is {derived}" in result.reason
    assert _reason(sts, domain).passed, "restored"


def test_dns_verify_cli_reports_mta_sts_by_its_https_fetch(sts, monkeypatch):
    # The one stand-in: the stack output (a real stack needs the engine); DNS, TLS and nginx are real.
    plan, domain = sts["plan"], sts["domains"][1]
    items = [
        {
            "domain": e.domain,
            "mail_host": e.mail_host,
            "sending_ips": list(e.sending_ips),
            "dkim_keys": [list(k) for k in e.dkim_keys],
            "dmarc_policy": e.dmarc_policy,
            "ptr_host": e.ptr_host,
            "mta_sts_policy": e.mta_sts_policy,
        }
        for e in plan.expectations
    ]
    monkeypatch.setattr(dns_cmd, "stack_verification", lambda stack: items)
    bind = sts["bind"]
    args = [
        "dns",
        "verify",
        "--stack",
        "mtasts-test",
        "--domain",
        domain,
        "--server",
        f"{bind.host}:{bind.port}",
    ]
    done = CliRunner().invoke(app, [*args, "--ca-file", sts["ca_file"]])
    out = " ".join(done.output.split())  # the console wraps long reasons when not on a terminal
    # Only the domain asked for (the other one's name may still appear: it is the node's HELO name).
    assert domain in out and "of 1 domain(s)" in out, out
    assert f"MTA-STS pass id={mailauth.sts_id(plan.mta_sts_policies[domain])}; mode testing" in out, out
    assert f"fetched over HTTPS from {sts['host']['ip']}" in out, out
    # Without the test CA the same fetch fails: the pass above came from validating the chain.
    other = LabCa().write(sts["folder"] / "other-ca.pem")
    untrusted = CliRunner().invoke(app, [*args, "--ca-file", str(other)])
    out = " ".join(untrusted.output.split())
    assert f"MTA-STS FAIL {domain}: https://mta-sts.{domain}/.well-known/mta-sts.txt at" in out, out
    assert "certificate is not valid" in out and untrusted.exit_code == 1
