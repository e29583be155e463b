"""`penguinmails dns verify` rendering: every check shown with its reason; failures make a non-zero count."""

from __future__ import annotations

from modules.cli import dns_cmd
from modules.dns.verify import CheckResult, DomainReport


def test_render_counts_failed_domains_and_prints_reasons(capsys):
    good = DomainReport("acme.test", [CheckResult("SPF", True, "authorises 10.88.0.5")])
    bad = DomainReport("globex.test", [CheckResult("DMARC", False, "no _dmarc record")])
    assert dns_cmd.render([good, bad]) == 1
    out = capsys.readouterr().out
    assert "acme.test" in out and "authorises 10.88.0.5" in out
    assert "FAIL" in out and "no _dmarc record" in out
    assert "1 of 2 domain(s) pass every check" in out


def test_verify_takes_the_stack_resolvers_and_its_ca_bundle_from_the_stack_file(tmp_path, monkeypatch):
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    monkeypatch.setenv("PENGUINMAILS_DEV_CA_FILE", "/tmp/dev-ca.pem")
    assert dns_cmd.verify_settings("dev", root) == (["127.0.0.1:5353"], "/tmp/dev-ca.pem")
    monkeypatch.delenv("PENGUINMAILS_DEV_CA_FILE")
    assert dns_cmd.verify_settings("dev", root) == (["127.0.0.1:5353"], None)
    assert dns_cmd.verify_settings("missing", tmp_path) == ([], None)
