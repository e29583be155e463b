"""OpenDKIM on a converged native mail host."""

from __future__ import annotations


def test_opendkim_listens_on_loopback_only(host):
    assert host.socket("tcp://127.0.0.1:8891").is_listening
    assert not host.socket("tcp://0.0.0.0:8891").is_listening


def test_opendkim_config_parses(host):
    assert host.run("opendkim -n -x /etc/opendkim.conf").rc == 0


def test_opendkim_keys_readable_by_opendkim_only(host):
    keys = host.run("find /etc/opendkim/keys -name '*.private'").stdout.split()
    assert keys
    for path in keys:
        key = host.file(path)
        assert key.user == "opendkim"
        assert key.mode == 0o600


def test_opendkim_signing_table_names_each_key(host):
    table = host.file("/etc/opendkim/SigningTable").content_string
    key_table = host.file("/etc/opendkim/KeyTable").content_string
    for line in table.splitlines():
        if line and not line.startswith("#"):
            assert line.split()[1] in key_table
