"""The postfix role's sender milter: which From:/Sender: a SASL login may use (its checks, without libmilter).

The same table drives Postfix's envelope check, so a header is allowed exactly when Postfix would let the
login use that address as MAIL FROM, and anything a later parser could read differently is refused.
"""

from __future__ import annotations

import importlib.util

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modules.ansible import mailhosts
from modules.ansible.runner import ANSIBLE_DIR

_spec = importlib.util.spec_from_file_location(
    "sender_milter", ANSIBLE_DIR / "roles" / "postfix" / "files" / "opt" / "penguinmails" / "sender_milter.py"
)
milter = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(milter)

# What the role renders for tenant A (a.test, a2.test) and tenant B (b.test) on one host.
TABLE_TEXT = """# managed
@a.test postmaster@a.test, postmaster@a2.test
@a2.test postmaster@a.test, postmaster@a2.test
@b.test postmaster@b.test
"""
TABLE = milter.parse_table(TABLE_TEXT)
LOGIN = "postmaster@a.test"


def test_table_maps_each_domain_to_its_logins():
    assert TABLE == {
        "@a.test": {"postmaster@a.test", "postmaster@a2.test"},
        "@a2.test": {"postmaster@a.test", "postmaster@a2.test"},
        "@b.test": {"postmaster@b.test"},
    }


def test_an_address_key_wins_over_its_domain_like_postfix():
    table = milter.parse_table("@a.test one@a.test\nboss@a.test two@a.test\n")
    assert milter.owns(table, "two@a.test", "boss@a.test")
    assert not milter.owns(table, "one@a.test", "boss@a.test")
    assert milter.owns(table, "one@a.test", "news@a.test")


@pytest.mark.parametrize(
    "headers",
    [
        [("From", "news@a.test")],
        [("From", '"Tenant A" <news@a2.test>')],
        [("from", "NEWS@A.TEST")],
        [("From", "Alice <alice@a.test>"), ("Sender", "postmaster@a2.test")],
        [("From", '"Alice (alice@a.test)" <alice@a.test>')],
        [("Subject", "ceo@b.test"), ("From", "news@a.test"), ("Reply-To", "ceo@b.test")],
    ],
)
def test_own_tenant_senders_pass(headers):
    assert milter.check(TABLE, LOGIN, headers) is None


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([("From", "ceo@b.test")], "ceo@b.test is not an address"),
        ([("From", '"news@a.test" <ceo@b.test>')], "ceo@b.test is not an address"),
        ([("From", '"ceo@b.test" <news@a.test>')], "names b.test"),
        ([("From", "=?utf-8?q?ceo=40b.test?= <news@a.test>")], "names b.test"),
        ([("From", "=?utf-8?b?Y2VvQGIudGVzdA==?= <news@a.test>")], "names b.test"),
        ([("From", "ceo@b.test (news@a.test)")], "ceo@b.test is not an address"),
        ([("From", "news@a.test (ceo@b.test)")], "names b.test"),
        ([("From", "news@a.test, ceo@b.test")], "exactly one well-formed address"),
        ([("From", "news@a.test"), ("From", "ceo@b.test")], "exactly one From: header"),
        ([("From", "news@a.test"), ("Sender", "ceo@b.test")], "Sender: ceo@b.test"),
        ([("From", "news@a.test"), ("Sender", "x@a.test"), ("Sender", "y@a.test")], "at most one Sender"),
        ([("From", '"ceo@b.test"@a.test')], "names b.test"),
        ([("From", "news@a.test <ceo@b.test>")], "exactly one well-formed address"),
        ([("From", "<news@a.test")], "exactly one well-formed address"),
        ([("From", "news@sub.a.test")], "not an address"),
        ([("From", "news@a.test.evil.example")], "not an address"),
        ([("From", "undisclosed:;")], "exactly one well-formed address"),
        ([("From", "news")], "exactly one well-formed address"),
        ([("Sender", "news@a.test")], "exactly one From: header"),
        ([], "exactly one From: header"),
    ],
)
def test_forged_or_ambiguous_senders_are_refused(headers, reason):
    found = milter.check(TABLE, LOGIN, headers)
    assert found is not None and reason in found


def test_mail_without_a_login_is_not_judged():
    # Port 25: nothing to compare with; OpenDKIM does not sign it.
    assert milter.check(TABLE, "", [("From", "ceo@b.test")]) is None


def test_a_login_missing_from_the_table_may_send_as_nothing():
    assert milter.check(TABLE, "intruder@c.test", [("From", "x@c.test")]) is not None


def test_table_reloads_when_the_file_changes(tmp_path):
    path = tmp_path / "sender_logins"
    path.write_text("@a.test postmaster@a.test\n")
    table = milter.Table(str(path))
    assert milter.owns(table.get(), "postmaster@a.test", "x@a.test")
    path.write_text("@a.test someone-else@a.test\n")
    assert not milter.owns(table.get(), "postmaster@a.test", "x@a.test")
    path.unlink()
    with pytest.raises(OSError):
        table.get()


def _rendered(plan: list[dict]) -> str:
    """What templates/etc/postfix/sender_logins.j2 renders from postfix_sender_logins."""
    domains = sorted({d for entry in plan for d in entry["domains"]})
    return "".join(
        f"@{d} {', '.join(sorted({e['login'] for e in plan if d in e['domains']}))}\n" for d in domains
    )


_label = st.text(alphabet="abcdefgh0123", min_size=1, max_size=5)


@settings(max_examples=150, deadline=None)
@given(tenants=st.dictionaries(_label, st.sets(_label, min_size=1, max_size=3), min_size=2, max_size=4))
def test_no_login_may_use_another_tenants_domain_in_from(tenants):
    by_tenant = {t: [f"{d}.{t}.test" for d in ds] for t, ds in tenants.items()}
    owner = {d: t for t, ds in by_tenant.items() for d in ds}
    mailboxes = [mailhosts.postmaster_address(d) for d in owner]
    table = milter.parse_table(_rendered(mailhosts.plan_sender_logins(by_tenant, mailboxes)))
    for login in mailboxes:
        mine = owner[login.rpartition("@")[2]]
        for domain, tenant in owner.items():
            verdict = milter.check(table, login, [("From", f"Someone <x@{domain}>")])
            assert (verdict is None) == (tenant == mine), (login, domain, verdict)
