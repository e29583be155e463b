#!/usr/bin/python3
"""Keep this host's sender routes in step with its sending IPs' quarantine (the reputation checker's verdicts).

Every ``interval_seconds`` the agent asks the platform's reputation endpoint (the penguinmails exporter's
``/v1/sending-ips``, bearer token) for the state of this host's IPs and writes the overrides map
(``/etc/postfix/sender_routes``, texthash, read before the base ``sender_transports``): a domain whose IP is
quarantined moves to another warmed, unquarantined IP of this host that already sends for its tenant, or,
with none, is paused with ``retry:`` (Postfix keeps its mail queued; nothing is lost). When the map changes
Postfix is reloaded, and deferred mail is re-routed at its next retry.

With a ``warmup`` section in its config the agent also owns the warm-up caps of the IPs listed there (the
role's start-day caps are their seed): each IP's ``warmup`` from the answer (the warm-up job's stored plan)
becomes postfwd's rules (daily total and large receivers, 450 4.7.1 over a cap) and the hourly
``smtp-<name>_transport_rate_delay`` in main.cf; postfwd is restarted and Postfix reloaded only when
their file changed. What it applied is saved in a state file that the role reads on its next converge, so
a converge renders the agent's caps and never puts older ones back. The rules file is byte for byte what
the role's postfwd.cf.j2 renders for the same caps (tests/unit/ansible/test_sender_routes_caps.py holds
them together).
A held IP gets what the endpoint serves: a hold freezes the plan's day, so its caps are the held day's.
A changed daily cap is a new day of the plan, so the IP's postfwd counters start again with it.

Fail static: when the endpoint does not answer, answers badly, or has no round yet, the map stays as it is
(an IP the endpoint does not decide keeps its last state), and so do the caps (an IP without usable
warm-up data keeps its last ones). Each pass writes textfile metrics for node exporter. Only the Python
standard library: hosts have python3 for Ansible and nothing else is needed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger("sender-routes")
PAUSE = "retry:4.7.1 sending IP {ip} is quarantined (listed on a DNSBL); mail waits for it to clear"
MAX_ANSWER = 4 * 1024 * 1024
WARN_EVERY_SECONDS = 600


class AnswerError(Exception):
    """The endpoint did not give a usable answer; the map is left alone."""


def fetch_states(url: str, token: str, timeout: float) -> dict[str, dict]:
    """``{ip: {"quarantined": bool | None, "status": str | None}}`` from the endpoint."""
    if not url.startswith(("http://", "https://")):
        raise AnswerError(f"endpoint {url!r} is not an http(s) URL")
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - checked just above
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - the configured endpoint
            body = answer.read(MAX_ANSWER + 1)
    except urllib.error.HTTPError as exc:
        raise AnswerError(f"HTTP {exc.code} from {url}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise AnswerError(f"{url} did not answer: {getattr(exc, 'reason', exc)}") from None
    if len(body) > MAX_ANSWER:
        raise AnswerError(f"answer from {url} is over {MAX_ANSWER} bytes")
    try:
        document = json.loads(body)
    except ValueError:
        raise AnswerError(f"answer from {url} is not JSON") from None
    ips = document.get("ips") if isinstance(document, dict) else None
    if not isinstance(ips, dict):
        raise AnswerError(f"answer from {url} has no 'ips' object")
    return {str(ip): state for ip, state in ips.items() if isinstance(state, dict)}


def decide(ips: list[dict], states: dict[str, dict], previous: dict[str, bool]) -> dict[str, bool]:
    """Per address: quarantined or not. An address the answer leaves undecided keeps its previous state."""
    found = {}
    for ip in ips:
        value = states.get(ip["address"], {}).get("quarantined")
        found[ip["address"]] = value if isinstance(value, bool) else previous.get(ip["address"], False)
    return found


def plan(
    ips: list[dict], tenants: dict[str, str], quarantined: dict[str, bool], states: dict[str, dict]
) -> dict[str, str]:
    """``{domain: transport}`` for the domains that must not use their own IP now (empty: all is normal).

    A moved domain goes to the least loaded warmed, unquarantined IP here that already carries a domain of
    its tenant (never to a warming IP: a cold IP taking a listed IP's volume would be burned next).
    """
    load = {ip["address"]: 0 if quarantined.get(ip["address"]) else len(ip.get("domains", [])) for ip in ips}
    overrides: dict[str, str] = {}
    for ip in sorted(ips, key=lambda i: i["name"]):
        if not quarantined.get(ip["address"]):
            continue
        for domain in sorted(ip.get("domains", [])):
            tenant = tenants.get(domain)
            targets = [
                other
                for other in ips
                if other is not ip
                and not quarantined.get(other["address"])
                and states.get(other["address"], {}).get("status") == "warmed"
                and tenant is not None
                and any(tenants.get(d) == tenant for d in other.get("domains", []))
            ]
            if targets:
                target = min(targets, key=lambda o: (load[o["address"]], o["name"]))
                load[target["address"]] += 1
                overrides[domain] = f"smtp-{target['name']}:"
            else:
                overrides[domain] = PAUSE.format(ip=ip["address"])
    return overrides


def render(overrides: dict[str, str]) -> str:
    lines = [
        "# Written by /opt/penguinmails/sender_routes.py: quarantine overrides, read before sender_transports."
    ]
    lines += [f"@{domain} {transport}" for domain, transport in sorted(overrides.items())]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


POSTFWD_HEADER = """\
# postfwd rules: the daily warm-up cap of each sending IP (postfix_warmup_daily_caps), asked from the
# submission ports' recipient restrictions. Over a cap the answer is a 4xx: the client keeps the message and
# retries; nothing is ever rejected for good here. Every recipient counts once (RCPT stage). The large
# receivers' caps come before the IP's total: a recipient deferred by its receiver's cap is not counted in
# the total (a counter only grows for requests it lets through).
"""


def parse_caps(entry: object, provider_domains: dict[str, list[str]], seed: bool = False) -> dict | None:
    """One IP's ``warmup`` from the answer as the agent keeps it, or None when it is not usable (then the IP
    keeps its last caps). Provider groups the host has no recipient domains for are left out. A seed (the
    role's caps) may have no hourly cap: then main.cf keeps the IP's rate until the endpoint gives one."""
    if not isinstance(entry, dict):
        return None

    def count(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    daily, hourly, providers = entry.get("daily"), entry.get("hourly"), entry.get("providers", {})
    if (
        not count(daily)
        or not (count(hourly) or (seed and hourly is None))
        or not isinstance(providers, dict)
    ):
        return None
    if not all(isinstance(g, str) and count(n) for g, n in providers.items()):
        return None
    day = entry.get("day")
    return {
        "day": day if count(day) else None,
        "daily": daily,
        "hourly": hourly,
        "providers": {g: n for g, n in sorted(providers.items()) if provider_domains.get(g)},
        "held": entry.get("held") is True,
    }


def render_postfwd(
    managed: str,
    local_domains: list[str],
    ips: list[dict],
    caps: dict[str, dict],
    window: int,
    provider_domains: dict[str, list[str]],
) -> str:
    """postfwd's rules for the capped IPs (``caps`` by IP name), as templates/etc/postfix/postfwd.cf.j2."""
    lines = [f"# {managed}", *POSTFWD_HEADER.splitlines()]
    if local_domains:
        lines += [
            "# Mail to this host's own mailboxes is delivered over LMTP and never leaves through a sending IP.",
            "id=LOCAL ; protocol_state==RCPT ; action=DUNNO",
            *(f"    recipient_domain=={domain}" for domain in sorted(local_domains)),
        ]
    for ip in sorted(ips, key=lambda i: i["name"]):
        cap = caps.get(ip["name"])
        if cap is None or not ip.get("domains"):  # no rule without domains: it would match every sender
            continue
        name, over = ip["name"], "450 4.7.1 Daily warm-up cap of sending IP"
        lines += [
            f"# {name}: {ip['address']}, {cap['daily']} per {window} s",
            f"id=IP-{name} ; protocol_state==RCPT ; action=set(pm_sending_ip={name})",
            *(f"    sender_domain=={domain}" for domain in sorted(ip["domains"])),
        ]
        for group, limit in sorted(cap["providers"].items()):
            lines.append(
                f"id=CAP-{name}-{group} ; pm_sending_ip=={name} ; action=rate(pm_sending_ip/{limit}/{window}/"
                f"{over} {name} for {group} reached, try again later)"
            )
            lines += [f"    recipient_domain=={domain}" for domain in sorted(provider_domains[group])]
        lines += [
            f"id=CAP-{name} ; pm_sending_ip=={name}",
            f"    action=rate(pm_sending_ip/{cap['daily']}/{window}/{over} {name} reached, try again later)",
        ]
    return "\n".join(lines) + "\n"


def rate_delay(hourly: int) -> str:
    """``transport_rate_delay`` for an hourly cap, as main.cf.j2 renders it (3600 / cap, rounded up)."""
    return f"{math.ceil(3600 / hourly)}s"


def set_main_cf(text: str, values: dict[str, str]) -> str:
    """main.cf with each ``name = value`` set in place (appended when missing), like ``postconf -e``."""
    lines = text.splitlines()
    for name, value in values.items():
        pattern = re.compile(rf"^{re.escape(name)}\s*=")
        line = f"{name} = {value}"
        found = [i for i, existing in enumerate(lines) if pattern.match(existing)]
        if found:
            for i in found:
                lines[i] = line
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def write_metrics(
    folder: str | None, *, success: float | None, paused: int, moved: int, quarantined: int
) -> None:
    if not folder or not Path(folder).is_dir():
        return
    prefix = "penguinmails_sender_routes"
    lines = [
        f"# HELP {prefix}_last_success_timestamp_seconds When the agent last had an answer from the endpoint.",
        f"# TYPE {prefix}_last_success_timestamp_seconds gauge",
        f"{prefix}_last_success_timestamp_seconds {success if success is not None else 0}",
        f"# HELP {prefix}_paused_domains Sending domains paused because their IP is quarantined.",
        f"# TYPE {prefix}_paused_domains gauge",
        f"{prefix}_paused_domains {paused}",
        f"# HELP {prefix}_moved_domains Sending domains moved to another IP of their tenant.",
        f"# TYPE {prefix}_moved_domains gauge",
        f"{prefix}_moved_domains {moved}",
        f"# HELP {prefix}_quarantined_ips This host's sending IPs that are quarantined.",
        f"# TYPE {prefix}_quarantined_ips gauge",
        f"{prefix}_quarantined_ips {quarantined}",
    ]
    write_atomically(Path(folder) / "penguinmails_sender_routes.prom", "\n".join(lines) + "\n")


def write_caps_metrics(
    folder: str | None, ips: list[dict], caps: dict[str, dict], applied: float | None
) -> None:
    if not folder or not Path(folder).is_dir():
        return
    prefix = "penguinmails_warmup_host"
    lines = [
        f"# HELP {prefix}_caps_applied_timestamp_seconds When the agent last applied caps the endpoint gave.",
        f"# TYPE {prefix}_caps_applied_timestamp_seconds gauge",
        f"{prefix}_caps_applied_timestamp_seconds {applied if applied is not None else 0}",
    ]
    for metric, key, what in (
        ("daily_cap", "daily", "The daily warm-up cap this host enforces for the IP (postfwd)."),
        ("hourly_cap", "hourly", "The hourly warm-up cap this host enforces for the IP (transport rate)."),
        ("held", "held", "1 while the IP's plan is held on its day."),
    ):
        lines += [f"# HELP {prefix}_{metric} {what}", f"# TYPE {prefix}_{metric} gauge"]
        for ip in sorted(ips, key=lambda i: i["name"]):
            cap = caps.get(ip["name"])
            if cap is not None and cap.get(key) is not None:
                lines.append(f'{prefix}_{metric}{{ip="{ip["address"]}",name="{ip["name"]}"}} {int(cap[key])}')
    write_atomically(Path(folder) / "penguinmails_warmup_caps.prom", "\n".join(lines) + "\n")


class Caps:
    """The warm-up caps this host enforces for the IPs of the config's ``warmup`` section."""

    def __init__(self, warmup: dict, ips: list[dict], local_domains: list[str], managed: str):
        self.seed = warmup.get("seed", {})
        self.ips = [ip for ip in ips if ip["name"] in self.seed]
        self.local_domains = local_domains
        self.managed = managed
        self.window = int(warmup.get("window", 86400))
        self.provider_domains = warmup.get("provider_domains", {})
        self.state = Path(warmup.get("state", "/var/lib/penguinmails/warmup-caps.json"))
        self.postfwd = Path(warmup.get("postfwd_config", "/etc/postfix/postfwd.cf"))
        self.main_cf = Path(warmup.get("main_cf", "/etc/postfix/main.cf"))
        self.postfwd_pidfile = Path(warmup.get("postfwd_pidfile", "/var/run/postfwd.pid"))
        self.postfwd_start = warmup.get("postfwd_start", ["/etc/init.d/postfwd", "start"])
        address = warmup.get("postfwd_address")
        self.postfwd_address = (address, int(warmup.get("postfwd_port", 10040))) if address else None
        self.postfwd_delrate = warmup.get("postfwd_delrate", ["/usr/sbin/postfwd", "--delrate={item}"])
        self.applied_at: float | None = None
        self.restart_counts: set[str] = set()  # IPs whose daily caps changed: their counters start again
        # The seed (the role's start-day caps), then what the agent applied before a restart.
        self.caps = {name: parse_caps(c, self.provider_domains, seed=True) for name, c in self.seed.items()}
        self.caps = {name: c for name, c in self.caps.items() if c is not None}
        saved = self._saved()
        if saved:
            self.applied_at = saved.get("applied_at")
            for name, cap in saved.get("ips", {}).items():
                parsed = parse_caps(cap, self.provider_domains, seed=True)
                if name in self.caps and parsed is not None:
                    self.caps[name] = parsed

    def _saved(self) -> dict:
        try:
            saved = json.loads(self.state.read_text())
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}

    def update(self, states: dict[str, dict] | None) -> list[str]:
        """Take each IP's usable ``warmup`` from the answer (None: no answer); the IPs whose caps changed."""
        if states is None:
            return []
        changed, usable = [], False
        for ip in self.ips:
            found = parse_caps(states.get(ip["address"], {}).get("warmup"), self.provider_domains)
            if found is None:
                continue
            usable = True
            if found != self.caps.get(ip["name"]):
                log.warning(
                    "warm-up caps of %s (%s) changed: %s -> day %s, %d a day, %d an hour%s%s",
                    ip["name"],
                    ip["address"],
                    _describe(self.caps.get(ip["name"])),
                    found["day"],
                    found["daily"],
                    found["hourly"],
                    "".join(f", {g} {n}" for g, n in found["providers"].items()),
                    " (held)" if found["held"] else "",
                )
                changed.append(ip["name"])
                previous = self.caps.get(ip["name"]) or {}
                if (previous.get("daily"), previous.get("providers")) != (found["daily"], found["providers"]):
                    self.restart_counts.add(ip["name"])
            self.caps[ip["name"]] = found
        if usable:
            self.applied_at = time.time()
            self._save()
        return changed

    def _save(self) -> None:
        self.state.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "applied_at": self.applied_at,
            "ips": {ip["name"]: self.caps[ip["name"]] for ip in self.ips if ip["name"] in self.caps},
        }
        write_atomically(self.state, json.dumps(document, indent=2, sort_keys=True) + "\n")

    def apply(self) -> tuple[bool, bool]:
        """Write postfwd's rules and main.cf's hourly rates when they differ: (postfwd changed, main.cf changed)."""
        rules = render_postfwd(
            self.managed, self.local_domains, self.ips, self.caps, self.window, self.provider_domains
        )
        postfwd_changed = not self.postfwd.exists() or self.postfwd.read_text() != rules
        if postfwd_changed:
            write_atomically(self.postfwd, rules)
            self._restart_postfwd()
        if postfwd_changed and self.restart_counts:
            # postfwd keys a counter by rule and limit and checks every counter of the item it holds, so the
            # old limit's counter would still answer 450 after a raise until its window ends. A changed cap
            # is a new day of the plan (the job moves a day at a time): its count starts again.
            for name in sorted(self.restart_counts):
                argv = [arg.replace("{item}", f"pm_sending_ip={name}") for arg in self.postfwd_delrate]
                done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
                log.info(
                    "warm-up counters of %s restarted: %s", name, (done.stdout or done.stderr).strip()[-200:]
                )
            self.restart_counts.clear()
        delays = {
            f"smtp-{ip['name']}_transport_rate_delay": rate_delay(self.caps[ip["name"]]["hourly"])
            for ip in self.ips
            if ip["name"] in self.caps and self.caps[ip["name"]]["hourly"] is not None
        }
        main_changed = False
        if delays and self.main_cf.exists():
            current = self.main_cf.read_text()
            wanted = set_main_cf(current, delays)
            if wanted != current:
                write_atomically(self.main_cf, wanted)
                main_changed = True
        return postfwd_changed, main_changed

    def _restart_postfwd(self) -> None:
        """Stop postfwd, wait until it is gone, start it and wait until it answers. Not a HUP: its policy
        processes keep their own copies of the counters over a reload, so counters dropped then come back;
        a new process starts from the counters saved at its stop (--save_rates). Postfix answers 451 to a
        recipient asked in the second this takes: the client retries, nothing is lost. The stop signals the
        pid itself: Debian's init script stops through start-stop-daemon, which refuses postfwd's pid file
        (owned by postfw, not root) and so stops nothing."""
        try:
            pid = int(self.postfwd_pidfile.read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            pid = None  # not running (or no pid file): only the start
        deadline = time.monotonic() + 15
        while pid is not None and time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if pid is not None and _alive(pid):
            log.error("postfwd (pid %s) did not stop within 15 s", pid)
        done = subprocess.run(self.postfwd_start, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            log.error("postfwd start failed: %s", (done.stderr or done.stdout).strip()[-300:])
        if not self._wait_for_postfwd(True):
            log.error("postfwd does not answer on %s:%s after its start", *self.postfwd_address)

    def _wait_for_postfwd(self, answering: bool, seconds: float = 15) -> bool:
        """Until postfwd does (or no longer does) answer a request no rule matches."""
        if not self.postfwd_address:
            return True
        probe = b"request=smtpd_access_policy\nprotocol_state=CONNECT\n\n"  # no rule matches: DUNNO
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(self.postfwd_address, timeout=2) as connection:
                    connection.sendall(probe)
                    up = connection.recv(512).startswith(b"action=")
            except OSError:
                up = False
            if up == answering:
                return True
            time.sleep(0.2)
        return False

    def metrics(self, folder: str | None) -> None:
        write_caps_metrics(folder, self.ips, self.caps, self.applied_at)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(cap: dict | None) -> str:
    return "none" if cap is None else f"{cap['daily']} a day, {cap['hourly'] or 'no cap'} an hour"


class Agent:
    def __init__(self, config: dict):
        self.url = config["url"]
        self.token = config["token"]
        self.ips = config.get("ips", [])
        self.tenants = config.get("tenants", {})
        self.map = Path(config.get("map", "/etc/postfix/sender_routes"))
        self.metrics = config.get("textfile_dir")
        self.timeout = float(config.get("timeout_seconds", 10))
        self.reload = config.get("reload", ["/usr/sbin/postfix", "reload"])
        self.quarantined: dict[str, bool] = {}
        self.success: float | None = None
        self.failing_since: float | None = None
        self.last_warning = 0.0
        self.overrides = self._current()
        warmup = config.get("warmup")
        managed = config.get("_managed", "Ansible managed")  # postfwd.cf's first line, as the role writes it
        self.caps = Caps(warmup, self.ips, config.get("local_domains", []), managed) if warmup else None
        for transport in self.overrides.values():  # what the map says now is the state to keep on a failure
            if transport.startswith("retry:"):
                self.quarantined.update(
                    {ip["address"]: True for ip in self.ips if ip["address"] in transport}
                )

    def _current(self) -> dict[str, str]:
        if not self.map.exists():
            return {}
        found = {}
        for line in self.map.read_text().splitlines():
            if line.startswith("@") and " " in line:
                domain, transport = line[1:].split(" ", 1)
                found[domain] = transport
        return found

    def once(self) -> bool:
        """One pass; True when the map or the caps changed."""
        try:
            states = fetch_states(self.url, self.token, self.timeout)
        except AnswerError as exc:
            # Said when the endpoint stops answering and then every 10 minutes, not on every pass.
            now = time.monotonic()
            if self.failing_since is None or now - self.last_warning >= WARN_EVERY_SECONDS:
                log.warning("keeping the current routes and caps: %s", exc)
                self.last_warning = now
            if self.failing_since is None:
                self.failing_since = now
            # The caps stay as they are; a changed config (a restart after a converge) is still written out.
            postfwd_changed, main_changed = self._apply_caps(None)
            if main_changed:
                self._reload_postfix()
            self._metrics()
            return postfwd_changed or main_changed
        if self.failing_since is not None:
            log.warning("the endpoint answers again after %.0f s", time.monotonic() - self.failing_since)
            self.failing_since = None
        self.success = time.time()
        self.quarantined = decide(self.ips, states, self.quarantined)
        overrides = plan(self.ips, self.tenants, self.quarantined, states)
        changed = overrides != self._current() or not self.map.exists()
        if changed:
            write_atomically(self.map, render(overrides))
            moved = {d: t for d, t in overrides.items() if not t.startswith("retry:")}
            log.warning(
                "routes changed: %d paused, %d moved (%s)",
                len(overrides) - len(moved),
                len(moved),
                ", ".join(f"{d} -> {t.split(':')[0]}" for d, t in sorted(overrides.items()))
                or "all on their own IP",
            )
        self.overrides = overrides
        postfwd_changed, main_changed = self._apply_caps(states)
        if changed or main_changed:
            self._reload_postfix()  # once for the map and main.cf together
        self._metrics()
        return changed or postfwd_changed or main_changed

    def _apply_caps(self, states: dict[str, dict] | None) -> tuple[bool, bool]:
        """The caps from the answer (None: none, keep them) written out: (postfwd changed, main.cf changed)."""
        if self.caps is None:
            return False, False
        self.caps.update(states)
        return self.caps.apply()

    def _reload_postfix(self) -> None:
        done = subprocess.run(self.reload, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            log.error("postfix reload failed: %s", (done.stderr or done.stdout).strip()[-300:])

    def _metrics(self) -> None:
        paused = sum(1 for t in self.overrides.values() if t.startswith("retry:"))
        write_metrics(
            self.metrics,
            success=self.success,
            paused=paused,
            moved=len(self.overrides) - paused,
            quarantined=sum(1 for v in self.quarantined.values() if v),
        )
        if self.caps is not None:
            self.caps.metrics(self.metrics)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("/etc/penguinmails/sender-routes.json"))
    parser.add_argument(
        "--once", action="store_true", help="one pass, then exit (prints 'changed' when it was)"
    )
    parser.add_argument("--log-file", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(
        filename=args.log_file,
        level=logging.INFO,
        format="%(asctime)s sender-routes[%(process)d]: %(levelname)s %(message)s",
    )
    config = json.loads(args.config.read_text())
    agent = Agent(config)
    if args.once:
        print("changed" if agent.once() else "unchanged")
        return 0
    interval = float(config.get("interval_seconds", 30))
    # A converge writes the config before postfwd's rules (local and provider domains): read it again as
    # soon as it changes, so the agent renders what the role renders instead of undoing it.
    seen = args.config.stat().st_mtime_ns
    while True:
        try:
            changed = args.config.stat().st_mtime_ns
            if changed != seen:
                config = json.loads(args.config.read_text())
                agent, seen = Agent(config), changed
                interval = float(config.get("interval_seconds", 30))
                log.info("config changed: read it again")
            agent.once()
        except Exception:  # keep serving: one bad pass must not stop the agent
            log.exception("pass failed")
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
