"""Building update messages (no server): one per zone, deletions first, split only past 64 KiB."""

from __future__ import annotations

import dns.opcode
import dns.rdatatype
import pytest

from modules.dns.errors import DnsAuthError
from modules.dns.rfc2136 import MAX_MESSAGE_BYTES, Change, Prerequisite, Rfc2136Client, TsigKey

KEY = TsigKey("pm-unit", "c2VjcmV0LWZvci11bml0LXRlc3RzLW9ubHktMzItYnl0ZXM=")


def test_a_zone_run_is_one_signed_update_message_with_deletions_first():
    client = Rfc2136Client("127.0.0.1", 5353, KEY)
    changes = [
        Change("add", "www.acme.test", "CNAME", "mail.acme.test.", 300),
        Change("delete", "www.acme.test", "A", "192.0.2.5"),
        Change("add", "acme.test", "TXT", "v=spf1 -all", 300),
    ]
    prerequisites = [Prerequisite("www.acme.test", "A", ("192.0.2.5",)), Prerequisite("acme.test", "TXT", ())]
    (message,) = client.build_messages("acme.test", changes, prerequisites)
    assert message.opcode() == dns.opcode.UPDATE
    assert message.keyname.to_text() == "pm-unit."
    updates = [(rrset.name.to_text(), rrset.rdtype) for rrset in message.update]
    assert updates[0] == ("www.acme.test.", dns.rdatatype.A)  # the delete goes first
    assert len(message.prerequisite) == 2


def test_only_a_run_larger_than_one_message_is_split():
    client = Rfc2136Client("127.0.0.1", 5353, KEY)
    changes = [Change("add", f"h{i}.acme.test", "TXT", "x" * 200, 300) for i in range(600)]
    messages = client.build_messages("acme.test", changes)
    assert len(messages) == 3
    assert all(len(m.to_wire()) <= MAX_MESSAGE_BYTES + 1000 for m in messages)
    assert sum(len(m.update) for m in messages) == 600


def test_nothing_to_change_means_no_message():
    assert Rfc2136Client("127.0.0.1", 5353, KEY).build_messages("acme.test", []) == []


def test_a_secret_that_is_not_base64_is_refused_without_being_shown():
    with pytest.raises(DnsAuthError) as error:
        Rfc2136Client("127.0.0.1", 5353, TsigKey("pm-unit", "not base64 at all!"))
    assert "not base64" in str(error.value) and "at all!" not in str(error.value)
    assert "not base64 at all!" not in repr(TsigKey("pm-unit", "not base64 at all!"))
