#!/usr/bin/python3
"""Keep this host's sender routes in step with its sending IPs' quarantine (the reputation checker's verdicts).

Every ``interval_seconds`` the agent asks the platform's reputation endpoint (the penguinmails exporter's
``/v1/sending-ips``, bearer token) for the state of this host's IPs and writes the overrides map
(``/etc/postfix/sender_routes``, texthash, read before the base ``sender_transports``): a domain whose IP is
quarantined moves to another warmed, unquarantined IP of this host that already sends for its tenant, or,
with none, is paused with ``retry:`` (Postfix keeps its mail queued; nothing is lost). When the map changes
Postfix is reloaded, and deferred mail is re-routed at its next retry.

Fail static: when the endpoint does not answer, answers badly, or has no round yet, the map stays as it is
(an IP the endpoint does not decide keeps its last state). Each pass writes textfile metrics for node
exporter. Only the Python standard library: hosts have python3 for Ansible and nothing else is needed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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
        """One pass; True when the map changed."""
        try:
            states = fetch_states(self.url, self.token, self.timeout)
        except AnswerError as exc:
            # Said when the endpoint stops answering and then every 10 minutes, not on every pass.
            now = time.monotonic()
            if self.failing_since is None or now - self.last_warning >= WARN_EVERY_SECONDS:
                log.warning("keeping the current routes: %s", exc)
                self.last_warning = now
            if self.failing_since is None:
                self.failing_since = now
            self._metrics()
            return False
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
            done = subprocess.run(self.reload, capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                log.error("postfix reload failed: %s", (done.stderr or done.stdout).strip()[-300:])
        self.overrides = overrides
        self._metrics()
        return changed

    def _metrics(self) -> None:
        paused = sum(1 for t in self.overrides.values() if t.startswith("retry:"))
        write_metrics(
            self.metrics,
            success=self.success,
            paused=paused,
            moved=len(self.overrides) - paused,
            quarantined=sum(1 for v in self.quarantined.values() if v),
        )


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
    while True:
        try:
            agent.once()
        except Exception:  # keep serving: one bad pass must not stop the agent
            log.exception("pass failed")
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
