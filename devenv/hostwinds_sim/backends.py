"""What a simulated instance is: a record with a made-up address, or a real podman container.

``memory`` hands out addresses from 198.18.0.0/15 (the benchmarking range, never routed) at once; the
instance still spends the build time in BUILD. ``podman`` builds a container through
:class:`devenv.podman_hosts.PodmanHosts` in a background thread: the instance's SSH keys go into root's
``authorized_keys``, its main IP is the container's address, and it becomes ACTIVE when the build time has
passed and sshd answers. Terminating removes the container.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from devenv import bridge_ips
from devenv.hostwinds_sim.model import Backend, SimError

log = logging.getLogger("hostwinds_sim")

_V4_NET = ipaddress.ip_network("198.18.0.0/15")
_V6_NET = ipaddress.ip_network("2001:db8:4857::/48")


class MemoryBackend(Backend):
    """Instances are records only; every address is fresh (a changed main IP is a different one)."""

    name = "memory"

    def __init__(self) -> None:
        self._next = 10
        self._lock = threading.Lock()

    def _allocate(self) -> str:
        with self._lock:
            self._next += 1
            if self._next >= _V4_NET.num_addresses - 1:
                raise SimError("No IPv4 addresses left in this location.", "Add Instance")
            return str(_V4_NET[self._next])

    def build(
        self, sid: int, hostname: str, public_keys: list[str], done: Callable[[str, str], None]
    ) -> None:
        done(self._allocate(), "")

    def destroy(self, sid: int, done: Callable[[], None]) -> None:
        done()

    def ipv6(self, sid: int) -> str:
        return str(_V6_NET[sid])

    def change_ip(self, sid: int) -> str:
        return self._allocate()

    def add_ip(self, sid: int, ip: str | None) -> str:
        return ip or self._allocate()

    def snapshot(self) -> dict[str, Any]:
        return {"next": self._next}

    def restore(self, data: dict[str, Any]) -> None:
        self._next = int(data.get("next", self._next))


class PodmanBackend(Backend):
    """Each instance is a container ``<prefix>-hw<serviceid>`` answering SSH with the instance's keys."""

    name = "podman"

    def __init__(self, prefix: str = "pm-vps", workers: int = 2) -> None:
        self.prefix = prefix
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="podman")
        self._hosts = None
        self._hosts_lock = threading.Lock()

    def hosts(self):
        # Imported late: the memory backend (tests, benchmarks) must not need podman at all.
        with self._hosts_lock:
            if self._hosts is None:
                from devenv.podman_hosts import PodmanHosts

                self._hosts = PodmanHosts(self.prefix)
            return self._hosts

    @staticmethod
    def container(sid: int) -> str:
        return f"hw{sid}"

    def build(
        self, sid: int, hostname: str, public_keys: list[str], done: Callable[[str, str], None]
    ) -> None:
        def work() -> None:
            try:
                ip = self.hosts().create(self.container(sid), list(public_keys), hostname=hostname)
            except Exception as exc:  # any failure is the instance's ERROR state, reported in the log
                log.error("build of instance %s failed: %s", sid, exc)
                done("", f"build failed: {type(exc).__name__}")
                return
            log.info("instance %s is container %s-%s at %s", sid, self.prefix, self.container(sid), ip)
            done(ip, "")

        self._pool.submit(work)

    def destroy(self, sid: int, done: Callable[[], None]) -> None:
        def work() -> None:
            try:
                self.hosts().delete(self.container(sid))
            except Exception as exc:
                log.error("removing the container of instance %s failed (kept as DELETING): %s", sid, exc)
                return
            done()

        self._pool.submit(work)

    def containers(self) -> dict[str, str]:
        return self.hosts().list()

    def add_ip(self, sid: int, ip: str | None) -> str:
        """A second address on the container's eth0, in the bridge's subnet, so Postfix can bind to it.

        The container has no NET_ADMIN, so the address is added from the host (as root) inside its network
        namespace. Picked at random from the subnet's upper half (podman hands out the lower addresses
        in order); a restarted container loses it and the simulator adds it again when it starts. Every
        address is claimed machine-wide (:mod:`devenv.bridge_ips`): other simulators' picks avoid it.
        """
        hosts = self.hosts()
        cname = hosts.container_name(self.container(sid))
        subnet = _bridge_subnet()
        if ip is None:
            ip = bridge_ips.pick(list(subnet.subnets())[-1], avoid=hosts.list().values())
        elif ipaddress.ip_address(ip) not in subnet:
            raise ValueError(f"{ip} is outside podman's bridge {subnet}: the container could not use it")
        else:
            bridge_ips.claim(ip)  # the caller chose it (and may hold it already): recorded, not refused
        pid = _run(["podman", "inspect", "--format", "{{.State.Pid}}", cname]).strip()
        done = subprocess.run(
            ["nsenter", "-t", pid, "-n", "ip", "addr", "add", f"{ip}/{subnet.prefixlen}", "dev", "eth0"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if done.returncode != 0 and "File exists" not in done.stderr:
            raise SimError(f"could not add {ip} to {cname}: {done.stderr.strip()}", "Add IP")
        log.info("instance %s: %s added to container %s", sid, ip, cname)
        return ip


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise SimError(f"{argv[0]} {argv[1]} failed: {done.stderr.strip()}", "Add IP")
    return done.stdout


def _bridge_subnet() -> ipaddress.IPv4Network:
    from devenv.podman_hosts import NETWORK

    found = json.loads(
        _run(["podman", "network", "inspect", NETWORK, "--format", "{{json .Subnets}}"]) or "[]"
    )
    v4 = [s["subnet"] for s in found if ":" not in s.get("subnet", "")]
    return ipaddress.ip_network(v4[0] if v4 else "10.88.0.0/16")
