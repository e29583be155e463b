"""The postfix role's sender routes agent: which domains move or pause when this host's IPs are quarantined.

The agent's planning and its fail-static passes, on files in a temporary folder and a real HTTP endpoint
(the exporter's RoutesServer) on loopback; the real Postfix side is in
tests/integration/test_warmup_enforcement.py.
"""

from __future__ import annotations

import importlib.util
import json
import stat

import pytest

from modules.ansible.runner import ANSIBLE_DIR
from modules.monitoring.routes import RoutesServer
from modules.reputation.checker import Round
from modules.reputation.dnsbl import IpVerdict, Outcome
from modules.reputation.store import Recorded

_spec = importlib.util.spec_from_file_location(
    "sender_routes", ANSIBLE_DIR / "roles" / "postfix" / "files" / "opt" / "penguinmails" / "sender_routes.py"
)
agent_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(agent_module)

TOKEN = "t" * 40
IPS = [
    {"name": "ip1", "address": "192.0.2.1", "domains": ["a1.test", "a2.test"]},
    {"name": "ip2", "address": "192.0.2.2", "domains": ["a3.test"]},
    {"name": "ip3", "address": "192.0.2.3", "domains": ["b1.test"]},
]
TENANTS = {"a1.test": "acme", "a2.test": "acme", "a3.test": "acme", "b1.test": "globex"}


def _plan(quarantined: set[str], warmed: set[str]):
    states = {ip["address"]: {"status": "warmed" if ip["address"] in warmed else "warming"} for ip in IPS}
    return agent_module.plan(IPS, TENANTS, {a: a in quarantined for a in states}, states)


def test_nothing_quarantined_means_no_override():
    assert _plan(set(), {"192.0.2.1", "192.0.2.2", "192.0.2.3"}) == {}


def test_a_quarantined_ips_domains_move_to_a_warmed_ip_of_their_tenant_on_the_host():
    assert _plan({"192.0.2.1"}, {"192.0.2.2", "192.0.2.3"}) == {
        "a1.test": "smtp-ip2:",
        "a2.test": "smtp-ip2:",
    }


def test_they_pause_when_the_tenants_other_ip_is_only_warming_or_another_tenants():
    overrides = _plan({"192.0.2.1"}, {"192.0.2.3"})  # ip2 (acme's) is warming, ip3 (warmed) is globex's
    assert set(overrides) == {"a1.test", "a2.test"}
    assert all(t.startswith("retry:4.7.1 sending IP 192.0.2.1 is quarantined") for t in overrides.values())


def test_a_domain_of_another_tenant_never_moves_onto_a_foreign_ip():
    overrides = _plan({"192.0.2.3"}, {"192.0.2.1", "192.0.2.2"})
    assert list(overrides) == ["b1.test"] and overrides["b1.test"].startswith("retry:")


def test_an_undecided_ip_keeps_its_previous_state():
    previous = {"192.0.2.1": True, "192.0.2.2": False}
    states = {"192.0.2.1": {"quarantined": None}, "192.0.2.2": {"quarantined": True}}
    assert agent_module.decide(IPS, states, previous) == {
        "192.0.2.1": True,  # the round could not decide: stays paused
        "192.0.2.2": True,
        "192.0.2.3": False,  # not in the answer, never seen: normal
    }


def _round(verdicts: dict[str, Outcome], recorded: dict[str, str] | None = None) -> Round:
    rows = {ip: Recorded(ip, True, status, "fair", 0) for ip, status in (recorded or {}).items()}
    return Round(1.0, 0.1, (), tuple(IpVerdict(ip, outcome, ()) for ip, outcome in verdicts.items()), rows)


@pytest.fixture
def endpoint():
    state = {"last": None}
    server = RoutesServer("127.0.0.1", 0, TOKEN, "unit", lambda: state["last"]).start()
    yield server, state
    server.stop()


def _agent(tmp_path, url: str, token: str = TOKEN):
    textfiles = tmp_path / "textfile"
    textfiles.mkdir(exist_ok=True)
    reloads = tmp_path / "reloads"
    config = {
        "url": url,
        "token": token,
        "ips": IPS,
        "tenants": TENANTS,
        "map": str(tmp_path / "sender_routes"),
        "textfile_dir": str(textfiles),
        "timeout_seconds": 2,
        "reload": ["/bin/sh", "-c", f"echo reload >> {reloads}"],
    }
    return agent_module.Agent(config), tmp_path / "sender_routes", reloads, textfiles


def _metric(textfiles, name: str) -> float:
    text = (textfiles / "penguinmails_sender_routes.prom").read_text()
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith(name + " ")))


def test_the_agent_pauses_on_a_listing_reloads_once_and_restores_on_clearing(tmp_path, endpoint):
    server, state = endpoint
    agent, routes, reloads, textfiles = _agent(tmp_path, server.url)
    state["last"] = _round(
        {"192.0.2.1": Outcome.LISTED, "192.0.2.2": Outcome.CLEAN, "192.0.2.3": Outcome.CLEAN}
    )
    assert agent.once() is True
    text = routes.read_text()
    assert "@a1.test retry:4.7.1 sending IP 192.0.2.1 is quarantined" in text
    assert "@a3.test" not in text and "@b1.test" not in text
    assert stat.S_IMODE(routes.stat().st_mode) == 0o644
    assert _metric(textfiles, "penguinmails_sender_routes_paused_domains") == 2
    assert agent.once() is False  # the same answer: no write, no reload
    assert reloads.read_text().count("reload") == 1
    state["last"] = _round({"192.0.2.1": Outcome.CLEAN}, {"192.0.2.1": "warming"})
    assert agent.once() is True
    assert "@" not in routes.read_text()
    assert _metric(textfiles, "penguinmails_sender_routes_paused_domains") == 0
    assert reloads.read_text().count("reload") == 2


def test_the_agent_moves_to_a_warmed_ip_the_oltp_row_names(tmp_path, endpoint):
    server, state = endpoint
    agent, routes, _reloads, textfiles = _agent(tmp_path, server.url)
    state["last"] = _round(
        {"192.0.2.1": Outcome.LISTED, "192.0.2.2": Outcome.CLEAN},
        {"192.0.2.1": "quarantined", "192.0.2.2": "warmed"},
    )
    agent.once()
    assert "@a1.test smtp-ip2:" in routes.read_text()
    assert _metric(textfiles, "penguinmails_sender_routes_moved_domains") == 2


@pytest.mark.parametrize("case", ["wrong token", "no round yet", "nothing listening"])
def test_the_agent_keeps_its_routes_when_the_endpoint_gives_no_usable_answer(tmp_path, endpoint, case):
    server, state = endpoint
    agent, routes, reloads, textfiles = _agent(tmp_path, server.url)
    state["last"] = _round({"192.0.2.1": Outcome.LISTED})
    agent.once()
    paused = routes.read_text()
    assert "@a1.test retry:" in paused
    if case == "wrong token":
        agent, *_ = _agent(tmp_path, server.url, token="x" * 40)
    elif case == "no round yet":
        state["last"] = None
    else:
        server.stop()
    # A fresh agent (a restart) reads the paused map back and keeps it: the IP stays paused.
    agent, *_ = _agent(tmp_path, server.url, token=agent.token)
    assert agent.once() is False
    assert routes.read_text() == paused
    assert reloads.read_text().count("reload") == 1
    assert _metric(textfiles, "penguinmails_sender_routes_quarantined_ips") == 1


def test_the_endpoint_refuses_without_the_token_and_answers_the_round(endpoint):
    import urllib.error
    import urllib.request

    server, state = endpoint
    state["last"] = _round(
        {"192.0.2.1": Outcome.LISTED, "192.0.2.9": Outcome.ERROR}, {"192.0.2.1": "quarantined"}
    )
    for headers in ({}, {"Authorization": "Bearer " + "x" * 40}, {"Authorization": TOKEN}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(server.url, headers=headers), timeout=5)
        assert refused.value.code == 401
    request = urllib.request.Request(server.url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        document = json.loads(answer.read())
    assert document["stack"] == "unit"
    assert document["ips"] == {
        "192.0.2.1": {"quarantined": True, "status": "quarantined", "warmup": None},  # no warm-up loop here
        "192.0.2.9": {"quarantined": None, "status": None, "warmup": None},  # every zone failed: undecided
    }


def test_the_endpoint_needs_a_token():
    with pytest.raises(ValueError, match="token"):
        RoutesServer("127.0.0.1", 0, "", "unit", lambda: None)


def test_a_silent_endpoint_is_logged_once_and_its_return_once(tmp_path, endpoint, caplog):
    server, state = endpoint
    agent, *_ = _agent(tmp_path, server.url)
    state["last"] = None  # 503 on every pass
    with caplog.at_level("WARNING", logger="sender-routes"):
        for _ in range(5):
            agent.once()
        state["last"] = _round({"192.0.2.1": Outcome.CLEAN})
        agent.once()
        agent.once()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("keeping the current routes" in m for m in messages) == 1, messages
    assert sum("answers again" in m for m in messages) == 1, messages
