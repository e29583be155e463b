"""The sender routes agent's warm-up caps: what it writes for postfwd and main.cf, when it reloads, how it
fails static, and that the role renders exactly what the agent applied (so a converge never reverts it).

The agent runs against the exporter's real RoutesServer on loopback; the role's templates are rendered by
a real ``ansible-playbook`` on localhost into a temporary folder. The real Postfix and postfwd side is in
tests/integration/test_warmup_caps_agent.py.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modules.ansible.runner import ANSIBLE_DIR
from modules.monitoring.routes import RoutesServer
from modules.monitoring.warmup_loop import WarmupRound
from modules.reputation.checker import Round
from modules.reputation.dnsbl import IpVerdict, Outcome
from modules.reputation.warmup import Caps, IpState, WarmupPlan
from modules.reputation.warmup_store import StoredPlan

ROLE = ANSIBLE_DIR / "roles" / "postfix"
_spec = importlib.util.spec_from_file_location(
    "sender_routes_caps", ROLE / "files" / "opt" / "penguinmails" / "sender_routes.py"
)
agent_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(agent_module)

TOKEN = "c" * 40
ADDRESS = "192.0.2.10"
DOMAINS = ["a1.test", "a2.test"]
# What the role gets from the platform: the start day's caps (2 a day, 1 of them to google, 1800 an hour).
HOST_VARS = {
    "postfix_virtual_domains": DOMAINS,
    "postfix_sending_ips": [
        {"name": "main", "address": ADDRESS, "helo_name": "mx.test", "domains": DOMAINS, "hourly_cap": 1800},
        {"name": "spare", "address": "192.0.2.11", "helo_name": "mx2.test", "domains": ["b1.test"]},
    ],
    "postfix_warmup_daily_caps": [{"name": "main", "daily_cap": 2, "provider_caps": {"google": 1}}],
    "postfix_sender_routes_token": TOKEN,
    "postfix_sender_routes_tenants": {"a1.test": "acme", "a2.test": "acme", "b1.test": "acme"},
}


def _stored(
    ip: str, daily: int, hourly: int, providers: dict, held: bool = False, day: int = 3
) -> StoredPlan:
    return StoredPlan(
        ip,
        "warming",
        WarmupPlan(),
        IpState(day=day, held=held),
        Caps(day, daily, hourly, providers),
        None,
        None,
    )


@pytest.fixture
def endpoint():
    state = {"round": Round(1.0, 0.1, (), (IpVerdict(ADDRESS, Outcome.CLEAN, ()),), {}), "warmup": None}
    server = RoutesServer(
        "127.0.0.1", 0, TOKEN, "unit", lambda: state["round"], warmup=lambda: state["warmup"]
    ).start()
    yield server, state
    server.stop()


def _render(tmp_path: Path, name: str, url: str, state_file: Path) -> dict[str, str]:
    """The role's main.cf, postfwd.cf and agent config for HOST_VARS, rendered by ansible-playbook; the
    role reads the agent's state file first, as tasks/main.yml does."""
    out = tmp_path / name
    out.mkdir()
    templates = {
        "main.cf": "etc/postfix/main.cf.j2",
        "postfwd.cf": "etc/postfix/postfwd.cf.j2",
        "sender-routes.json": "etc/penguinmails/sender-routes.json.j2",
    }
    play = [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
            "tasks": [
                {
                    "name": "Read the agent's caps.",
                    "ansible.builtin.include_tasks": str(ROLE / "tasks" / "warmup_state.yml"),
                },
                *(
                    {
                        "name": f"Render {target}.",
                        "ansible.builtin.template": {
                            "src": str(ROLE / "templates" / source),
                            "dest": str(out / target),
                            "mode": "0600",
                        },
                    }
                    for target, source in templates.items()
                ),
            ],
        }
    ]
    (tmp_path / f"{name}.yml").write_text(yaml.safe_dump(play))
    extra = {**HOST_VARS, "postfix_sender_routes_url": url, "__postfix_warmup_state": str(state_file)}
    (tmp_path / f"{name}-vars.json").write_text(json.dumps(extra))
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i", "localhost,",
            "-e", f"@{tmp_path / f'{name}-vars.json'}",
            "-e", "ansible_python_interpreter=" + sys.executable,
            str(tmp_path / f"{name}.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return {target: (out / target).read_text() for target in templates}


def _agent(tmp_path: Path, config: dict):
    """An agent on the rendered config, with its files in ``tmp_path/host`` and reloads recorded."""
    host = tmp_path / "host"
    (host / "textfile").mkdir(parents=True, exist_ok=True)
    reloads = host / "reloads"
    (host / "sender_routes").write_text(agent_module.render({}))  # routes as a converge leaves them
    warmup = None
    if config["warmup"] is not None:
        warmup = {
            **config["warmup"],
            "postfwd_config": str(host / "postfwd.cf"),
            "main_cf": str(host / "main.cf"),
            "state": str(host / "state" / "warmup-caps.json"),
            "postfwd_pidfile": str(host / "postfwd.pid"),  # none: nothing to stop
            "postfwd_start": ["/bin/sh", "-c", f"echo postfwd-start >> {reloads}"],
            "postfwd_delrate": ["/bin/sh", "-c", f"echo delrate:{{item}} >> {reloads}"],
            "postfwd_address": None,  # no postfwd to wait for here
        }
    config = {
        **config,
        "map": str(host / "sender_routes"),
        "textfile_dir": str(host / "textfile"),
        "timeout_seconds": 2,
        "reload": ["/bin/sh", "-c", f"echo postfix >> {reloads}"],
        "warmup": warmup,
    }
    return agent_module.Agent(config), host, reloads


def _reloads(reloads: Path) -> list[str]:
    return reloads.read_text().split() if reloads.exists() else []


def _metric(host: Path, line_start: str) -> float:
    text = (host / "textfile" / "penguinmails_warmup_caps.prom").read_text()
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(line_start)))


def test_the_agent_writes_what_the_role_renders_and_a_converge_renders_what_the_agent_applied(
    tmp_path, endpoint
):
    server, state = endpoint
    state_file = tmp_path / "host" / "state" / "warmup-caps.json"
    first = _render(tmp_path, "seed", server.url, state_file)
    config = json.loads(first["sender-routes.json"])
    assert set(config["warmup"]["seed"]) == {"main"}  # only the IPs the role caps are the agent's
    agent, host, reloads = _agent(tmp_path, config)
    (host / "postfwd.cf").write_text(first["postfwd.cf"])
    (host / "main.cf").write_text(first["main.cf"])
    assert "smtp-main_transport_rate_delay = 2s" in first["main.cf"]

    # The loop has not run: no warm-up data, the seed stays, and the agent's rules are the role's, byte for byte.
    assert agent.once() is False
    assert (host / "postfwd.cf").read_text() == first["postfwd.cf"]
    assert _reloads(reloads) == [] and not state_file.exists()

    state["warmup"] = WarmupRound(2.0, plans=(_stored(ADDRESS, 7, 900, {"google": 3, "yahoo": 2}),))
    assert agent.once() is True
    rules = (host / "postfwd.cf").read_text()
    assert "action=rate(pm_sending_ip/7/86400/450 4.7.1 Daily warm-up cap of sending IP main reached" in rules
    assert "id=CAP-main-yahoo ; pm_sending_ip==main ; action=rate(pm_sending_ip/2/86400/" in rules
    assert "    recipient_domain==ymail.com" in rules
    assert "smtp-main_transport_rate_delay = 4s" in (host / "main.cf").read_text()
    assert "smtp-spare_transport_rate_delay" not in (host / "main.cf").read_text()  # not the agent's IP
    # postfwd restarted with the new rules, then the IP's old counters dropped (a new day's count), Postfix reloaded.
    assert _reloads(reloads) == ["postfwd-start", "delrate:pm_sending_ip=main", "postfix"]
    assert _metric(host, 'penguinmails_warmup_host_daily_cap{ip="192.0.2.10"') == 7
    assert _metric(host, 'penguinmails_warmup_host_hourly_cap{ip="192.0.2.10"') == 900
    assert _metric(host, "penguinmails_warmup_host_caps_applied_timestamp_seconds") > 0

    # The next converge, with the role's (older) start-day caps still in its variables, renders the agent's.
    again = _render(tmp_path, "converge", server.url, state_file)
    assert again["postfwd.cf"] == rules
    assert again["main.cf"] == (host / "main.cf").read_text()
    assert agent.once() is False and len(_reloads(reloads)) == 3  # the same answer: nothing written


def test_a_held_ip_gets_the_caps_of_the_day_it_is_held_on(tmp_path, endpoint):
    """A hold freezes the plan's day (warmup.decide waits while held), so the served caps are that day's:
    the agent applies them and says the IP is held."""
    server, state = endpoint
    config = json.loads(_render(tmp_path, "seed", server.url, tmp_path / "state.json")["sender-routes.json"])
    agent, host, _reloads_file = _agent(tmp_path, config)
    state["warmup"] = WarmupRound(2.0, plans=(_stored(ADDRESS, 5, 60, {}, held=True),))
    agent.once()
    assert "pm_sending_ip/5/86400/" in (host / "postfwd.cf").read_text()
    assert _metric(host, 'penguinmails_warmup_host_held{ip="192.0.2.10"') == 1


def test_only_a_changed_daily_cap_restarts_the_ips_counters(tmp_path, endpoint):
    server, state = endpoint
    agent, host, reloads = _agent(tmp_path, {**CONFIG, "url": server.url})
    (host / "main.cf").write_text("smtp-main_transport_rate_delay = 2s\n")
    agent.once()  # no warm-up data yet: the seed's rules written
    reloads.unlink()
    state["warmup"] = WarmupRound(2.0, plans=(_stored(ADDRESS, 2, 900, {}),))  # the seed's daily cap: 2
    agent.once()
    assert _reloads(reloads) == ["postfix"]  # only the hourly rate changed: no rule, no counter touched
    state["warmup"] = WarmupRound(3.0, plans=(_stored(ADDRESS, 3, 900, {}),))
    agent.once()
    assert _reloads(reloads)[1:] == ["postfwd-start", "delrate:pm_sending_ip=main"]


CONFIG = {
    "url": "",
    "token": TOKEN,
    "_managed": "Ansible managed",
    "ips": [{"name": "main", "address": ADDRESS, "domains": DOMAINS}],
    "local_domains": DOMAINS,
    "warmup": {
        "seed": {"main": {"daily": 2, "hourly": 1800, "providers": {}}},
        "window": 86400,
        "provider_domains": {"google": ["gmail.com"]},
    },
}


@pytest.mark.parametrize(
    "case", ["nothing listening", "503 before a round", "loop failed", "no plan", "bad caps", "wrong token"]
)
def test_the_agent_keeps_its_caps_when_the_endpoint_gives_no_usable_warmup_data(tmp_path, endpoint, case):
    server, state = endpoint
    agent, host, reloads = _agent(tmp_path, {**CONFIG, "url": server.url})
    (host / "main.cf").write_text("smtp-main_transport_rate_delay = 2s\n")
    state["warmup"] = WarmupRound(2.0, plans=(_stored(ADDRESS, 9, 3600, {"google": 4}),))
    assert agent.once() is True
    applied = (host / "postfwd.cf").read_text(), (host / "main.cf").read_text()
    assert "pm_sending_ip/9/86400/" in applied[0] and "= 1s" in applied[1]
    written = len(_reloads(reloads))

    if case == "nothing listening":
        server.stop()
    elif case == "503 before a round":
        state["round"] = None
    elif case == "loop failed":  # OLTP down in the last cycle: no plans, every warmup null
        state["warmup"] = WarmupRound(3.0, error="OperationalError: connection refused")
    elif case == "no plan":
        state["warmup"] = WarmupRound(3.0, plans=(_stored("192.0.2.99", 1, 1, {}),))
    elif case == "bad caps":
        state["warmup"] = WarmupRound(3.0, plans=(_stored(ADDRESS, 0, 3600, {}),))
    else:
        agent.token = "x" * 40
    # A restart too (a fresh agent) starts from what was applied, not from the seed.
    for current in (agent, _agent(tmp_path, {**CONFIG, "url": server.url, "token": agent.token})[0]):
        assert current.once() is False
        assert ((host / "postfwd.cf").read_text(), (host / "main.cf").read_text()) == applied
    assert len(_reloads(reloads)) == written


def test_without_a_warmup_section_the_agent_touches_no_cap(tmp_path, endpoint):
    server, state = endpoint
    # The role writes "warmup": null when it has no caps to seed (a host whose IPs are not capped).
    agent, host, reloads = _agent(tmp_path, {**CONFIG, "url": server.url, "warmup": None})
    state["warmup"] = WarmupRound(2.0, plans=(_stored(ADDRESS, 9, 3600, {}),))
    assert agent.once() is False
    assert not (host / "postfwd.cf").exists() and not (host / "main.cf").exists()
    assert _reloads(reloads) == []


def test_an_ip_without_domains_gets_no_rule_and_unknown_groups_are_left_out():
    rules = agent_module.render_postfwd(
        "Ansible managed",
        [],
        [{"name": "idle", "address": "192.0.2.5", "domains": []}, {"name": "main", "address": ADDRESS, "domains": ["a.test"]}],
        {
            "idle": {"daily": 5, "hourly": 1, "providers": {}},
            "main": agent_module.parse_caps({"daily": 5, "hourly": 1, "providers": {"google": 2, "aliens": 1}}, {"google": ["gmail.com"]}),
        },
        86400,
        {"google": ["gmail.com"]},
    )  # fmt: skip
    assert "IP-idle" not in rules and "CAP-main-google" in rules and "aliens" not in rules


def test_main_cf_values_are_set_in_place_or_appended():
    text = "a = 1\nsmtp-main_transport_rate_delay = 2s\nb = 2\n"
    assert agent_module.set_main_cf(text, {"smtp-main_transport_rate_delay": "4s", "c": "3"}) == (
        "a = 1\nsmtp-main_transport_rate_delay = 4s\nb = 2\nc = 3\n"
    )
