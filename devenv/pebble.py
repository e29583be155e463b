"""Pebble, Let's Encrypt's ACME test CA (Debian package ``pebble`` 2.4), so dev hosts get real ACME certificates.

Pebble validates DNS-01 challenges by asking the stack's BIND (``-dnsserver 127.0.0.1:5353``): a host's
certbot publishes ``_acme-challenge`` TXT records there with the narrow ACME TSIG key (``devenv.bind``), and
Pebble issues once it sees them. Nothing is faked: ``PEBBLE_VA_ALWAYS_VALID`` stays off.

Where it listens: the podman hosts must reach its ACME directory, so it listens on podman's bridge address
(10.88.0.1, which this machine reaches too) when that bridge exists, else on loopback only (the bridge
appears with the first container; ``start`` moves Pebble onto it then). Never on every interface.

Two CAs, both dev-only:

* **Pebble's HTTPS certificate.** Debian's package ships no test certificates (upstream's minica is not
  in it), so this service makes its own small CA once (``https-ca.pem``) and a server certificate for
  127.0.0.1 and 10.88.0.1; certbot trusts it through ``REQUESTS_CA_BUNDLE`` (``PENGUINMAILS_ACME_SERVER_CA_FILE``).
* **The issuing root.** Pebble makes a new root on every start. ``roots.pem`` accumulates every root it has
  served (from its management endpoint ``/roots/0``) so certificates issued before a restart still
  validate; its path is ``PENGUINMAILS_DEV_CA_FILE``.

Validity: Pebble 2.4 has no setting for it (its certificates last five years, and it has no ARI or
short-lived profiles), so renewals are driven from the client side: certbot's ``renew_before_expiry``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import urllib.request
from pathlib import Path

from devenv.base import Service, ServiceStatus, unless_zombie, wait_until
from devenv.bind import BIND_PORT
from devenv.podman_hosts import ensure_default_bridge
from devenv.tls import ensure_server_files
from modules.errors import DevenvError

PEBBLE_PORT = 14000
PODMAN_GATEWAY = "10.88.0.1"


def address_is_local(address: str) -> bool:
    """Whether this machine holds ``address`` (a bind to it succeeds)."""
    try:
        with socket.socket() as sock:
            sock.bind((address, 0))
        return True
    except OSError:
        return False


def _pem_blocks(text: str) -> list[str]:
    marker = "-----END CERTIFICATE-----"
    return [block.strip() + "\n" + marker + "\n" for block in text.split(marker) if "BEGIN" in block]


class PebbleService(Service):
    name = "pebble"
    port = PEBBLE_PORT

    def __init__(
        self,
        root: Path | None = None,
        port: int | None = None,
        management_port: int | None = None,
        dns_server: str = f"127.0.0.1:{BIND_PORT}",
    ):
        super().__init__(root, port)
        self.management_port = management_port or self.port + 1000
        self.dns_server = dns_server
        self.host = PODMAN_GATEWAY if address_is_local(PODMAN_GATEWAY) else "127.0.0.1"

    # Files -------------------------------------------------------------------------------------------
    @property
    def https_ca_file(self) -> Path:
        return self.dir / "https-ca.pem"

    @property
    def ca_bundle_file(self) -> Path:
        return self.dir / "roots.pem"

    @property
    def config_file(self) -> Path:
        return self.dir / "pebble-config.json"

    @property
    def directory_url(self) -> str:
        return f"https://{self.host}:{self.port}/dir"

    def _ensure_https_certificate(self) -> None:
        """A dev-only CA and Pebble's server certificate for loopback and the podman bridge (made once)."""
        ensure_server_files(
            ca_name="penguinmails devenv pebble https CA",
            cert_file=self.dir / "https.pem",
            key_file=self.dir / "https.key",
            ca_file=self.https_ca_file,
            dns_names=("localhost",),
            ip_addresses=("127.0.0.1", PODMAN_GATEWAY),
        )

    def config_text(self) -> str:
        return json.dumps(
            {
                "pebble": {
                    "listenAddress": f"{self.host}:{self.port}",
                    # The management API hands out the roots (and their keys): this machine only.
                    "managementListenAddress": f"127.0.0.1:{self.management_port}",
                    "certificate": str(self.dir / "https.pem"),
                    "privateKey": str(self.dir / "https.key"),
                    # HTTP-01 / TLS-ALPN-01 are not used (DNS-01 only); keep them off the well-known ports.
                    "httpPort": 5002,
                    "tlsPort": 5001,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            },
            indent=2,
        )

    # Lifecycle ---------------------------------------------------------------------------------------
    def pid(self) -> int | None:
        """As the base class, but an exited child not yet reaped (a zombie of this process) is gone."""
        return unless_zombie(super().pid())

    def stop(self) -> ServiceStatus:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: self.pid() is None, f"pebble (pid {pid}) to stop", timeout=30)
        self.pid_file.unlink(missing_ok=True)
        return self.status()

    def _listening_host(self) -> str | None:
        try:
            return json.loads(self.config_file.read_text())["pebble"]["listenAddress"].rsplit(":", 1)[0]
        except (OSError, ValueError, KeyError):
            return None

    def _start(self) -> None:
        binary = shutil.which("pebble") or "/usr/bin/pebble"
        if not Path(binary).exists():
            raise DevenvError("pebble is not installed (run `make bootstrap`; Debian package pebble)")
        self._ensure_https_certificate()
        self.config_file.write_text(self.config_text())
        env = {
            **os.environ,
            "PEBBLE_VA_NOSLEEP": "1",  # no random 0-15 s sleep before each validation
            "PEBBLE_WFE_NONCEREJECT": "0",  # certbot retries bad nonces, but a flaky dev CA helps no one
        }
        log = (self.dir / "pebble.log").open("ab")
        process = subprocess.Popen(
            [binary, "-config", str(self.config_file), "-dnsserver", self.dns_server, "-strict=false"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.dir,
            start_new_session=True,
        )
        self.pid_file.write_text(str(process.pid))

    def start(self) -> ServiceStatus:
        # The hosts reach the CA on podman's bridge: make it exist (a fresh machine has none until the first
        # container). Started on loopback before the bridge existed: move onto it.
        with contextlib.suppress(FileNotFoundError):  # no podman here: loopback only, as status says
            ensure_default_bridge()
        self.host = PODMAN_GATEWAY if address_is_local(PODMAN_GATEWAY) else "127.0.0.1"
        if self.running() and self._listening_host() != self.host:
            self.stop()
        super().start()
        wait_until(self.collect_root, f"pebble's root on 127.0.0.1:{self.management_port}", timeout=30)
        return self.status()

    def _management(self, path: str) -> str:
        context = ssl.create_default_context(cafile=str(self.https_ca_file))
        url = f"https://127.0.0.1:{self.management_port}{path}"
        with urllib.request.urlopen(url, timeout=5, context=context) as answer:  # loopback only
            return answer.read().decode()

    def collect_root(self) -> bool:
        """Add the root Pebble serves now to ``roots.pem`` (kept across restarts); False if not reachable."""
        try:
            roots = _pem_blocks(self._management("/roots/0"))
        except OSError:
            return False
        known = self.ca_bundle_file.read_text() if self.ca_bundle_file.exists() else ""
        missing = [root for root in roots if root.strip() not in known]
        if missing:
            with self.ca_bundle_file.open("a") as handle:
                handle.writelines(missing)
        return bool(roots)

    def status(self) -> ServiceStatus:
        status = super().status()
        if status.running and self.host == "127.0.0.1":
            detail = f"{status.detail}, loopback only: podman's bridge is not up yet (start again once it is)"
            return ServiceStatus(status.name, True, status.address, detail)
        return status

    def env(self) -> dict[str, str]:
        return {
            "PENGUINMAILS_ACME_DIRECTORY": self.directory_url,
            "PENGUINMAILS_ACME_SERVER_CA_FILE": str(self.https_ca_file),
            "PENGUINMAILS_DEV_CA_FILE": str(self.ca_bundle_file),
        }
