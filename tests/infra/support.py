"""Podman mail hosts for the Ansible tests and benchmark: keys, hosts, variables, DKIM in the local BIND.

Every lab has its own container prefix and SSH key and removes its hosts when it closes, so runs never
touch each other's (or the dev stack's) hosts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from devenv.podman_hosts import PodmanHosts
from modules.ansible import runner
from modules.ansible.mailhosts import DEV_GROUP_VARS

__all__ = ["DEV_GROUP_VARS", "Lab", "dns_txt", "native_host_vars", "publish_dkim", "run_infra_checks"]

REPO_ROOT = Path(__file__).resolve().parents[2]


def ssh_keypair(folder: Path) -> tuple[Path, str]:
    """A fresh ed25519 key: (private key file, mode 0600, OpenSSH format; public key line)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = folder / "id_ed25519"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    private.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode() + " penguinmails-ansible-test"


@dataclass
class Lab:
    """Hosts of one test run: ``create`` them, ``inventory`` them, ``close`` removes them all."""

    folder: Path
    kind: str = "mailhost"
    prefix: str = field(default_factory=lambda: f"pm-ans-{uuid.uuid4().hex[:6]}")
    hosts: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # testinfra's ansible backend runs ansible-inventory: use the venv's.
        venv_bin = str(Path(sys.executable).parent)
        if venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = os.pathsep.join([venv_bin, os.environ.get("PATH", "")])
        self.folder.mkdir(parents=True, exist_ok=True)
        self.key_file, self.public_key = ssh_keypair(self.folder)
        self.podman = PodmanHosts(prefix=self.prefix, kind=self.kind)

    def create(self, name: str, fqdn: str) -> dict[str, str]:
        ip = self.podman.create(name, [self.public_key], hostname=fqdn)
        self.hosts[name] = {"name": name, "fqdn": fqdn, "ip": ip}
        return self.hosts[name]

    def connection(self) -> runner.Connection:
        return runner.Connection(private_key_file=str(self.key_file), host_key_checking="off")

    def inventory(
        self,
        names: list[str] | None = None,
        group: str = "mailhosts",
        host_vars: dict[str, dict[str, Any]] | None = None,
        group_vars: dict[str, Any] | None = None,
        playbook: str | None = None,
    ) -> str:
        hosts = [self.hosts[n] for n in (names or list(self.hosts))]
        inventory = runner.build_inventory(
            hosts,
            group,
            host_vars=host_vars,
            group_vars={**DEV_GROUP_VARS, **(group_vars or {})},
            connection=self.connection(),
        )
        playbook = playbook or ("mailu.yml" if group == "mailu" else "mailhost.yml")
        return runner.render_inventory(inventory, self.prefix, playbook)

    def close(self) -> None:
        """Remove the hosts, and the facts and run artifacts kept for this lab's stack name."""
        self.podman.clear()
        for kind in ("facts", "artifacts"):
            shutil.rmtree(runner.state_dir() / kind / self.prefix, ignore_errors=True)


def native_host_vars(host: dict[str, str], domains: list[str]) -> dict[str, Any]:
    """What the platform gives one native host: its domains, its sending IP with their transport."""
    return {
        "postfix_virtual_domains": domains,
        "postfix_sending_ips": [
            {"name": "main", "address": host["ip"], "helo_name": host["fqdn"], "domains": domains}
        ],
        "opendkim_domains": domains,
        "dovecot_domains": domains,
    }


def publish_dkim(env: dict[str, str], zone: str, name: str, txt: str) -> None:
    """Put the DKIM TXT record into the local BIND with a TSIG-signed RFC 2136 update."""
    from modules.dns.rfc2136 import Change, Rfc2136Client, TsigKey

    client = Rfc2136Client(
        env["PENGUINMAILS_DNS_SERVER"],
        int(env["PENGUINMAILS_DNS_PORT"]),
        TsigKey(env["PENGUINMAILS_TSIG_KEY_NAME"], env["PENGUINMAILS_TSIG_SECRET"]),
    )
    client.update(zone, [Change("delete", name, "TXT", txt), Change("add", name, "TXT", txt, 300)])


def dns_txt(env: dict[str, str], name: bytes | str) -> list[bytes]:
    """A TXT lookup answered by the local BIND (dkimpy's ``dnsfunc``)."""
    import dns.message
    import dns.query
    import dns.rdatatype

    qname = name.decode() if isinstance(name, bytes) else name
    query = dns.message.make_query(qname.rstrip("."), dns.rdatatype.TXT)
    answer = dns.query.udp(
        query, env["PENGUINMAILS_DNS_SERVER"], port=int(env["PENGUINMAILS_DNS_PORT"]), timeout=5
    )
    return [b"".join(rdata.strings) for rrset in answer.answer for rdata in rrset]


def run_infra_checks(inventory_file: Path, group: str = "mailhosts") -> subprocess.CompletedProcess:
    """``pytest tests/infra`` with testinfra over the same inventory Ansible used."""
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible" / "ansible.cfg"),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
    }
    command = [
        sys.executable, "-m", "pytest", str(REPO_ROOT / "tests" / "infra"), "-q", "-p", "no:cacheprovider",
        f"--hosts=ansible://{group}", f"--ansible-inventory={inventory_file}", "-o", "addopts=",
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=600)
