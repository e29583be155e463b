"""The common base on a converged mail host."""

from __future__ import annotations


def test_common_ssh_keys_only(host):
    settings = host.run("sshd -T").stdout.lower()
    assert "passwordauthentication no" in settings
    assert "kbdinteractiveauthentication no" in settings
    assert "permitrootlogin without-password" in settings or "permitrootlogin prohibit-password" in settings


def test_common_flavor_marker(host):
    assert host.file("/etc/penguinmails/mail-flavor").content_string.strip() == "native"


def test_common_time_sync_running(host):
    assert host.run("service chrony status").rc == 0


def test_common_security_upgrades_daily(host):
    periodic = host.file("/etc/apt/apt.conf.d/20auto-upgrades").content_string
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    assert "Debian-Security" in host.file("/etc/apt/apt.conf.d/50unattended-upgrades").content_string
    assert host.run("service cron status").rc == 0


def test_common_private_key_root_only(host):
    key = host.file("/etc/ssl/penguinmails/host.key")
    assert key.user == "root"
    assert key.mode == 0o600
