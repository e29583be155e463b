"""Local BIND 9 (`named`) for the dev stack's zones: loopback only, high port, TSIG-signed dynamic updates.

Config, zone files and journals live in ``.devenv/bind/``. The TSIG key is made once with ``tsig-keygen``.
The zones are ``penguinmails.test``, the local DNSBL ``dnsbl.penguinmails.test``, every zone of
``Pulumi.dev.yaml`` that points at this server, and any listed in ``.devenv/bind/zones.extra`` (one per
line; :meth:`BindService.add_zone` appends there). Starting a running server picks up a changed zone list
with a reload. Tests run private instances with their own folder, port, zone list and key name
(``BindService(root=…, port=…, zones=[…], key_name=…)``).

``named`` drops to the ``bind`` user when every folder above its data can be traversed by it (the shared
instance under the repository); otherwise (pytest's private temp folders) it stays root. A statistics
channel on ``stats_port`` (the shared server: 127.0.0.1:8053, where prometheus-bind-exporter reads it;
private ones: port + 1) reports the messages the server received, which tests use to count update
messages from the server's side.

ACME: a second, narrow TSIG key (``acme-tsig.key``, name ``penguinmails-acme-dev``) may only add or delete
TXT records at ``_acme-challenge.<name>`` for the names the hosts certify (the dev stack's names from
``Pulumi.dev.yaml``, plus ``acme.names.extra``), so a mail host never holds the zone-wide key. Podman hosts
send those updates to 10.88.0.1 (podman's bridge), so the server also listens and answers there.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import yaml

from devenv.base import REPO_ROOT, Service, ServiceStatus, wait_until
from modules.errors import DevenvError

BIND_PORT = 5353
# The shared server's statistics channel: where prometheus-bind-exporter looks by default (issue 12).
BIND_STATS_PORT = 8053
KEY_NAME = "penguinmails-dev"
ACME_KEY_NAME = "penguinmails-acme-dev"
# podman's default bridge: the hosts reach this machine there. named picks the address up when the bridge
# appears later (automatic-interface-scan).
PODMAN_GATEWAY = "10.88.0.1"
PODMAN_NETWORK = "10.88.0.0/16"
# The dev stack's DNSBL (modules/config/reputation.py DEV_ZONE): tests list an IP by adding
# ``<reversed ip>.dnsbl.penguinmails.test A 127.0.0.2`` (and a TXT) with the zone-wide key, and clear it by
# deleting them. Like every DNSBL it carries RFC 5782's test entry for 127.0.0.2.
DNSBL_ZONE = "dnsbl.penguinmails.test"
DEFAULT_ZONES = ("penguinmails.test", DNSBL_ZONE)
_ZONE_RE = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+$")


def dev_stack_acme_names(path: Path = REPO_ROOT / "Pulumi.dev.yaml") -> list[str]:
    """Names the dev stack's hosts certify (``modules.acme.names``); empty when the file does not validate."""
    from modules.acme.names import plan_names
    from modules.ansible.mailhosts import domains_by_node
    from modules.config.loader import load_stack_file
    from modules.errors import ToolkitError

    try:
        config = load_stack_file(path)
        fleet = config.fleet
        hostnames = {node: fleet.node_fqdn(node) or "" for node in fleet.node_names()}
        plan = plan_names(hostnames, domains_by_node(config), [z.name for z in config.dns.zones])
    except (OSError, ToolkitError, ValueError):
        return []
    return sorted({name for names in plan.values() for name in names})


def dev_stack_zones(port: int, path: Path = REPO_ROOT / "Pulumi.dev.yaml") -> list[str]:
    """Zones of the dev stack's config that are served by 127.0.0.1:``port``."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    section = (document.get("config") or {}).get("penguinmails:dns") or {}
    zones = []
    for zone in section.get("zones") or []:
        if not isinstance(zone, dict) or not zone.get("name"):
            continue
        if str(zone.get("server", "127.0.0.1")) == "127.0.0.1" and int(zone.get("port", BIND_PORT)) == port:
            zones.append(str(zone["name"]).rstrip(".").lower())
    return zones


class BindService(Service):
    name = "bind"
    port = BIND_PORT

    def __init__(
        self,
        root: Path | None = None,
        port: int | None = None,
        zones: Iterable[str] | None = None,
        key_name: str = KEY_NAME,
        stats_port: int | None = None,
        acme_names: Iterable[str] | None = None,
        acme_key_name: str = ACME_KEY_NAME,
    ):
        super().__init__(root, port)
        self.key_name = key_name
        self.acme_key_name = acme_key_name
        self.fixed_acme_names = (
            [n.rstrip(".").lower() for n in acme_names] if acme_names is not None else None
        )
        self.fixed_zones = [z.rstrip(".").lower() for z in zones] if zones is not None else None
        self.stats_port = stats_port or (BIND_STATS_PORT if self.port == BIND_PORT else self.port + 1)

    # Files -------------------------------------------------------------------------------------------
    @property
    def conf_file(self) -> Path:
        return self.dir / "named.conf"

    @property
    def key_file(self) -> Path:
        return self.dir / "tsig.key"

    @property
    def extra_zones_file(self) -> Path:
        return self.dir / "zones.extra"

    @property
    def acme_key_file(self) -> Path:
        return self.dir / "acme-tsig.key"

    @property
    def extra_acme_names_file(self) -> Path:
        return self.dir / "acme.names.extra"

    def acme_names(self) -> list[str]:
        """Names whose ``_acme-challenge`` TXT the ACME key may write."""
        names = list(self.fixed_acme_names) if self.fixed_acme_names is not None else dev_stack_acme_names()
        if self.extra_acme_names_file.exists():
            names += [line.strip().lower() for line in self.extra_acme_names_file.read_text().splitlines()]
        valid = []
        for name in dict.fromkeys(n.rstrip(".") for n in names if n.strip()):
            if not _ZONE_RE.match(name):
                raise DevenvError(f"bind: {name!r} is not a valid name for an ACME grant")
            valid.append(name)
        return valid

    def acme_grants(self, zone: str) -> list[str]:
        """update-policy rules of ``zone`` for the ACME key: TXT at ``_acme-challenge.<name>`` only."""
        zones = self.zones()
        rules = []
        for name in self.acme_names():
            inside = [z for z in zones if name == z or name.endswith("." + z)]
            if inside and max(inside, key=len) == zone:
                rules.append(f"grant {self.acme_key_name} name _acme-challenge.{name}. TXT;")
        return rules

    def zones(self) -> list[str]:
        if self.fixed_zones is not None:
            zones = list(self.fixed_zones)
        else:
            zones = [*DEFAULT_ZONES, *dev_stack_zones(self.port)]
        if self.extra_zones_file.exists():
            zones += [line.strip().lower() for line in self.extra_zones_file.read_text().splitlines()]
        valid = []
        for zone in dict.fromkeys(z.rstrip(".") for z in zones if z.strip()):
            if not _ZONE_RE.match(zone):
                raise DevenvError(f"bind: {zone!r} is not a valid zone name")
            valid.append(zone)
        return valid

    def ensure_key(self) -> None:
        """Make the TSIG keys once (``tsig-keygen``), readable by the ``bind`` group only."""
        self._ensure_key_file(self.key_file, self.key_name)
        self._ensure_key_file(self.acme_key_file, self.acme_key_name)

    def _ensure_key_file(self, path: Path, name: str) -> None:
        if path.exists() and (path == self.key_file or f'key "{name}"' in path.read_text()):
            return
        binary = shutil.which("tsig-keygen") or "/usr/sbin/tsig-keygen"
        if not Path(binary).exists():
            raise DevenvError("tsig-keygen is not installed (run `make bootstrap`; Debian package bind9)")
        result = subprocess.run([binary, "-a", "hmac-sha256", name], capture_output=True, text=True)
        if result.returncode != 0:
            raise DevenvError(f"bind: tsig-keygen failed: {result.stderr.strip()}")
        path.write_text(result.stdout)
        path.chmod(0o640)

    def tsig_secret(self, acme: bool = False) -> str:
        """The zone-wide key's secret, or (``acme``) the narrow ACME key's."""
        path = self.acme_key_file if acme else self.key_file
        self._ensure_key_file(path, self.acme_key_name if acme else self.key_name)
        match = re.search(r'secret\s+"([^"]+)"', path.read_text())
        if not match:
            raise DevenvError(f"bind: no secret in {path}")
        return match.group(1)

    def zone_file(self, zone: str) -> Path:
        return self.dir / "zones" / f"{zone}.db"

    def _write_zone(self, zone: str) -> None:
        """A new zone: SOA, NS and the name server's address. Existing zone files are never rewritten
        (their dynamic records live in them and in the journal)."""
        path = self.zone_file(zone)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            "$TTL 3600",
            f"@ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 604800 300",
            f"@ IN NS ns.{zone}.",
            f"ns IN A {self.host}",
        ]
        if zone == DNSBL_ZONE:
            lines += ["2.0.0.127 60 IN A 127.0.0.2", '2.0.0.127 60 IN TXT "RFC 5782 test entry"']
        path.write_text("\n".join([*lines, ""]))

    def config_text(self) -> str:
        d = self.dir
        lines = [
            "// Written by devenv/bind.py; regenerated on every start.",
            f'include "{self.key_file}";',
            f'include "{self.acme_key_file}";',
            "options {",
            f'  directory "{d}";',
            f'  pid-file "{self.pid_file}";',
            f'  session-keyfile "{d / "session.key"}";',
            f'  managed-keys-directory "{d}";',
            f"  listen-on port {self.port} {{ {self.host}; {PODMAN_GATEWAY}; }};",
            "  listen-on-v6 { none; };",
            "  recursion no;",
            "  dnssec-validation no;",
            f"  allow-query {{ {self.host}; {PODMAN_NETWORK}; }};",
            "  allow-transfer { none; };",
            "  notify no;",
            "};",
            "controls { };",
            f"statistics-channels {{ inet {self.host} port {self.stats_port} allow {{ {self.host}; }}; }};",
            "logging {",
            f'  channel main {{ file "{d / "named.log"}" versions 2 size 20m; severity info;',
            "    print-time yes; };",
            "  category default { main; };",
            "  category update { main; };",
            "  category xfer-out { main; };",
            "};",
        ]
        for zone in self.zones():
            lines.append(
                f'zone "{zone}" {{ type primary; file "zones/{zone}.db"; '
                f"update-policy {{ {' '.join([f'grant {self.key_name} zonesub ANY;', *self.acme_grants(zone)])} }}; "
                f"allow-transfer {{ key {self.key_name}; }}; }};"
            )
        return "\n".join(lines) + "\n"

    # Lifecycle ---------------------------------------------------------------------------------------
    def _run_as(self) -> str | None:
        """``bind`` when that user exists and can reach the data folder; else None (stay root)."""
        try:
            pwd.getpwnam("bind")
        except KeyError:
            return None
        for folder in [self.dir, *self.dir.parents]:
            if folder == Path("/"):
                break
            if folder != self.dir and not folder.stat().st_mode & 0o001:
                return None
        return "bind"

    def _prepare(self) -> None:
        self.ensure_key()
        for zone in self.zones():
            self._write_zone(zone)
        self.conf_file.write_text(self.config_text())
        check = shutil.which("named-checkconf") or "/usr/bin/named-checkconf"
        if Path(check).exists():
            result = subprocess.run([check, str(self.conf_file)], capture_output=True, text=True)
            if result.returncode != 0:
                raise DevenvError(
                    f"bind: named-checkconf rejected {self.conf_file}: {result.stdout}{result.stderr}"
                )
        user = self._run_as()
        if user:
            entry = pwd.getpwnam(user)
            for path in [self.dir, *self.dir.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def _start(self) -> None:
        binary = shutil.which("named") or "/usr/sbin/named"
        if not Path(binary).exists():
            raise DevenvError("named is not installed (run `make bootstrap`; Debian package bind9)")
        self._prepare()
        command = [binary, "-c", str(self.conf_file)]
        if self._run_as():
            command += ["-u", self._run_as()]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise DevenvError(f"bind: named did not start: {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> ServiceStatus:
        if self.running():
            if self.conf_file.exists() and self.conf_file.read_text() != self._expected_config():
                self._prepare()
                os.kill(self.pid() or 0, signal.SIGHUP)
        else:
            super().start()
        wait_until(self.zones_loaded, f"bind zones {', '.join(self.zones())} on {self.address}", timeout=30)
        return self.status()

    def _expected_config(self) -> str:
        try:
            return self.config_text()
        except DevenvError:
            return ""

    def add_zone(self, zone: str) -> None:
        """Serve one more zone (kept across restarts) and reload the running server."""
        zone = zone.rstrip(".").lower()
        if zone not in self.zones():
            with self.extra_zones_file.open("a") as handle:
                handle.write(zone + "\n")
        self.start()

    def zones_loaded(self) -> bool:
        return all(self.soa_serial(zone) is not None for zone in self.zones())

    def soa_serial(self, zone: str) -> int | None:
        import dns.exception
        import dns.message
        import dns.query
        import dns.rcode

        try:
            answer = dns.query.udp(dns.message.make_query(zone, "SOA"), self.host, port=self.port, timeout=1)
        except (dns.exception.DNSException, OSError):
            return None
        if answer.rcode() != dns.rcode.NOERROR or not answer.answer:
            return None
        return answer.answer[0][0].serial

    def stats(self) -> dict:
        """The server's counters (``opcodes.UPDATE``, ``nsstats`` …) from its statistics channel."""
        url = f"http://{self.host}:{self.stats_port}/json/v1/server"
        with urllib.request.urlopen(url, timeout=5) as answer:  # loopback statistics channel
            return json.loads(answer.read())

    def update_messages(self) -> int:
        """Update messages received so far (accepted or not)."""
        return int(self.stats().get("opcodes", {}).get("UPDATE", 0))

    def status(self) -> ServiceStatus:
        status = super().status()
        if status.running:
            return ServiceStatus(
                status.name, True, status.address, f"{status.detail}, zones: {len(self.zones())}"
            )
        return status

    def env(self) -> dict[str, str]:
        values = {
            "PENGUINMAILS_DNS_SERVER": self.host,
            "PENGUINMAILS_DNS_PORT": str(self.port),
            "PENGUINMAILS_DNS_STATS_PORT": str(self.stats_port),
            "PENGUINMAILS_TSIG_KEY_NAME": self.key_name,
        }
        try:
            values["PENGUINMAILS_TSIG_SECRET"] = self.tsig_secret()
        except DevenvError:
            pass  # BIND not installed yet: `make bootstrap` comes first
        # What the hosts' certbot uses: the narrow key, and the server at the address podman hosts reach.
        values["PENGUINMAILS_ACME_TSIG_KEY_NAME"] = self.acme_key_name
        values["PENGUINMAILS_ACME_DNS_SERVER"] = PODMAN_GATEWAY
        if self.acme_key_file.exists():
            values["PENGUINMAILS_ACME_TSIG_SECRET"] = self.tsig_secret(acme=True)
        return values


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
