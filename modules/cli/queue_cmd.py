"""`penguinmails queue`: depth and dead letters of a stack's queue, as its workers see it.

Reads the stack's outputs (``postgres_queue_worker_url``, ``redis_url``, ``queue_namespace``; secrets are
decrypted with the stack's passphrase and never printed) and works as the queue's worker role.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import typer

from modules.cli.console import console
from modules.cli.pulumi_json import pulumi_json
from modules.errors import ToolkitError
from modules.queue import ops
from modules.queue.redis_side import RedisSide
from modules.queue.store import WorkerStore
from modules.queue.worker import redis_client

app = typer.Typer(no_args_is_help=True, help=__doc__)
dead = typer.Typer(no_args_is_help=True, help="Dead letters: list, replay (fresh attempts), purge.")
app.add_typer(dead, name="dead-letters")

STACK = typer.Option("dev", "--stack", "-s", help="Stack whose queue to read.")
CWD = typer.Option(Path("."), "--cwd", help="Folder holding Pulumi.yaml.")
QUEUE = typer.Option(None, "--queue", "-q", help="Only this queue.")
TENANT = typer.Option(None, "--tenant", "-t", help="Only this tenant (uuid).")


def _connect(stack: str, cwd: Path) -> tuple[WorkerStore, RedisSide]:
    outputs = pulumi_json(
        ["stack", "output", "--json", "--show-secrets", "--stack", stack],
        f"the outputs of {stack!r}",
        cwd,
        {},
    )
    missing = [k for k in ("postgres_queue_worker_url", "redis_url", "queue_namespace") if not outputs.get(k)]
    if missing:
        raise ToolkitError(
            f"stack {stack!r} has no {', '.join(missing)} output: run `pulumi up --stack {stack}` "
            "(the queue tier must be enabled)"
        )
    store = WorkerStore(outputs["postgres_queue_worker_url"], application_name="penguinmails-cli")
    return store, RedisSide(redis_client(outputs["redis_url"]), outputs["queue_namespace"])


def _tenant(value: str | None) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ToolkitError(f"--tenant: {value!r} is not a uuid") from None


@app.command("stats")
def stats_command(stack: str = STACK, cwd: Path = CWD, as_json: bool = typer.Option(False, "--json")) -> None:
    """Depth per queue and priority, oldest ready age, scheduled, in flight and dead letters."""
    store, side = _connect(stack, cwd)
    found = ops.stats(store, side)
    if as_json:
        print(json.dumps(found.as_dict(), indent=2))
        return
    console.print(f"{'queue':<20} {'prio':>5} {'ready':>8} {'oldest s':>9} {'sched':>7} {'dead':>6}")
    for d in found.depths:
        age = "-" if d.oldest_ready_age_s is None else f"{d.oldest_ready_age_s:.1f}"
        console.print(f"{d.queue:<20} {d.priority:>5} {d.ready:>8} {age:>9} {d.scheduled:>7} {d.dead:>6}")
    if not found.depths:
        console.print("(no job waiting, scheduled or dead)")
    busy = {q: n for q, n in found.in_flight.items() if n}
    console.print("in flight: " + (", ".join(f"{q} {n}" for q, n in sorted(busy.items())) or "none"))


@dead.command("list")
def dead_list(
    stack: str = STACK,
    cwd: Path = CWD,
    queue: str | None = QUEUE,
    tenant: str | None = TENANT,
    limit: int = typer.Option(50, "--limit", min=1, max=10000),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The newest dead letters (payloads are not printed: they are the tenants' data)."""
    tenant_id = _tenant(tenant)
    store, _ = _connect(stack, cwd)
    rows = store.dead_letters(queue, tenant_id, limit)
    if as_json:
        keys = ("id", "tenant_id", "queue", "attempts", "last_error", "enqueued_at", "died_at")
        print(json.dumps([dict(zip(keys, map(str, r), strict=True)) for r in rows], indent=2))
        return
    for job_id, tenant_id, q, attempts, error, _enq, died in rows:
        console.print(
            f"{job_id:>10} {q:<18} {tenant_id} attempts={attempts} died={died:%Y-%m-%d %H:%M:%S} {error}"
        )
    if not rows:
        console.print("no dead letters")


def _dead_letter_command(name: str, action, verb: str, doc: str) -> None:
    """``dead-letters <name>``: ``action`` (ops.replay or ops.purge) with the filters, in batches."""

    def command(
        stack: str = STACK,
        cwd: Path = CWD,
        queue: str | None = QUEUE,
        tenant: str | None = TENANT,
        ids: list[int] = typer.Option([], "--id", help="Only these job ids (repeatable)."),
        limit: int | None = typer.Option(None, "--limit", min=1),
        yes: bool = typer.Option(False, "--yes", help=f"Confirm a {name} with no filter."),
    ) -> None:
        if queue is None and tenant is None and not ids and not yes:
            raise ToolkitError(
                f"{verb} every dead letter of every queue? name --queue/--tenant/--id, or add --yes"
            )
        tenant_id = _tenant(tenant)  # bad input fails before the stack is read
        store, _ = _connect(stack, cwd)
        with console.status(f"{verb}…") as status:
            done = action(
                store,
                queue=queue,
                tenant=tenant_id,
                ids=ids or None,
                limit=limit,
                progress=lambda n: status.update(f"{verb}: {n} so far"),
            )
        console.print(f"{verb}: {done} dead letter(s)")

    command.__doc__ = doc
    dead.command(name)(command)


_dead_letter_command(
    "replay", ops.replay, "replayed", "Put dead letters back in their queue with a fresh attempt count."
)
_dead_letter_command("purge", ops.purge, "purged", "Delete dead letters for good.")
