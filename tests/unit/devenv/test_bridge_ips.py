"""Machine-wide claims on bridge addresses: two processes never hold one address; a dead one's lapse."""

from __future__ import annotations

import ipaddress
import multiprocessing
import subprocess
import sys

import pytest

from devenv import bridge_ips

NET = ipaddress.ip_network("10.88.192.0/30")  # pick() may use .2 only: one address to fight over


@pytest.fixture(autouse=True)
def claims_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(bridge_ips, "CLAIMS_DIR", tmp_path / "claims")
    return tmp_path / "claims"


def _claim_in_child(ip: str, answers) -> None:
    answers.put(bridge_ips.claim(ip))


def _claim_elsewhere(ip: str) -> bool:
    """``claim`` from another process (which then exits: its claim lapses with it)."""
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    child = context.Process(target=_claim_in_child, args=(ip, answers))
    child.start()
    child.join(30)
    return answers.get(timeout=5)


def test_a_claim_is_this_process_alone_and_repeatable():
    assert bridge_ips.claim("10.88.200.7")
    assert bridge_ips.claim("10.88.200.7")  # ours already
    assert bridge_ips.holder("10.88.200.7") is not None


def test_an_address_a_live_process_holds_is_refused_and_never_picked(claims_dir):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claims_dir.mkdir(parents=True, exist_ok=True)
        (claims_dir / "10.88.192.2").write_text(str(sleeper.pid))
        assert bridge_ips.holder("10.88.192.2") == sleeper.pid
        assert not bridge_ips.claim("10.88.192.2")
        with pytest.raises(RuntimeError, match="no unclaimed address"):
            bridge_ips.pick(NET)
        bridge_ips.release("10.88.192.2")  # not ours: left alone
        assert bridge_ips.holder("10.88.192.2") == sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()
    assert bridge_ips.holder("10.88.192.2") is None  # lapsed with its process
    assert bridge_ips.pick(NET) == "10.88.192.2"


def test_a_claim_of_a_process_that_exited_lapses():
    assert _claim_elsewhere("10.88.200.8")  # the child got it, then exited
    assert bridge_ips.claim("10.88.200.8")


def test_pick_skips_the_addresses_to_avoid_and_release_frees_ours():
    with pytest.raises(RuntimeError):
        bridge_ips.pick(NET, avoid=["10.88.192.2"])
    ip = bridge_ips.pick(NET)
    assert ip == "10.88.192.2"
    assert bridge_ips.claim(ip)
    bridge_ips.release(ip)
    assert bridge_ips.holder(ip) is None


def test_a_claim_held_here_is_refused_to_another_process():
    assert bridge_ips.claim("10.88.200.9")
    assert not _claim_elsewhere("10.88.200.9")
