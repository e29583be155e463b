"""SpamAssassin on a converged native mail host."""

from __future__ import annotations


def test_spamassassin_spamd_on_loopback_only(host):
    assert host.socket("tcp://127.0.0.1:783").is_listening
    assert not host.socket("tcp://0.0.0.0:783").is_listening


def test_spamassassin_milter_socket_for_postfix(host):
    sock = host.file("/var/spool/postfix/spamass/spamass.sock")
    assert sock.is_socket
    assert sock.user == "postfix"


def test_spamassassin_scores_gtube_as_spam(host):
    gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
    result = host.run(f"printf 'Subject: t\\n\\n%s\\n' '{gtube}' | spamc -c")
    assert float(result.stdout.split("/")[0]) >= 100


def test_spamassassin_rules_lint(host):
    assert host.run("spamassassin --lint").rc == 0
