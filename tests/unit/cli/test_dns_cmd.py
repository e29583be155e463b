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
