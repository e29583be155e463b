"""Run the mail-host playbooks with ansible-runner: inventory from the fleet, vars, secrets, per-host results.

The inventory is built from the fleet's outputs (``[{name, fqdn, ip, service_id}]``) and written as YAML, the
same text for the run and for on-call staff (``ansible/inventory/generated-<stack>.yml``). Plain variables
and secret variables travel in two JSON files (mode 0600) inside a private temporary folder that is removed
when the run ends; only their paths appear on the command line and in ansible-runner's artifacts. Tasks
that handle secrets carry ``no_log``, so the events and the stdout artifact hold ``***``-free censored
results instead of the values, and every message this module raises is passed through :func:`redact`.

A failed run raises :class:`AnsibleRunFailed` naming the first failing (or unreachable) host and task.
ansible-runner itself runs in a short-lived worker process (``python -m modules.ansible.runner``), never
inside the Pulumi provider process, whose gRPC threads make forking unsafe.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modules.ansible.drift import changed_result
from modules.errors import ToolkitError, ValidationError
from modules.providers import ProviderSettings, redact

REPO_ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO_ROOT / "ansible"
INVENTORY_DIR_ENV = "PENGUINMAILS_ANSIBLE_INVENTORY_DIR"
STATE_DIR_ENV = "PENGUINMAILS_ANSIBLE_STATE_DIR"
SSH_KEY_ENV = "PENGUINMAILS_FLEET_SSH_PRIVATE_KEY"
# Which inventory group each playbook converges (its `hosts:` line).
PLAYBOOK_GROUPS = {
    "mailhost.yml": "mailhosts",
    "mailu.yml": "mailu",
    "redis.yml": "redis",
    "monitoring.yml": "monitoring",
    "postgresql.yml": "postgres",
}
HOST_KEY_CHECKING = ("strict", "accept-new", "off")
DEFAULT_TIMEOUT = 1800
KEEP_ARTIFACTS = 10
IGNORED_SUFFIXES = (".pyc", ".retry", ".swp")
# ansible-runner stats keys -> our per-host counters.
STATS_COUNTERS = {
    "ok": "ok",
    "changed": "changed",
    "failures": "failed",
    "dark": "unreachable",
    "skipped": "skipped",
}
_NAME_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_FQDN_RE = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+$")
_VAR_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_STACK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# Variables Ansible itself interprets; they come from the connection settings, never from vars.
_RESERVED_VARS = ("ansible_host", "ansible_user", "ansible_port", "ansible_ssh_private_key_file")


class AnsibleError(ToolkitError):
    """A playbook could not be prepared or run."""


class AnsibleRunFailed(AnsibleError):
    """The playbook ran and failed; names the host and the task."""

    def __init__(self, message: str, host: str = "", task: str = "", run: PlaybookRun | None = None):
        super().__init__(message)
        self.host, self.task, self.run = host, task, run


# Inputs -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """How Ansible reaches the hosts. The private key is a path (the key itself never travels as input)."""

    user: str = "root"
    port: int = 22
    private_key_file: str | None = None
    host_key_checking: str = "accept-new"
    known_hosts_file: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Connection:
        data = dict(data or {})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValidationError("connection", [f"unknown key(s): {', '.join(unknown)}"])
        return cls(**{k: v for k, v in data.items() if v is not None})

    def problems(self) -> list[str]:
        reasons = []
        if not isinstance(self.user, str) or not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", self.user):
            reasons.append(f"connection.user: {self.user!r} is not a user name")
        if not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            reasons.append(f"connection.port: {self.port!r} must be between 1 and 65535")
        if self.host_key_checking not in HOST_KEY_CHECKING:
            reasons.append(
                f"connection.host_key_checking: {self.host_key_checking!r} must be one of "
                f"{', '.join(HOST_KEY_CHECKING)}"
            )
        for key in ("private_key_file", "known_hosts_file"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not os.path.isabs(value)):
                reasons.append(f"connection.{key}: must be an absolute path, got {value!r}")
        return reasons

    def key_file(self, settings: ProviderSettings | None = None) -> str | None:
        """The private key: the input, else on a dev stack the devenv's operator key
        (``$PENGUINMAILS_FLEET_SSH_PRIVATE_KEY``). Other stacks never offer that key: without the input,
        ssh uses its own keys and agent."""
        return self.private_key_file or (settings or ProviderSettings()).dev_env(SSH_KEY_ENV) or None

    def ssh_common_args(self, known_hosts_default: Path) -> str:
        if self.host_key_checking == "off":
            return "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
        known = self.known_hosts_file or str(known_hosts_default)
        mode = "yes" if self.host_key_checking == "strict" else "accept-new"
        return f"-o StrictHostKeyChecking={mode} -o UserKnownHostsFile={known}"


def host_problems(hosts: Any) -> list[str]:
    """Why ``hosts`` is not a usable list of ``{name, ip, fqdn?, service_id?}``; empty when it is."""
    if not isinstance(hosts, list) or not hosts:
        return ["hosts: must list at least one host ({name, ip, fqdn})"]
    reasons: list[str] = []
    names: dict[str, int] = {}
    ips: dict[str, int] = {}
    for index, host in enumerate(hosts):
        where = f"hosts[{index}]"
        if not isinstance(host, Mapping):
            reasons.append(f"{where}: must be a mapping with name and ip")
            continue
        name = host.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            reasons.append(f"{where}.name: {name!r} must be one lower-case DNS label (letters, digits, '-')")
        elif name in names:
            reasons.append(f"{where}.name: {name} is also hosts[{names[name]}]")
        else:
            names[name] = index
        ip = host.get("ip")
        try:
            address = str(ipaddress.ip_address(str(ip)))
        except ValueError:
            reasons.append(f"{where}.ip: {ip!r} is not an IP address")
        else:
            if address in ips:
                reasons.append(f"{where}.ip: {address} is also the address of hosts[{ips[address]}]")
            ips[address] = index
        fqdn = host.get("fqdn")
        if fqdn is not None and (not isinstance(fqdn, str) or not _FQDN_RE.match(fqdn.rstrip("."))):
            reasons.append(f"{where}.fqdn: {fqdn!r} is not a fully qualified DNS name")
    return reasons


def vars_problems(values: Any, what: str) -> list[str]:
    if values is None:
        return []
    if not isinstance(values, Mapping):
        return [f"{what}: must map variable names to values"]
    reasons = []
    for key in values:
        if not isinstance(key, str) or not _VAR_RE.match(key):
            reasons.append(f"{what}.{key}: not a valid Ansible variable name (lower-case, digits, '_')")
        elif key in _RESERVED_VARS:
            reasons.append(f"{what}.{key}: set through the hosts and connection settings, not as a variable")
    try:
        json.dumps(values, sort_keys=True)
    except (TypeError, ValueError) as exc:
        reasons.append(f"{what}: values must be JSON data ({exc.__class__.__name__})")
    return reasons


def playbook_problems(playbook: Any) -> list[str]:
    if playbook not in PLAYBOOK_GROUPS:
        return [f"playbook: {playbook!r} must be one of {', '.join(PLAYBOOK_GROUPS)}"]
    if not (ANSIBLE_DIR / "playbooks" / playbook).is_file():
        return [f"playbook: {ANSIBLE_DIR / 'playbooks' / playbook} does not exist"]
    return []


# Inventory ----------------------------------------------------------------------------------------------


def build_inventory(
    hosts: list[Mapping[str, Any]],
    group: str,
    *,
    host_vars: Mapping[str, Mapping[str, Any]] | None = None,
    group_vars: Mapping[str, Any] | None = None,
    connection: Connection | None = None,
    known_hosts_default: Path | None = None,
    settings: ProviderSettings | None = None,
) -> dict[str, Any]:
    """The YAML inventory as data: one group, connection settings, and per-host variables.

    ``settings`` (the provider's stack config; dev when omitted) decides whether the devenv's SSH key
    applies (see :meth:`Connection.key_file`).
    """
    reasons = host_problems(hosts) + vars_problems(group_vars, "group_vars")
    connection = connection or Connection()
    reasons += connection.problems()
    host_vars = dict(host_vars or {})
    names = {h.get("name") for h in hosts if isinstance(h, Mapping)} if isinstance(hosts, list) else set()
    for name, values in host_vars.items():
        if name not in names:
            reasons.append(f"host_vars.{name}: no such host in hosts")
        reasons += vars_problems(values, f"host_vars.{name}")
    if reasons:
        raise ValidationError("Ansible inventory", reasons)
    members: dict[str, dict[str, Any]] = {}
    for host in hosts:
        entry: dict[str, Any] = {"ansible_host": str(ipaddress.ip_address(str(host["ip"])))}
        entry["common_hostname"] = (host.get("fqdn") or host["name"]).rstrip(".").lower()
        if host.get("service_id") not in (None, ""):
            entry["penguinmails_service_id"] = str(host["service_id"])
        entry.update(host_vars.get(host["name"], {}))
        members[host["name"]] = entry
    all_vars: dict[str, Any] = {
        "ansible_user": connection.user,
        "ansible_port": connection.port,
        "ansible_ssh_common_args": connection.ssh_common_args(
            known_hosts_default or ANSIBLE_DIR / "inventory" / "known_hosts"
        ),
    }
    key_file = connection.key_file(settings)
    if key_file:
        all_vars["ansible_ssh_private_key_file"] = key_file
    all_vars.update(group_vars or {})
    return {"all": {"vars": all_vars, "children": {group: {"hosts": members}}}}


def render_inventory(inventory: Mapping[str, Any], stack: str, playbook: str) -> str:
    """Stable YAML text (sorted keys) with a header saying where it comes from and how to use it."""
    header = (
        f"# Generated by the AnsiblePlaybook resource of stack {stack!r} for playbooks/{playbook}.\n"
        "# Rewritten on every run of `pulumi up`; holds no secrets (those are passed at run time).\n"
        f"# cd ansible && ansible-playbook -i inventory/generated-{stack}.yml playbooks/{playbook} "
        "-e @<secrets file>\n"
    )
    return header + yaml.safe_dump(dict(inventory), sort_keys=True, default_flow_style=False)


def inventory_path(stack: str) -> Path:
    """``ansible/inventory/generated-<stack>.yml`` (git-ignored); tests move it with an env variable."""
    if not _STACK_RE.match(stack or ""):
        raise ValidationError("AnsiblePlaybook", [f"stack: {stack!r} is not a usable stack name"])
    folder = Path(os.environ.get(INVENTORY_DIR_ENV) or ANSIBLE_DIR / "inventory")
    return folder / f"generated-{stack}.yml"


def write_inventory(stack: str, text: str) -> Path:
    """Write the on-call copy atomically (readers never see half a file)."""
    path = inventory_path(stack)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".yml.partial")
    partial.write_text(text)
    partial.chmod(0o644)
    partial.replace(path)
    return path


COMBINED_HEADER = "# Generated by the per-host AnsiblePlaybook resources of stack"


def fragment_dir(name: str) -> Path:
    """``generated-<name>.d/``: one inventory fragment per host, written by that host's resource."""
    path = inventory_path(name)
    return path.with_name(path.name.removesuffix(".yml") + ".d")


@contextlib.contextmanager
def _locked(folder: Path):
    """Per-host resources run in parallel: one writer of the combined file at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def merge_inventories(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One inventory of every host in ``parts`` (each as :func:`build_inventory` returns it)."""
    merged: dict[str, Any] = {"all": {"vars": {}, "children": {}}}
    for part in parts:
        top = part.get("all") or {}
        merged["all"]["vars"].update(top.get("vars") or {})
        for group, body in (top.get("children") or {}).items():
            hosts = merged["all"]["children"].setdefault(group, {"hosts": {}})["hosts"]
            hosts.update((body or {}).get("hosts") or {})
    return merged


def _combine(name: str, playbook: str) -> Path | None:
    """Rewrite ``generated-<name>.yml`` from the fragments (all hosts); remove it when none is left."""
    folder, path = fragment_dir(name), inventory_path(name)
    parts = [yaml.safe_load(p.read_text()) or {} for p in sorted(folder.glob("*.yml"))]
    if not parts:
        path.unlink(missing_ok=True)
        return None
    stack = name.removesuffix("-" + playbook.removesuffix(".yml"))
    header = (
        f"{COMBINED_HEADER} {stack!r} for playbooks/{playbook} (all hosts; one file per host in {folder.name}/).\n"
        "# Rewritten whenever a host's resource runs; holds no secrets (those are passed at run time).\n"
        f"# cd ansible && ansible-playbook -i inventory/{path.name} playbooks/{playbook} -e @<secrets file>"
        " [--limit HOST] [-e penguinmails_max_fail_percentage=N]\n"
    )
    text = header + yaml.safe_dump(merge_inventories(parts), sort_keys=True, default_flow_style=False)
    partial = path.with_suffix(".yml.partial")
    partial.write_text(text)
    partial.chmod(0o644)
    partial.replace(path)
    return path


def write_inventory_fragment(name: str, host: str, inventory: Mapping[str, Any], playbook: str) -> Path:
    """Store one host's inventory and rewrite the combined on-call file; returns the combined file."""
    if not _NAME_RE.match(host or ""):
        raise ValidationError("AnsiblePlaybook", [f"inventory_host: {host!r} is not a host name"])
    folder = fragment_dir(name)
    with _locked(folder):
        fragment = folder / f"{host}.yml"
        fragment.write_text(yaml.safe_dump(dict(inventory), sort_keys=True, default_flow_style=False))
        fragment.chmod(0o644)
        combined = _combine(name, playbook)
    assert combined is not None
    return combined


def remove_inventory_fragment(name: str, host: str, playbook: str) -> None:
    """Drop one host from the combined file (the file goes with the last host)."""
    folder = fragment_dir(name)
    if not folder.is_dir():
        return
    with _locked(folder):
        (folder / f"{host}.yml").unlink(missing_ok=True)
        _combine(name, playbook)


def remove_inventory(name: str) -> None:
    """Remove a fleet-wide resource's on-call file, unless per-host resources own that file now.

    Migrating a stack from one fleet-wide resource to per-host ones creates the new resources first and
    deletes the old one last: its delete must leave the combined file they wrote.
    """
    path = inventory_path(name)
    try:
        first = path.read_text().split("\n", 1)[0]
    except OSError:
        return
    if not first.startswith(COMBINED_HEADER):
        path.unlink(missing_ok=True)


# Hashes ---------------------------------------------------------------------------------------------------


def content_hash(playbook: str, ansible_dir: Path = ANSIBLE_DIR) -> str:
    """SHA-256 over everything the run reads from the repository: ansible.cfg, the playbook, every role file.

    Paths are part of the hash (a renamed template changes it); compiled Python and editor leftovers are not.
    """
    digest = hashlib.sha256()
    files = [ansible_dir / "ansible.cfg", ansible_dir / "playbooks" / playbook]
    files += sorted(p for p in (ansible_dir / "roles").rglob("*") if p.is_file())
    for path in files:
        if "__pycache__" in path.parts or path.suffix in IGNORED_SUFFIXES or path.name.endswith("~"):
            continue
        digest.update(str(path.relative_to(ansible_dir)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def whole_numbers(value: Any) -> Any:
    """Pulumi carries every number as a double: 25 comes back as 25.0. Turn whole floats back into ints
    (Postfix refuses ``message_size_limit = 26214400.0``), recursively; hashes see the same values."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {key: whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [whole_numbers(item) for item in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(whole_numbers(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def vars_digest(plain: Mapping[str, Any] | None, secret: Mapping[str, Any] | None, salt: str) -> str:
    """HMAC-SHA256 (keyed with a per-resource random salt) of the plain and secret variables.

    Stored in plain state, so it must not let anyone test guesses of a secret: without the salt as key,
    a short password's hash could be brute-forced offline. The salt is random and kept per resource.
    """
    payload = canonical_json({"vars": plain or {}, "secret_vars": secret or {}})
    return hmac.new(salt.encode(), payload.encode(), hashlib.sha256).hexdigest()


def inventory_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# Running ------------------------------------------------------------------------------------------------


@dataclass
class HostStats:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "ok": self.ok,
            "changed": self.changed,
            "failed": self.failed,
            "unreachable": self.unreachable,
            "skipped": self.skipped,
        }


@dataclass
class Failure:
    host: str
    task: str
    message: str
    unreachable: bool = False


@dataclass
class PlaybookRun:
    status: str
    rc: int
    duration_seconds: float
    hosts: dict[str, HostStats] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    artifact_dir: str = ""
    # Check runs only: per task result that would change the host (see :func:`changed_results`).
    changes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return sum(s.changed for s in self.hosts.values())

    def host_results(self) -> dict[str, dict[str, int]]:
        return {name: stats.as_dict() for name, stats in sorted(self.hosts.items())}


def stats_by_host(stats: Mapping[str, Mapping[str, int]] | None) -> dict[str, HostStats]:
    """ansible-runner's ``stats`` (per counter, per host) turned around: per host, per counter."""
    hosts: dict[str, HostStats] = {}
    for source, target in STATS_COUNTERS.items():
        for host, count in ((stats or {}).get(source) or {}).items():
            setattr(hosts.setdefault(host, HostStats()), target, int(count))
    for host in (stats or {}).get("processed") or {}:
        hosts.setdefault(host, HostStats())
    return hosts


def failures_from_events(events: Iterable[Mapping[str, Any]], secrets: Iterable[str] = ()) -> list[Failure]:
    """Failed (not ignored) and unreachable task results, in the order they happened, messages redacted."""
    secrets = [s for s in secrets if s]
    found = []
    for event in events:
        kind = event.get("event")
        data = event.get("event_data") or {}
        if kind not in ("runner_on_failed", "runner_on_unreachable", "runner_item_on_failed"):
            continue
        if data.get("ignore_errors"):
            continue
        result = data.get("res") or {}
        message = str(result.get("msg") or result.get("stderr") or result.get("reason") or "failed").strip()
        found.append(
            Failure(
                host=str(data.get("host") or "?"),
                task=str(data.get("task") or "?"),
                message=redact(" ".join(message.split())[:600], *secrets),
                unreachable=kind == "runner_on_unreachable",
            )
        )
    return found


def secret_strings(value: Any) -> list[str]:
    """Every string inside ``value`` that is long enough to be worth redacting (and each PEM line)."""
    found: list[str] = []
    if isinstance(value, str):
        if len(value) >= 6:
            found.append(value)
            found += [line for line in value.splitlines() if len(line) >= 16 and "-----" not in line]
    elif isinstance(value, Mapping):
        for item in value.values():
            found += secret_strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            found += secret_strings(item)
    return sorted(set(found), key=len, reverse=True)


def state_dir() -> Path:
    """Facts cache, known_hosts and kept artifacts: ``.cache/ansible`` (git-ignored) unless overridden."""
    return Path(os.environ.get(STATE_DIR_ENV) or REPO_ROOT / ".cache" / "ansible")


def _write_private_json(folder: Path, name: str, values: Mapping[str, Any]) -> Path:
    path = folder / name
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(canonical_json(dict(values)))
    return path


def _search_path() -> str:
    """PATH with this Python's folder first, so the venv's ansible-playbook runs (engine PATHs vary)."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")])


def _scrub_command_artifact(artifact_dir: Path, envvars: Mapping[str, str]) -> None:
    """ansible-runner records the whole process environment in ``command``; keep only what we set.

    The environment of a provider process carries other services' credentials (devenv exports them).
    """
    path = artifact_dir / "command"
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    recorded["env"] = {key: value for key, value in (recorded.get("env") or {}).items() if key in envvars}
    path.write_text(json.dumps(recorded))


FAILURE_EVENTS = ("runner_on_failed", "runner_on_unreachable", "runner_item_on_failed")
WORKER_GRACE_SECONDS = 120


def _execute(settings: dict[str, Any]) -> dict[str, Any]:
    """Run ansible-runner once, here; return what the caller needs as JSON-able data.

    Called in a fresh worker process (see :func:`run_playbook`), never in a Pulumi provider process.
    """
    import ansible_runner

    check = bool(settings.pop("keep_changes", False))
    failures: list[dict] = []
    changes: list[dict] = []
    seen = [0]

    def keep_event(event: dict) -> bool:
        seen[0] += 1
        if event.get("event") in FAILURE_EVENTS:
            failures.append({"event": event["event"], "event_data": event.get("event_data") or {}})
        elif check and event.get("event") == "runner_on_ok":
            kept = changed_result(event.get("event_data") or {})
            if kept is not None:
                changes.append(kept)
        return True

    def once() -> Any:
        return ansible_runner.run(**settings, event_handler=keep_event)

    runner = once()
    if runner.rc is None and seen[0] == 0:
        # ansible-playbook ended without a single event and without an exit status: nothing ran on any
        # host, so starting it once more is safe.
        runner = once()
    _scrub_command_artifact(Path(runner.config.artifact_dir), settings["envvars"])
    return {
        "status": str(runner.status),
        "rc": runner.rc,
        "stats": runner.stats,
        "failures": failures,
        "changes": changes,
        "artifact_dir": str(runner.config.artifact_dir),
    }


def _run_worker(private: Path, settings: dict[str, Any], timeout: int) -> dict[str, Any]:
    """``python -m modules.ansible.runner <settings>`` and its JSON answer.

    ansible-runner forks ansible-playbook through a pty. Forking a Pulumi provider process, whose gRPC
    threads are running, can kill the child before it execs (gRPC's fork handlers; seen as a run with no
    output and no exit status). A fresh interpreter started with subprocess (vfork + exec) has no such
    threads, so the fork happens there.
    """
    request, answer = private / "request.json", private / "answer.json"
    request.write_text(json.dumps({"settings": settings, "answer": str(answer)}))
    done = subprocess.run(
        [sys.executable, "-m", "modules.ansible.runner", str(request)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout + WORKER_GRACE_SECONDS,
    )
    if done.returncode != 0 or not answer.exists():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise AnsibleError(f"the ansible-runner worker failed (exit {done.returncode}): {tail}")
    return json.loads(answer.read_text())


def execute(
    playbook_path: str,
    inventory_text: str,
    *,
    stack: str,
    what: str,
    extra_vars: Mapping[str, Any] | None = None,
    secret_vars: Mapping[str, Any] | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    limit: str | None = None,
    forks: int | None = None,
    check: bool = False,
    private_check_artifacts: bool = True,
    extra_env: Mapping[str, str] | None = None,
    failure_events: Callable[[list[dict]], list[dict]] | None = None,
) -> PlaybookRun:
    """Run ``playbook_path`` (relative to ansible/) once and return what happened, without judging it.

    The one place that builds a run: secrets in a 0600 file of a private temporary folder (removed afterwards,
    also on errors) reaching ansible-playbook as ``-e @file``, the environment, the worker. ``check`` adds
    ``--check --diff``; with ``private_check_artifacts`` its artifacts (diffs hold file contents) go with the
    private folder and the would-change results are kept. A run that cannot start raises
    :class:`AnsibleError` starting with ``what``.
    """
    secrets = secret_strings(secret_vars or {})
    base = state_dir()
    artifacts = base / "artifacts" / stack
    facts = base / "facts" / stack
    for folder in (artifacts, facts):
        folder.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix="penguinmails-ansible-"))
    private.chmod(0o700)
    started = time.monotonic()
    private_artifacts = check and private_check_artifacts
    try:
        inventory_file = private / "inventory.yml"
        inventory_file.write_text(inventory_text)
        files = [_write_private_json(private, "vars.json", extra_vars or {})]
        if secret_vars:
            files.append(_write_private_json(private, "secrets.json", secret_vars))
        envvars = {
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(facts),
            "ANSIBLE_RETRY_FILES_ENABLED": "false",
            "ANSIBLE_NOCOLOR": "1",
            # ansible-runner turns host key checking off unless told; the inventory's ssh args decide.
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "PATH": _search_path(),
            # One SSH master per host for this run only: a later run (another stack, a rebuilt host that
            # got the same address, another key) never rides on a connection it did not open.
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(private / "cp"),
            **(extra_env or {}),
        }
        if forks:
            envvars["ANSIBLE_FORKS"] = str(forks)
        settings = {
            "private_data_dir": str(private),
            "project_dir": str(ANSIBLE_DIR),
            "playbook": playbook_path,
            "inventory": str(inventory_file),
            "cmdline": " ".join(
                [*(f"-e @{path}" for path in files), *(["--check", "--diff"] if check else [])]
            ),
            "envvars": envvars,
            "limit": limit,
            "quiet": True,
            "artifact_dir": str(private / "artifacts" if private_artifacts else artifacts),
            "rotate_artifacts": KEEP_ARTIFACTS,
            "timeout": timeout,
            # Not the per-run cache ansible-runner would put in the artifacts: ansible.cfg's jsonfile
            # cache in the folder set above, so re-runs skip fact gathering.
            "fact_cache_type": None,
        }
        if private_artifacts:
            settings["keep_changes"] = True
        result = _run_worker(private, settings, timeout)
    except (OSError, ValueError, subprocess.SubprocessError, AnsibleError) as exc:
        raise AnsibleError(f"{what}: {redact(str(exc), *secrets)}") from None
    finally:
        shutil.rmtree(private, ignore_errors=True)
    events = result["failures"]
    return PlaybookRun(
        status=result["status"],
        rc=int(result["rc"] if result["rc"] is not None else -1),
        duration_seconds=round(time.monotonic() - started, 2),
        hosts=stats_by_host(result["stats"]),
        failures=failures_from_events(failure_events(events) if failure_events else events, secrets),
        artifact_dir="" if private_artifacts else result["artifact_dir"],
        changes=list(result.get("changes") or []),
    )


def run_playbook(
    playbook: str,
    inventory_text: str,
    *,
    stack: str,
    extra_vars: Mapping[str, Any] | None = None,
    secret_vars: Mapping[str, Any] | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    limit: str | None = None,
    forks: int | None = None,
    check: bool = False,
) -> PlaybookRun:
    """Run ``playbooks/<playbook>`` against ``inventory_text``; raise :class:`AnsibleRunFailed` on failure.

    ``check``: ``--check --diff``, a dry run that changes nothing. It returns the would-change results in
    ``changes`` and failed or unreachable hosts in ``failures`` instead of raising, and keeps no artifacts
    (``--diff`` output holds file contents).

    Secrets go to a 0600 file in a private temporary folder (removed afterwards, also on errors) and reach
    ansible-playbook as ``-e @file``. Artifacts are kept under ``.cache/ansible/artifacts/<stack>``
    (the last few runs) for on-call; the secret values are not in them.
    """
    reasons = playbook_problems(playbook) + vars_problems(extra_vars, "vars")
    reasons += vars_problems(secret_vars, "secret_vars")
    if reasons:
        raise ValidationError(f"AnsiblePlaybook[{stack}]", reasons)
    run = execute(
        f"playbooks/{playbook}",
        inventory_text,
        stack=stack,
        what=f"AnsiblePlaybook[{stack}]: could not run playbooks/{playbook}",
        extra_vars=extra_vars,
        secret_vars=secret_vars,
        timeout=timeout,
        limit=limit,
        forks=forks,
        check=check,
    )
    if check:
        return run
    if run.status != "successful" or run.rc != 0 or not run.hosts:
        raise _failure(stack, playbook, run)
    if any(stats.failed or stats.unreachable for stats in run.hosts.values()):
        raise _failure(stack, playbook, run)
    return run


def _failure(stack: str, playbook: str, run: PlaybookRun) -> AnsibleRunFailed:
    where = f"AnsiblePlaybook[{stack}]: playbooks/{playbook}"
    if run.status == "timeout" or run.rc == 254:
        return AnsibleRunFailed(f"{where} timed out after {run.duration_seconds:.0f} s", run=run)
    if run.failures:
        first = run.failures[0]
        verb = "could not reach" if first.unreachable else "failed on"
        others = sorted({f.host for f in run.failures} - {first.host})
        more = f" (also failed: {', '.join(others)})" if others else ""
        return AnsibleRunFailed(
            f"{where} {verb} host {first.host} at task {first.task!r}: {first.message}{more}",
            host=first.host,
            task=first.task,
            run=run,
        )
    if not run.hosts:
        reason = f"ansible-playbook reported no host results (status {run.status}, rc {run.rc})"
    else:
        reason = f"ended with status {run.status} (rc {run.rc})"
    return AnsibleRunFailed(f"{where}: {reason}; see {run.artifact_dir}/stdout", run=run)


def main(argv: list[str]) -> int:
    """The worker: ``python -m modules.ansible.runner <request.json>`` (see :func:`_run_worker`)."""
    request = json.loads(Path(argv[0]).read_text())
    answer = _execute(request["settings"])
    Path(request["answer"]).write_text(json.dumps(answer, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
