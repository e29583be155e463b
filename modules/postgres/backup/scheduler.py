"""The backup scheduler: runs due ``penguinmails db …`` commands by cron expression (UTC).

pgBackRest must run as a process on the database host, so pg_cron cannot start it. On hosts, cron entries
run the same commands (:func:`cron_lines`); the dev stack's devenv service ``backup-scheduler`` runs
:func:`serve` on the file ``penguinmails db backup-scheduler --install`` writes.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from modules.config.backup import BackupConfig
from modules.errors import ToolkitError

ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
NAMES = ("minute", "hour", "day", "month", "weekday")


class ScheduleError(ToolkitError):
    pass


def _field(text: str, low: int, high: int, name: str) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body == "*":
                start, end = low, high
            elif "-" in body:
                start, end = (int(x) for x in body.split("-", 1))
            else:
                start = end = int(body)
        except ValueError:
            raise ScheduleError(f"cron {name} field {text!r}: not a number, range, list or step") from None
        if step < 1 or start < low or end > high or start > end:
            raise ScheduleError(f"cron {name} field {text!r}: outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return values


@dataclass(frozen=True)
class Cron:
    """A parsed five-field cron expression; weekday 7 is Sunday as 0 is."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    day_any: bool
    weekday_any: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        text = ALIASES.get(expression.strip(), expression.strip())
        fields = text.split()
        if len(fields) != 5:
            raise ScheduleError(f"cron {expression!r}: needs five fields (minute hour day month weekday)")
        sets = [_field(f, lo, hi, n) for f, (lo, hi), n in zip(fields, RANGES, NAMES, strict=True)]
        weekdays = {0 if d == 7 else d for d in sets[4]}
        return cls(*(frozenset(s) for s in sets[:4]), frozenset(weekdays), fields[2] == "*", fields[4] == "*")

    def matches(self, when: datetime.datetime) -> bool:
        if when.minute not in self.minutes or when.hour not in self.hours or when.month not in self.months:
            return False
        day_ok, weekday_ok = when.day in self.days, (when.isoweekday() % 7) in self.weekdays
        if self.day_any or self.weekday_any:  # as cron: both restricted means either may match
            return day_ok and weekday_ok
        return day_ok or weekday_ok


@dataclass(frozen=True)
class Job:
    schedule: str
    args: list[str]


def jobs_for(
    stack: str, stanza_tiers: dict[str, list[str]], config: BackupConfig, drill: bool = True
) -> list[Job]:
    """Full and differential backups per stanza (the schedule of its first tier), and the weekly drill of
    each tier."""
    jobs = []
    for tiers in stanza_tiers.values():
        first = config.tier(tiers[0])
        base = ["db", "backup", "--stack", stack, "--tier", tiers[0]]
        jobs.append(Job(first.full_schedule, [*base, "--type", "full"]))
        jobs.append(Job(first.diff_schedule, [*base, "--type", "diff"]))
        if drill:
            jobs += [
                Job(config.drill_schedule, ["db", "restore-drill", "--stack", stack, "--tier", t])
                for t in tiers
            ]
    return jobs


def cron_lines(
    jobs: list[Job], penguinmails: str = "/usr/local/bin/penguinmails", user: str = "root"
) -> list[str]:
    """/etc/cron.d lines for a host (CRON_TZ=UTC first)."""
    return ["CRON_TZ=UTC", *(f"{job.schedule} {user} {penguinmails} {' '.join(job.args)}" for job in jobs)]


def due(jobs: list[Job], when: datetime.datetime) -> list[Job]:
    return [job for job in jobs if Cron.parse(job.schedule).matches(when)]


def load(path: Path) -> tuple[list[Job], str]:
    try:
        raw = json.loads(path.read_text())
        return [Job(j["schedule"], list(j["args"])) for j in raw["jobs"]], str(raw.get("cwd", "."))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ScheduleError(f"backup scheduler: cannot read {path}: {exc}") from None


def serve(path: Path, penguinmails: str, poll: float = 20.0) -> None:
    """Run each job once in every minute its schedule matches (UTC); a job's failure is logged, not fatal."""
    jobs, cwd = load(path)
    for job in jobs:
        Cron.parse(job.schedule)  # refuse a bad schedule at start, not at 02:30
    last_minute = None
    while True:
        now = datetime.datetime.now(datetime.UTC).replace(second=0, microsecond=0)
        if now != last_minute:
            last_minute = now
            for job in due(jobs, now):
                started = time.monotonic()
                result = subprocess.run(
                    [penguinmails, *job.args], cwd=cwd, capture_output=True, text=True, check=False
                )
                tail = (result.stdout + result.stderr).strip().splitlines()[-1:] or [""]
                print(
                    f"{now:%Y-%m-%dT%H:%MZ} {' '.join(job.args)}: exit {result.returncode} in "
                    f"{time.monotonic() - started:.0f} s: {tail[0]}",
                    flush=True,
                )
        time.sleep(poll)
