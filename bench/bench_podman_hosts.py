"""Podman hosts: cold and warm image builds, create-to-SSH-ready for 1 and 5 hosts, delete.

The cold builds use a salted recipe (new image names, a new debootstrap) beside the images in use, so the
benchmark never disturbs hosts other people run; the salted images are removed afterwards.
"""

from __future__ import annotations

import io
import json
import secrets
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from devenv import images
from devenv.podman_hosts import PodmanHosts

SAMPLES = 3
PARALLEL = 5


def _keypair() -> tuple[paramiko.PKey, str]:
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem)), public.decode()


class _AcceptOnce(paramiko.MissingHostKeyPolicy):
    """Fresh throw-away hosts on podman's bridge: their host keys are new each time, nothing to verify."""

    def missing_host_key(self, client, hostname, key) -> None:
        return None


def _ssh_ready(ip: str, pkey: paramiko.PKey) -> None:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(_AcceptOnce())
    client.connect(ip, username="root", pkey=pkey, look_for_keys=False, allow_agent=False, timeout=10)
    try:
        _, stdout, _ = client.exec_command("true", timeout=30)
        if stdout.channel.recv_exit_status() != 0:
            raise RuntimeError(f"`true` failed on {ip}")
    finally:
        client.close()


def _timed(action) -> float:
    started = time.perf_counter()
    action()
    return round(time.perf_counter() - started, 3)


def _cold_builds() -> dict[str, float]:
    salt = f"bench-{secrets.token_hex(4)}"
    try:
        base = _timed(lambda: images.ensure_image("base", salt=salt))
        mailhost_layer = _timed(lambda: images.ensure_image("mailhost", salt=salt))
        warm = _timed(lambda: images.ensure_image("mailhost", salt=salt))
    finally:
        images.remove_images("mailhost", salt=salt, keep_rootfs_tarball=False)
    return {
        "cold_build_base_s": base,
        "cold_build_mailhost_layer_s": mailhost_layer,
        "cold_build_base_plus_mailhost_s": round(base + mailhost_layer, 3),
        "warm_ensure_image_s": warm,
    }


def run() -> dict:
    result = _cold_builds()
    hosts = PodmanHosts(prefix=f"pm-bench-{secrets.token_hex(3)}")
    result["warm_ensure_image_in_use_s"] = _timed(hosts.ensure_image)
    pkey, public = _keypair()
    try:
        one, delete_one = [], []
        for i in range(SAMPLES):
            one.append(_timed(lambda i=i: _ssh_ready(hosts.create(f"one-{i}", [public]), pkey)))
            delete_one.append(_timed(lambda i=i: hosts.delete(f"one-{i}")))
        result["create_to_ssh_ready_1_host_s"] = statistics.median(one)
        result["delete_1_host_s"] = statistics.median(delete_one)

        names = [f"par-{i}" for i in range(PARALLEL)]

        def create_ready(name: str) -> None:
            _ssh_ready(hosts.create(name, [public]), pkey)

        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            result["create_to_ssh_ready_5_hosts_parallel_s"] = _timed(
                lambda: list(pool.map(create_ready, names))
            )
            result["list_5_hosts_s"] = _timed(hosts.list)
            result["delete_5_hosts_parallel_s"] = _timed(lambda: list(pool.map(hosts.delete, names)))
    finally:
        hosts.clear()
    return result


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
