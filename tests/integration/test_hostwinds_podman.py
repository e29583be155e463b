"""The dev fleet on the simulator's podman backend: real containers that answer SSH with the configured key.

The stack uses the fleet section of ``Pulumi.dev.yaml`` (2 nodes, the dev operator key) against a private
simulator with its own container prefix, so the shared dev stack and its containers are not touched.
"""

from __future__ import annotations

import uuid

import paramiko
import pytest

from devenv.podman_hosts import PodmanHosts
from modules.config.loader import load_stack_file
from modules.engine import REPO_ROOT
from tests.support.hostwinds import fleet_stack, private_simulator

pytestmark = pytest.mark.engine


def _ssh_run(ip: str, key: paramiko.PKey, command: str) -> str:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - a container made seconds ago
    try:
        client.connect(ip, username="root", pkey=key, look_for_keys=False, allow_agent=False, timeout=20)
        _, stdout, _ = client.exec_command(command, timeout=20)
        return stdout.read().decode().strip()
    finally:
        client.close()


def test_dev_fleet_nodes_are_containers_answering_ssh_with_the_operator_key(tmp_path, devenv_env):
    dev = load_stack_file(REPO_ROOT / "Pulumi.dev.yaml").fleet
    prefix = f"pm-hwt{uuid.uuid4().hex[:6]}"
    hosts = PodmanHosts(prefix)
    try:
        with private_simulator(tmp_path / "sim", backend="podman", podman_prefix=prefix) as sim:
            fleet = dev.model_dump(
                include={"nodes", "rdns_domain", "ssh_key_names", "firewall_profile", "image"}
            )
            stack = fleet_stack(
                tmp_path,
                sim,
                "podman",
                nodes=dev.nodes,
                fleet=fleet,
                hostwinds={"build_timeout_seconds": 900},
                whole_project=True,
            )
            stack.up(color="never")

            inventory = stack.outputs()["fleet_nodes"].value
            assert len(inventory) == dev.nodes == 2
            containers = hosts.list()
            assert sorted(containers.values()) == sorted(node["ip"] for node in inventory)

            private_key, _ = sim.service.operator_key()
            operator = paramiko.Ed25519Key.from_private_key_file(str(private_key))
            for node in inventory:
                answer = _ssh_run(node["ip"], operator, "python3 -c 'print(42)' && cat /etc/debian_version")
                first, version = answer.splitlines()
                assert first == "42" and version.startswith("12"), answer

            # A key that is not on the instance is refused.
            with pytest.raises(paramiko.AuthenticationException):
                _ssh_run(inventory[0]["ip"], paramiko.RSAKey.generate(2048), "true")

            stack.destroy(color="never")
            assert hosts.list() == {}
            assert sim.instances() == []
            stack.workspace.remove_stack("podman")
    finally:
        hosts.clear()
