"""Real "VPS" hosts for the Hostwinds simulator: podman containers that Ansible configures over SSH.

Each host is a container from the local Debian bookworm image (``devenv.images``) running tini → sshd, with
the given public keys in root's ``authorized_keys`` and its own SSH host keys. Its IPv4 is its address on
podman's default bridge, reachable from this machine only. Containers carry the label
``penguinmails.host=1`` and ``penguinmails.prefix=<prefix>``; this class never touches any other container.

Container names are ``<prefix>-<name>``: ``create("mx-1")`` makes ``pm-vps-mx-1``. ``delete`` accepts either
form, ``list`` returns the full container names.

The default capability set of podman is enough for the mail roles (checked by the tests): it has
NET_BIND_SERVICE (ports 25/465/587/993), SYS_CHROOT (postfix and dovecot chroot their daemons), SETUID/SETGID
(privilege drops); sshd with PAM works without AUDIT_WRITE. So no ``--cap-add`` is given.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import socket
import subprocess
import time

from devenv import images
from modules.errors import DevenvError, ValidationError

log = logging.getLogger("penguinmails.podman_hosts")

HOST_LABEL = "penguinmails.host"
PREFIX_LABEL = "penguinmails.prefix"
NAME_LABEL = "penguinmails.name"
KIND_LABEL = "penguinmails.image-kind"
NETWORK = "podman"
SSH_READY_TIMEOUT = 60.0
PODMAN_TIMEOUT = 120

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_KEY_TYPES = {
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
}
# podman errors that mean the machine is not configured yet, and what fixes them.
_CONFIG_HINTS = {
    "setrlimit": "default_ulimits = [] is missing from /etc/containers/containers.conf",
    "hybrid mode": 'runtime = "runc" is missing from /etc/containers/containers.conf',
}


class PodmanHostError(DevenvError):
    """A podman host could not be created, inspected or removed."""


def _podman(*args: str, timeout: int = PODMAN_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise PodmanHostError("podman is not installed (run `make bootstrap`)") from exc
    except subprocess.TimeoutExpired as exc:
        raise PodmanHostError(f"podman {args[0]}: timed out after {timeout} s") from exc
    if check and done.returncode != 0:
        message = done.stderr.strip() or done.stdout.strip()
        for needle, hint in _CONFIG_HINTS.items():
            if needle in message:
                message += f"\n({hint}: run tools/configure-podman.sh)"
        raise PodmanHostError(f"podman {args[0]} failed: {message}")
    return done


def ensure_default_bridge(network: str = "podman") -> str | None:
    """Make podman's default bridge (or ``network``'s) exist now, with its gateway address; the gateway,
    or None if podman does not say which it is.

    podman's network plugin creates the bridge only when the first container starts, but services the
    hosts must reach (the ACME CA) listen on the gateway address from the moment they start, which on a
    fresh machine comes first. The plugin adopts a bridge that already exists with its name and gateway.
    """
    found = _podman(
        "network", "inspect", network, "--format",
        "{{.NetworkInterface}} {{range .Subnets}}{{.Gateway}} {{.Subnet}} {{end}}",
        check=False,
    )  # fmt: skip
    parts = found.stdout.split()
    if found.returncode != 0 or len(parts) < 3:
        return None
    bridge, gateway, subnet = parts[0], parts[1], parts[2]
    prefix = subnet.rsplit("/", 1)[1]
    if subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode != 0:
        for command in (
            ["ip", "link", "add", bridge, "type", "bridge"],
            ["ip", "addr", "add", f"{gateway}/{prefix}", "dev", bridge],
            ["ip", "link", "set", bridge, "up"],
        ):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise DevenvError(
                    f"podman bridge {bridge}: {' '.join(command)} failed: {done.stderr.strip()}"
                )
    return gateway


def public_key_problems(key: str) -> list[str]:
    """Why ``key`` is not one OpenSSH public key line (``<type> <base64> [comment]``); empty if it is."""
    if "\n" in key or "\r" in key or "\0" in key:
        return ["must be a single line"]
    words = key.strip().split()
    if len(words) < 2:
        return ["must look like '<type> <base64> [comment]'"]
    if words[0] not in _KEY_TYPES:
        return [f"key type {words[0][:40]!r} is not one of {', '.join(sorted(_KEY_TYPES))}"]
    try:
        blob = base64.b64decode(words[1], validate=True)
    except (binascii.Error, ValueError):
        return ["key data is not valid base64"]
    length = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if blob[4 : 4 + length].decode("ascii", "replace") != words[0]:
        return [f"key data does not hold a {words[0]} key"]
    return []


def _wait_for_ssh(ip: str, timeout: float) -> None:
    """Until sshd at ``ip``:22 sends its banner: connecting alone could hit a listener not yet serving."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, 22), timeout=2.0) as conn:
                conn.settimeout(2.0)
                if conn.recv(8).startswith(b"SSH-"):
                    return
                last = "no SSH banner"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise PodmanHostError(f"sshd at {ip}:22 not ready after {timeout:.0f} s ({last})")


class PodmanHosts:
    """Create, list and delete this prefix's container hosts; every method is safe to repeat."""

    def __init__(self, prefix: str = "pm-vps", *, kind: str | None = None):
        if not _NAME_RE.match(prefix):
            raise ValidationError("PodmanHosts", [f"prefix {prefix!r}: letters, digits, '_', '.', '-' only"])
        kind = kind or os.environ.get("PENGUINMAILS_PODMAN_IMAGE_KIND", "base")
        if kind not in images.KINDS:
            raise ValidationError("PodmanHosts", [f"kind {kind!r}: must be one of {', '.join(images.KINDS)}"])
        self.prefix = prefix
        self.kind = kind
        self._image: str | None = None

    def container_name(self, name: str) -> str:
        """``<prefix>-<name>``; a name that already carries the prefix is kept as it is."""
        return name if name.startswith(f"{self.prefix}-") else f"{self.prefix}-{name}"

    def ensure_image(self, kind: str | None = None) -> str:
        """Build (first time only) and return the host image; ``kind`` is "base" or "mailhost"."""
        kind = kind or self.kind
        if kind == self.kind and self._image and images.image_exists(self._image):
            return self._image
        name = images.ensure_image(kind, log=log.info)
        if kind == self.kind:
            self._image = name
        return name

    def _validate(self, name: str, authorized_keys: list[str], hostname: str) -> None:
        reasons = []
        cname = self.container_name(name) if isinstance(name, str) else ""
        if not isinstance(name, str) or not name or not _NAME_RE.match(name) or len(cname) > 63:
            reasons.append(f"name {name!r}: 1-63 characters with the prefix; letters, digits, '_', '.', '-'")
        if isinstance(authorized_keys, str) or not isinstance(authorized_keys, list | tuple):
            reasons.append("authorized_keys: must be a list of public key lines")
        else:
            for i, key in enumerate(authorized_keys):
                problems = public_key_problems(key) if isinstance(key, str) else ["must be a string"]
                reasons += [f"authorized_keys[{i}]: {problem}" for problem in problems]
        labels = hostname.rstrip(".").split(".") if isinstance(hostname, str) else [""]
        if len(hostname) > 253 or not all(_LABEL_RE.match(label) for label in labels):
            reasons.append(f"hostname {hostname!r}: lower-case DNS labels (a-z, 0-9, '-') joined by '.'")
        if reasons:
            raise ValidationError(f"podman host {name!r}", reasons)

    def _inspect(self, *names: str) -> list[dict]:
        if not names:
            return []
        done = _podman("container", "inspect", *names, check=False)
        try:
            found = json.loads(done.stdout or "[]")
        except json.JSONDecodeError as exc:
            raise PodmanHostError(f"podman inspect answered non-JSON: {done.stdout[:200]!r}") from exc
        if done.returncode != 0 and not found and "no such container" not in done.stderr:
            raise PodmanHostError(f"podman inspect failed: {done.stderr.strip()}")
        return found or []

    def _ours(self, info: dict) -> bool:
        labels = info.get("Config", {}).get("Labels") or {}
        return labels.get(HOST_LABEL) == "1" and labels.get(PREFIX_LABEL) == self.prefix

    @staticmethod
    def _ipv4(info: dict) -> str:
        settings = info.get("NetworkSettings") or {}
        for network in (settings.get("Networks") or {}).values():
            if network.get("IPAddress"):
                return network["IPAddress"]
        return settings.get("IPAddress") or ""

    def create(self, name: str, authorized_keys: list[str], hostname: str | None = None) -> str:
        """Start host ``name`` and return its IPv4 once sshd answers.

        Idempotent: an existing host of that name is kept as it is (started if stopped, keys untouched).
        A host that does not come up is removed again, so a failed create leaves nothing behind.
        """
        if hostname is None and isinstance(name, str):
            hostname = name.replace("_", "-")
        if isinstance(hostname, str):
            hostname = hostname.lower()  # DNS ignores case; /etc/hostname should not carry it
        self._validate(name, authorized_keys, hostname or "")
        cname = self.container_name(name)
        existing = self._inspect(cname)
        if existing and not self._ours(existing[0]):
            raise PodmanHostError(
                f"container {cname} exists but is not a {self.prefix} host; not touching it"
            )
        if not existing:
            image = self.ensure_image()
            keys = "\n".join(key.strip() for key in authorized_keys)
            done = _podman(
                "run", "--detach", "--name", cname, "--hostname", hostname, "--network", NETWORK,
                "--label", f"{HOST_LABEL}=1", "--label", f"{PREFIX_LABEL}={self.prefix}",
                "--label", f"{NAME_LABEL}={name}", "--label", f"{KIND_LABEL}={self.kind}",
                "--stop-timeout", "2", "--log-opt", "max-size=1mb",
                "--env", f"PM_AUTHORIZED_KEYS={keys}",
                image,
                check=False,
            )  # fmt: skip
            if done.returncode != 0 and "already in use" not in done.stderr:
                self._remove(cname)
                raise PodmanHostError(f"podman run {cname} failed: {done.stderr.strip()}")
        else:
            _podman("start", cname)
        try:
            info = self._inspect(cname)
            ip = self._ipv4(info[0]) if info else ""
            if not ip:
                raise PodmanHostError(f"host {cname} has no IPv4 address on network {NETWORK}")
            _wait_for_ssh(ip, SSH_READY_TIMEOUT)
        except PodmanHostError:
            if not existing:
                self._remove(cname)
            raise
        log.info("PodmanHost[%s] %s at %s", cname, "started again" if existing else "created", ip)
        return ip

    def _remove(self, cname: str) -> None:
        _podman("rm", "--force", "--time", "2", "--ignore", cname)

    def delete(self, name: str) -> None:
        """Remove host ``name`` (either form of the name); nothing to do if it is already gone."""
        cname = self.container_name(name)
        found = self._inspect(cname)
        if not found:
            return
        if not self._ours(found[0]):
            raise PodmanHostError(f"container {cname} is not a {self.prefix} host; not deleting it")
        self._remove(cname)
        log.info("PodmanHost[%s] deleted", cname)

    def list(self) -> dict[str, str]:
        """Container name → IPv4 for every host of this prefix; a stopped host maps to ""."""
        done = _podman(
            "ps", "--all", "--filter", f"label={PREFIX_LABEL}={self.prefix}", "--format", "{{.Names}}"
        )
        names = done.stdout.split()
        return {
            info["Name"].lstrip("/"): self._ipv4(info) for info in self._inspect(*names) if self._ours(info)
        }

    def clear(self) -> int:
        """Remove every host of this prefix (tests and benchmarks clean up with it); returns how many."""
        names = list(self.list())
        if names:
            _podman("rm", "--force", "--time", "2", "--ignore", *names)
        return len(names)
