"""``BackupStanza``: one pgBackRest stanza per PostgreSQL cluster, as a Pulumi dynamic resource.

create writes the stanza's config and the archive settings, runs ``stanza-create`` and ``check`` and takes
the first full backup. read (``pulumi refresh``) asks ``pgbackrest info``: a missing stanza (moto restarted
and lost the bucket) or no backup becomes ``drift``, so the next ``up`` repairs it. delete runs
``stanza-delete`` only for a stanza it created, and only when no other stack still uses it: each create
adds its id (with a random part) to ``<work dir>/<stanza>.owners`` and each delete takes its own out.

A cluster has one archive command, so one stanza: it is named after the cluster (``local-<port>``), not
the stack, and stacks sharing a dev cluster (dev and a test stack) share it. Tiers sharing one cluster
(the dev stack's four) share its stanza; retention is the longest of theirs.
The resource runs where the cluster's files are (a dev stack's local tiers); a server tier's host gets its
config and cron entries from its Ansible role, with the same commands (``penguinmails db backup``).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi.dynamic as dynamic

from modules.config.model import TIERS
from modules.errors import ToolkitError
from modules.postgres.backup import pgbackrest as pb
from modules.postgres.client import connect
from modules.postgres.resources import _changed, _PostgresProvider, _read_result

STANZA_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
KEYS = ("stack", "stanza", "tiers", "retention_days", "drift")


def ensure_bucket(repo: pb.Repo) -> None:
    """A dev stack's bucket (moto keeps it in memory, so a restart loses it); a real bucket must exist."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=f"https://{repo.host}:{repo.port}",
        region_name=repo.region,
        aws_access_key_id=repo.access_key,
        aws_secret_access_key=repo.secret_key,
        verify=repo.ca_file or repo.verify_tls,
    )
    try:
        client.head_bucket(Bucket=repo.bucket)
    except Exception:
        try:
            client.create_bucket(Bucket=repo.bucket)
        except Exception as exc:
            raise pb.BackupError(
                f"bucket {repo.bucket} on {repo.host}:{repo.port}: {repo.redact(str(exc))}"
            ) from None


class BackupStanzaProvider(_PostgresProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures = []
        if not isinstance(news.get("stanza"), str) or not STANZA_RE.match(news["stanza"]):
            failures.append(
                dynamic.CheckFailure("stanza", "must be lower-case letters, digits, _ or - (1-63)")
            )
        tiers = news.get("tiers")
        if not isinstance(tiers, list) or not tiers or any(t not in TIERS for t in tiers):
            failures.append(dynamic.CheckFailure("tiers", f"must be a non-empty list of {', '.join(TIERS)}"))
        days = news.get("retention_days")
        if not isinstance(days, int | float) or not 1 <= int(days) <= 3650:
            failures.append(dynamic.CheckFailure("retention_days", "must be 1..3650"))
        return dynamic.CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = _changed(olds, news, KEYS)
        replaces = [key for key in changed if key in ("stanza", "stack")]
        return dynamic.DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=True)

    def _cluster(self, props: dict[str, Any]) -> pb.Cluster:
        return pb.cluster_of(self._target({"tier": props["tiers"][0]}), props["stanza"])

    def _repo(self, props: dict[str, Any]) -> pb.Repo:
        return pb.repo_from_settings(self.settings_or_default(), props["stanza"])

    def settings_or_default(self):
        from modules.providers import ProviderSettings

        return getattr(self, "settings", ProviderSettings())

    def _converge(self, props: dict[str, Any], owner: str) -> dict[str, Any]:
        cluster, repo = self._cluster(props), self._repo(props)
        if self.settings_or_default().is_dev:
            ensure_bucket(repo)
        # Stacks sharing the cluster share the stanza: keep backups as long as the longest of them wants.
        retention = _owners_add(cluster, owner, int(props["retention_days"]))
        pb.install(cluster, repo, retention)
        if not pb.archive_mode_on(cluster):
            raise pb.BackupError(
                f"BackupStanza[{cluster.stanza}]: archive_mode is off on {cluster.host}:{cluster.port}; it needs "
                "one restart of the server (dev: `python -m devenv start s3` does it), then run `up` again"
            )
        pb.run(cluster, "stanza-create", timeout=300)
        pb.run(cluster, "check", timeout=300)
        if pb.last_backup(pb.info(cluster)) is None:
            pb.run(cluster, "backup", "--type=full")
        last = pb.last_backup(pb.info(cluster))
        return {
            **props,
            "drift": [],
            "last_label": (last or {}).get("label", ""),
            "work_dir": str(cluster.work_dir),
        }

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        owner = f"{props['stack']}/{props['stanza']}/{secrets.token_hex(6)}"
        return dynamic.CreateResult(id_=owner, outs=self._converge(props, owner))

    def update(self, id_: str, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        return dynamic.UpdateResult(outs=self._converge(news, id_))

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        cluster = self._cluster(props)
        drift = []
        if not cluster.config_file.exists():
            drift.append(f"the config {cluster.config_file} is missing")
        else:
            entry = pb.info(cluster)
            if entry is None:
                drift.append(f"stanza {cluster.stanza} is missing from the repository")
            elif pb.last_backup(entry) is None:
                drift.append(f"stanza {cluster.stanza} has no complete backup")
        return _read_result(id_, {**props, "drift": drift})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        cluster = self._cluster(props)
        owners = _owners(cluster)
        if id_ not in owners:
            return  # not a stanza this resource made: leave the repository alone
        _owners_write(cluster, [o for o in owners if o != id_])
        if len(owners) > 1:
            return  # another stack still backs up this cluster
        if cluster.config_file.exists():
            pb.run(cluster, "stop", check=False)
            pb.run(cluster, "stanza-delete", "--force", check=False, timeout=600)
            pb.run(cluster, "start", check=False)
        pb.remove(cluster)
        try:
            with connect(cluster.target(), application_name="penguinmails-backup") as conn:
                conn.execute("SELECT pg_reload_conf()")
        except ToolkitError:
            pass  # the server is gone with the stack


def _owners_file(cluster: pb.Cluster):
    return cluster.work_dir / f"{cluster.stanza}.owners"


def _owner_days(cluster: pb.Cluster) -> dict[str, int]:
    """Each user of the stanza (resource id) and the retention it asked for; lines ``<id> <days>``."""
    owners: dict[str, int] = {}
    try:
        lines = _owners_file(cluster).read_text().splitlines()
    except OSError:
        return owners
    for line in lines:
        parts = line.split()
        if parts:
            owners[parts[0]] = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return owners


def _owners(cluster: pb.Cluster) -> list[str]:
    return list(_owner_days(cluster))


def _owners_write(cluster: pb.Cluster, owners: list[str], days: dict[str, int] | None = None) -> None:
    days = days if days is not None else _owner_days(cluster)
    cluster.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # pb.install gives it to postgres
    _owners_file(cluster).write_text("".join(f"{owner} {days.get(owner, 0)}\n" for owner in owners))


def _owners_add(cluster: pb.Cluster, owner: str, retention_days: int) -> int:
    """Record ``owner`` and its retention; the stanza's retention: the longest any owner wants."""
    days = _owner_days(cluster)
    days[owner] = retention_days
    _owners_write(cluster, list(days), days)
    return max(days.values())


@dataclass(frozen=True)
class BackupStanzaArgs:
    """One cluster's stanza: the tiers it holds and their (longest) retention."""

    stack: str
    stanza: str
    tiers: list[str]
    retention_days: int
    drift: list[str] = field(default_factory=list)

    def props(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "stanza": self.stanza,
            "tiers": list(self.tiers),
            "retention_days": self.retention_days,
            "drift": [],
        }


class BackupStanza(dynamic.Resource, module="postgres", name="BackupStanza"):
    stanza: pulumi.Output[str]
    last_label: pulumi.Output[str]
    work_dir: pulumi.Output[str]
    drift: pulumi.Output[list]

    def __init__(
        self, resource_name: str, args: BackupStanzaArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(
            BackupStanzaProvider(),
            resource_name,
            {**args.props(), "last_label": None, "work_dir": None},
            opts,
        )


def stanza_groups(postgres) -> dict[tuple[str, int], list[str]]:
    """Enabled local tiers grouped by cluster (host, port): one stanza per cluster."""
    groups: dict[tuple[str, int], list[str]] = {}
    for tier, cfg in postgres.tiers().items():
        if cfg.enabled and cfg.mode == "local":
            groups.setdefault((cfg.host, cfg.port), []).append(tier)
    return groups


def backup_stanzas(
    name: str, postgres, depends_on: list[pulumi.Resource], opts: pulumi.ResourceOptions
) -> list[BackupStanza]:
    """The stack's stanzas (``postgres`` is its PostgresConfig; ``postgres.backup`` says if and how)."""
    config = postgres.backup
    if not config.enabled:
        return []
    stanzas = []
    for (_host, port), tiers in stanza_groups(postgres).items():
        stanza = stanza_name(port)
        args = BackupStanzaArgs(pulumi.get_stack(), stanza, tiers, config.retention_for(tiers))
        stanzas.append(
            BackupStanza(
                f"{name}-backup-{stanza}",
                args,
                opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=depends_on)),
            )
        )
    return stanzas


def stanza_name(port: int) -> str:
    """A local cluster's stanza: one per cluster (its port on this machine), whichever stacks use it."""
    return f"local-{port}"


def stanza_for(postgres, stack: str, tier: str) -> str:
    """The stanza holding ``tier`` on ``stack``, named as :func:`backup_stanzas` names it."""
    for (_host, port), tiers in stanza_groups(postgres).items():
        if tier in tiers:
            return stanza_name(port)
    raise pb.BackupError(
        f"postgres.{tier}: no stanza on stack {stack!r} (the tier is disabled or a server tier, whose host "
        "runs pgBackRest itself)"
    )
