"""``AnsiblePlaybook``: a playbook run as a Pulumi dynamic resource.

It runs (create/update) when the roles' content hash, the variables or the inventory changed, and not
otherwise, so a second ``pulumi up`` with nothing changed touches no host. Its outputs record, per host,
the ok/changed/failed/unreachable/skipped counts of the last run. A failed run fails the update with the
host and the task (see :mod:`modules.ansible.runner`).

Secret variables arrive as a secret input (encrypted in state as inputs are); the outputs keep only a
keyed hash of all variables (``vars_hash``, HMAC with a per-resource random ``vars_salt``), never the
values. Every run also writes the inventory it used to ``ansible/inventory/generated-<stack>.yml``
(git-ignored) for on-call staff; destroying the resource removes that file and leaves the hosts as they are.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi.dynamic as dynamic
from pulumi.output import Unknown
from pulumi.runtime.rpc import UNKNOWN

from modules.ansible import drift, runner
from modules.errors import ToolkitError, ValidationError
from modules.providers import ProviderSettings, redact

DEFAULT_TIMEOUT = runner.DEFAULT_TIMEOUT
# Inputs that make up the inventory; a change to any of them re-runs the playbook.
INVENTORY_KEYS = ("hosts", "host_vars", "group_vars", "connection")
RESULT_KEYS = ("host_results", "changed", "run_count", "last_run_seconds", "inventory_path", "artifact_dir")


def has_unknown(value: Any) -> bool:
    """True while a value is not known yet (preview before the fleet exists): an ``Unknown`` object (check
    and diff deserialize with unknowns kept) or the wire sentinel string."""
    if isinstance(value, Unknown) or (isinstance(value, str) and value == UNKNOWN):
        return True
    if isinstance(value, Mapping):
        return any(has_unknown(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_unknown(v) for v in value)
    return False


def inventory_hash(props: Mapping[str, Any]) -> str:
    """SHA-256 of the inventory inputs (not of the rendered text, which carries a local key path)."""
    subset = {key: props.get(key) or None for key in INVENTORY_KEYS}
    subset["playbook"] = props.get("playbook")
    return hashlib.sha256(runner.canonical_json(subset).encode()).hexdigest()


def inventory_file_name(stack: str, playbook: str) -> str:
    """``generated-<stack>.yml`` for the native hosts, ``generated-<stack>-mailu.yml`` for MailU hosts."""
    return stack if playbook == "mailhost.yml" else f"{stack}-{playbook.removesuffix('.yml')}"


def inventory_data(props: Mapping[str, Any], settings: ProviderSettings | None = None) -> dict[str, Any]:
    playbook = props["playbook"]
    return runner.build_inventory(
        list(props["hosts"]),
        runner.PLAYBOOK_GROUPS[playbook],
        host_vars=props.get("host_vars") or {},
        group_vars=props.get("group_vars") or {},
        connection=runner.Connection.from_dict(props.get("connection")),
        known_hosts_default=runner.state_dir() / f"known_hosts-{props['stack']}",
        settings=settings,
    )


def render(props: Mapping[str, Any], settings: ProviderSettings | None = None) -> str:
    return runner.render_inventory(inventory_data(props, settings), props["stack"], props["playbook"])


def check_drift(props: Mapping[str, Any], settings: ProviderSettings | None = None) -> list[str]:
    """Run the playbook with ``--check --diff`` against the resource's hosts: what would change, as lines.

    Empty on a converged host. An unreachable host or a failed check is one line too (so the next
    preview shows an update and the next up re-runs, failing on that host alone); never raises for it.
    """
    props = runner.whole_numbers(dict(props))
    secrets = runner.secret_strings(props.get("secret_vars") or {})
    try:
        text = render(props, settings)
        run = runner.run_playbook(
            props["playbook"],
            text,
            stack=props["stack"],
            extra_vars=props.get("vars") or {},
            secret_vars=props.get("secret_vars") or {},
            timeout=int(props.get("timeout_seconds") or DEFAULT_TIMEOUT),
            forks=min(max(len(props.get("hosts") or []), 5), 25),
            check=True,
        )
    except ToolkitError as exc:
        return [redact(f"check not run: {' '.join(str(exc).split())[:300]}", *secrets)]
    lines = drift.failure_lines(run.failures, secrets) + drift.drift_lines(run.changes, secrets)
    if not lines and (not run.hosts or run.rc != 0):
        lines = [f"check run ended with status {run.status} (rc {run.rc}) and no host results"]
    return lines


class AnsiblePlaybookProvider(dynamic.ResourceProvider):
    """Validates in check, decides in diff from the three hashes, runs ansible-runner in create/update."""

    def configure(self, req: dynamic.ConfigureRequest) -> None:
        # The stack's environment decides whether the devenv's SSH key may be used (dev stacks only).
        self.settings = ProviderSettings.from_request(req)

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures: list[dynamic.CheckFailure] = []

        def fail(prop: str, reasons: list[str]) -> None:
            failures.extend(dynamic.CheckFailure(prop, reason) for reason in reasons)

        stack = news.get("stack")
        if not isinstance(stack, str) or not runner._STACK_RE.match(stack):
            fail("stack", [f"{stack!r} is not a usable stack name"])
        fail("playbook", runner.playbook_problems(news.get("playbook")))
        if not has_unknown(news.get("hosts")):
            fail("hosts", runner.host_problems(news.get("hosts")))
        for key in ("vars", "group_vars"):
            if not has_unknown(news.get(key)):
                fail(key, runner.vars_problems(news.get(key), key))
        # Secret values never appear in a reason: only names are checked here.
        if not has_unknown(news.get("secret_vars")):
            fail("secret_vars", runner.vars_problems(news.get("secret_vars"), "secret_vars"))
        host_vars = news.get("host_vars") or {}
        if not has_unknown(host_vars):
            if not isinstance(host_vars, Mapping):
                fail("host_vars", ["must map host names to variables"])
            else:
                for name, values in host_vars.items():
                    fail("host_vars", runner.vars_problems(values, f"host_vars.{name}"))
        if not has_unknown(news.get("connection")):
            try:
                fail("connection", runner.Connection.from_dict(news.get("connection")).problems())
            except (ValidationError, TypeError) as exc:
                fail("connection", [str(exc)])
        timeout = news.get("timeout_seconds")
        if not isinstance(timeout, int | float) or not 60 <= timeout <= 6 * 3600:
            fail("timeout_seconds", [f"must be between 60 and 21600 seconds, got {timeout!r}"])
        return dynamic.CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        news = runner.whole_numbers(news)
        if has_unknown(news):
            return dynamic.DiffResult(changes=True, replaces=[], delete_before_replace=False)
        changed = []
        if olds.get("drift"):  # a refresh found the host changed by hand (or unreachable): re-converge
            changed.append("drift")
        if olds.get("content_hash") != news.get("content_hash"):
            changed.append("content_hash")
        if olds.get("inventory_hash") != inventory_hash(news):
            changed.append("inventory")
        salt = olds.get("vars_salt") or ""
        if olds.get("vars_hash") != runner.vars_digest(news.get("vars"), news.get("secret_vars"), salt):
            changed.append("vars")
        for key in ("playbook", "stack"):
            if olds.get(key) != news.get(key):
                changed.append(key)
        return dynamic.DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def _run(self, props: dict[str, Any], salt: str, run_count: int) -> dict[str, Any]:
        props = runner.whole_numbers(props)
        data = inventory_data(props, getattr(self, "settings", None))
        stack, playbook = props["stack"], props["playbook"]
        file_name = inventory_file_name(stack, playbook)
        text = runner.render_inventory(data, stack, playbook)
        if props.get("inventory_host"):  # per-host resources share one combined on-call file
            path = runner.write_inventory_fragment(file_name, props["inventory_host"], data, playbook)
        else:
            path = runner.write_inventory(file_name, text)
        hosts = props.get("hosts") or []
        run = runner.run_playbook(
            playbook,
            text,
            stack=stack,
            extra_vars=props.get("vars") or {},
            secret_vars=props.get("secret_vars") or {},
            timeout=int(props["timeout_seconds"]),
            forks=min(max(len(hosts), 5), 25),
        )
        # A resource checked on refresh keeps its secret variables (a secret output, encrypted in state):
        # the check run needs them, and read() only sees outputs.
        keep_secrets = bool(props.get("refresh_check"))
        outs = {key: value for key, value in props.items() if key != "secret_vars" or keep_secrets}
        outs.update(
            {
                "inventory_hash": inventory_hash(props),
                "vars_salt": salt,
                "vars_hash": runner.vars_digest(props.get("vars"), props.get("secret_vars"), salt),
                "host_results": run.host_results(),
                "changed": run.changed,
                "run_count": run_count,
                "last_run_seconds": run.duration_seconds,
                "inventory_path": str(path),
                "artifact_dir": run.artifact_dir,
                "drift": [],
            }
        )
        return outs

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        outs = self._run(props, secrets.token_hex(16), 1)
        id_ = f"{props['stack']}-{props['playbook']}-{secrets.token_hex(4)}"
        return dynamic.CreateResult(id_=id_, outs=outs)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        salt = olds.get("vars_salt") or secrets.token_hex(16)
        return dynamic.UpdateResult(outs=self._run(news, salt, int(olds.get("run_count") or 0) + 1))

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        # With refresh_check, refresh runs the playbook in check mode and records what would change in
        # ``drift``; diff then plans an update. Without it, what is stored is what the last run reported.
        if not props.get("refresh_check"):
            return dynamic.ReadResult(id_=id_, outs=props)
        return dynamic.ReadResult(
            id_=id_, outs={**props, "drift": check_drift(props, getattr(self, "settings", None))}
        )

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        try:
            name = inventory_file_name(props["stack"], props["playbook"])
            if props.get("inventory_host"):
                runner.remove_inventory_fragment(name, props["inventory_host"], props["playbook"])
            else:
                runner.remove_inventory(name)
        except (KeyError, ValidationError):
            return


class AnsiblePlaybook(dynamic.Resource, module="ansible", name="Playbook"):
    """Converges ``hosts`` with ``ansible/playbooks/<playbook>``; re-runs only when something it uses changed.

    ``hosts`` is the fleet's inventory output (``[{name, fqdn, ip, service_id}]``), ``vars`` plain extra
    variables, ``secret_vars`` secret ones (DKIM keys, mailbox passwords), ``host_vars`` per host name.
    """

    host_results: pulumi.Output[dict[str, dict[str, int]]]
    changed: pulumi.Output[int]
    run_count: pulumi.Output[int]
    inventory_path: pulumi.Output[str]
    content_hash: pulumi.Output[str]
    vars_hash: pulumi.Output[str]
    inventory_hash: pulumi.Output[str]
    drift: pulumi.Output[list[str]]

    def __init__(
        self,
        name: str,
        *,
        hosts: pulumi.Input[list[dict[str, Any]]],
        playbook: str = "mailhost.yml",
        stack: str | None = None,
        vars: pulumi.Input[dict[str, Any]] | None = None,
        secret_vars: pulumi.Input[dict[str, Any]] | None = None,
        host_vars: pulumi.Input[dict[str, dict[str, Any]]] | None = None,
        group_vars: pulumi.Input[dict[str, Any]] | None = None,
        connection: dict[str, Any] | None = None,
        timeout_seconds: int = DEFAULT_TIMEOUT,
        inventory_host: str | None = None,
        refresh_check: bool = False,
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "stack": stack or pulumi.get_stack(),
            "playbook": playbook,
            # Hashed here, in the program, so a role edit shows in `pulumi preview` as an update.
            "content_hash": runner.content_hash(playbook) if playbook in runner.PLAYBOOK_GROUPS else "",
            "hosts": hosts,
            "vars": vars or {},
            "secret_vars": pulumi.Output.secret(secret_vars or {}),
            "host_vars": host_vars or {},
            "group_vars": group_vars or {},
            "connection": connection or {},
            "timeout_seconds": timeout_seconds,
            # One host's resource (per-host fleets): its fragment of the combined on-call inventory.
            "inventory_host": inventory_host,
            "refresh_check": refresh_check,
        }
        props.update(
            {key: None for key in (*RESULT_KEYS, "inventory_hash", "vars_hash", "vars_salt", "drift")}
        )
        if refresh_check:
            opts = pulumi.ResourceOptions.merge(
                pulumi.ResourceOptions(additional_secret_outputs=["secret_vars"]), opts
            )
        super().__init__(AnsiblePlaybookProvider(), name, props, opts)
