"""The ``penguinmails`` exporter: the queue's depth, the sending IPs' DNSBL state, the sending domains'
DNS verification and the tiers' row retention runs as Prometheus metrics.

Queue metrics are read at scrape time through the queue's operator functions (``worker.stats()`` and the
Redis lease sets, as ``penguinmails queue stats`` reads them) with short timeouts; a source that does not
answer is reported as ``penguinmails_source_up{source=…} 0`` and its metrics are left out, so the scrape
itself never fails. DNSBL checks are slow and rate-limited by the lists, so they run every
``check_interval_seconds`` in a background thread (writing each verdict to OLTP as the ``reputation``
role) and scrapes serve the last round; so does the DNS verification (every ``dns_interval_seconds``).

The config file (written by the Pulumi side, ``<devenv>/monitoring/exporter-<stack>.json`` in dev) holds
connection URLs with passwords and DNSBL query keys: it must be mode 0600, and neither is ever printed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modules.config.model import RETAINED_TIERS
from modules.config.reputation import check_hostports, split_hostport
from modules.dns.lookup import lookup_for
from modules.dns.sts_fetch import PolicyFetcher
from modules.dns.verify import DomainReport, expectations_from_output, verify
from modules.errors import ToolkitError
from modules.monitoring import replication
from modules.monitoring.backup_metrics import BackupReader, BackupSource
from modules.monitoring.periodic import Periodic as _Periodic
from modules.monitoring.replication import ReplicaSource
from modules.monitoring.warmup_loop import WarmupLoop
from modules.reputation.checker import Round, run_round
from modules.reputation.dnsbl import Outcome, Zone
from modules.reputation.store import ReputationStore
from modules.reputation.warmup import WarmupPlan

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9395"
_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_ZONE_RE = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+$")


class ExporterConfigError(ToolkitError):
    exit_code = 2


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueueSource(_Model):
    """The stack's queue as its workers see it (stack outputs postgres_queue_worker_url, redis_url,
    queue_namespace)."""

    worker_url: str = Field(repr=False)
    redis_url: str = Field(repr=False)
    namespace: str = Field(min_length=1)

    @field_validator("worker_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://")):
            raise ValueError("must be a redis:// or rediss:// URL")
        return value


class DnsblZone(_Model):
    name: str
    query_key: str | None = Field(default=None, repr=False)

    @field_validator("name")
    @classmethod
    def _zone(cls, value: str) -> str:
        value = value.rstrip(".").lower()
        if not _ZONE_RE.match(value):
            raise ValueError("is not a DNS zone name")
        return value

    @field_validator("query_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None and not _LABEL_RE.match(value):
            raise ValueError("must be one DNS label (letters, digits, '-', '_'; the value was not printed)")
        return value


class ExporterConfig(_Model):
    """The exporter's JSON file."""

    stack: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    queue: QueueSource | None = None
    # The OLTP tier as the reputation role (stack output postgres_oltp_reputation_url); none: results are
    # exported only, nothing is written or quarantined.
    oltp_url: str | None = Field(default=None, repr=False)
    sending_ips: list[str] = Field(default_factory=list)
    dnsbl_zones: list[DnsblZone] = Field(default_factory=list)
    resolvers: list[str] = Field(default_factory=list, description="host:port; empty: /etc/resolv.conf")
    check_interval_seconds: float = Field(default=900.0, ge=1, le=86400)
    concurrency: int = Field(default=50, ge=1, le=1000)
    query_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    scrape_timeout_seconds: float = Field(default=3.0, gt=0, le=30)
    # What the stack published and expects (its dns_verification output), checked every
    # dns_interval_seconds through dns_resolvers (empty: the system's) like `penguinmails dns verify`.
    dns_verification: list[dict] = Field(default_factory=list)
    dns_resolvers: list[str] = Field(default_factory=list)
    dns_ca_file: str | None = None
    dns_interval_seconds: float = Field(default=300.0, ge=1, le=86400)
    # The bearer token of the routes endpoint the hosts' sender routes agents poll (modules/monitoring/
    # routes.py); none: no endpoint.
    routes_token: str | None = Field(default=None, min_length=24, repr=False)
    # The warm-up job (modules/monitoring/warmup_loop.py): the OLTP tier as its ``warmup`` duty (stack
    # output postgres_oltp_warmup_url) and the Prometheus that scrapes the hosts' delivery counters; both
    # or no job.
    warmup_url: str | None = Field(default=None, repr=False)
    prometheus_url: str | None = None
    warmup_plan: WarmupPlan | None = None
    warmup_start_day: int = Field(default=1, ge=1)
    warmup_interval_seconds: float = Field(default=3600.0, ge=1, le=86400)
    # Row retention (modules/postgres/retention.py): tier → the tier's readonly URL (stack outputs
    # postgres_<tier>_readonly_url), which reads retention.runs and nothing of the retention functions.
    retention_urls: dict[str, str] = Field(default_factory=dict, repr=False)

    @field_validator("retention_urls")
    @classmethod
    def _retention(cls, value: dict[str, str]) -> dict[str, str]:

        for tier, url in value.items():
            if tier not in RETAINED_TIERS:
                raise ValueError(f"{tier!r} is not a tier with retention ({', '.join(RETAINED_TIERS)})")
            if not url.startswith(("postgresql://", "postgres://")):
                raise ValueError(f"{tier}: must be a postgresql:// URL")
        return value

    # Streaming replicas of fleet tiers (modules/monitoring/replication.py): their lag gauge.
    replicas: list[ReplicaSource] = Field(default_factory=list)
    # pgBackRest stanzas whose backup age and last result are exported (modules/monitoring/backup_metrics.py).
    backup_stanzas: list[BackupSource] = Field(default_factory=list)

    @field_validator("prometheus_url")
    @classmethod
    def _prometheus(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s):// URL")
        return value

    @field_validator("oltp_url", "warmup_url")
    @classmethod
    def _oltp(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("sending_ips")
    @classmethod
    def _ips(cls, values: list[str]) -> list[str]:
        found = []
        for position, value in enumerate(values):
            try:
                found.append(str(ipaddress.ip_address(value)))
            except ValueError:
                raise ValueError(f"item {position} {value!r} is not an IPv4 or IPv6 address") from None
        twice = sorted({ip for ip in found if found.count(ip) > 1})
        if twice:
            raise ValueError(f"listed twice: {', '.join(twice)}")
        return found

    @field_validator("resolvers", "dns_resolvers")
    @classmethod
    def _resolvers(cls, values: list[str]) -> list[str]:
        return check_hostports(values)

    def zones(self) -> list[Zone]:
        return [Zone(z.name, z.query_key) for z in self.dnsbl_zones]


def load_config(path: Path) -> ExporterConfig:
    """Read and validate the file; refuse one that others may read (it holds passwords)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text()
    except OSError as exc:
        raise ExporterConfigError(f"exporter config {path}: {exc.strerror or exc}") from None
    if mode & 0o077:
        raise ExporterConfigError(
            f"exporter config {path} is mode {mode:04o}: it holds passwords, make it 0600 (chmod 600 {path})"
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExporterConfigError(
            f"exporter config {path}: not JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    try:
        return ExporterConfig.model_validate(data)
    except ValidationError as exc:
        reasons = []
        for error in exc.errors(include_url=False):
            where = ".".join(str(p) for p in error["loc"]) or "(top level)"
            reasons.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
        raise ExporterConfigError(f"exporter config {path}: {'; '.join(reasons)}") from None


class QueueReader:
    """The queue's operator view with short timeouts; connections are kept between scrapes."""

    def __init__(self, source: QueueSource, timeout: float):
        from modules.queue.redis_side import RedisSide
        from modules.queue.store import WorkerStore

        self.timeout = timeout

        class _Store(WorkerStore):
            def connection(inner):  # a short connect and statement timeout for scrapes
                import psycopg

                if inner._conn is None or inner._conn.closed or inner._conn.broken:
                    inner._conn = psycopg.connect(
                        inner.url,
                        autocommit=True,
                        application_name=inner.application_name,
                        connect_timeout=max(1, int(timeout)),
                        options=f"-c statement_timeout={int(timeout * 1000)}",
                    )
                return inner._conn

        import redis

        self.store = _Store(source.worker_url, application_name="penguinmails-exporter")
        client = redis.Redis.from_url(
            source.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self.side = RedisSide(client, source.namespace)

    def collect(self) -> Iterator[GaugeMetricFamily | tuple[str, bool]]:
        from modules.queue import ops

        ready = GaugeMetricFamily(
            "penguinmails_queue_ready",
            "Jobs ready to run, per queue and priority",
            labels=["queue", "priority"],
        )
        scheduled = GaugeMetricFamily(
            "penguinmails_queue_scheduled", "Jobs scheduled for later", labels=["queue"]
        )
        dead = GaugeMetricFamily("penguinmails_queue_dead_letters", "Dead letters", labels=["queue"])
        oldest = GaugeMetricFamily(
            "penguinmails_queue_oldest_ready_age_seconds", "Age of the oldest ready job", labels=["queue"]
        )
        in_flight = GaugeMetricFamily(
            "penguinmails_queue_in_flight", "Jobs leased by workers", labels=["queue"]
        )
        try:
            found = ops.stats(self.store, None)
            queues = [q.name for q in self.store.queues()]
        except Exception as exc:
            log.warning("Reading the queue's PostgreSQL failed: %s", type(exc).__name__)
            yield ("postgres_queue", False)
            # Without the queue list there is nothing to count in Redis; still say whether it answers.
            try:
                self.side.client.ping()
            except Exception:
                yield ("redis", False)
            else:
                yield ("redis", True)
            return
        yield ("postgres_queue", True)
        per_queue: dict[str, dict[str, float]] = {q: {"scheduled": 0, "dead": 0, "oldest": 0} for q in queues}
        for d in found.depths:
            ready.add_metric([d.queue, str(d.priority)], d.ready)
            row = per_queue.setdefault(d.queue, {"scheduled": 0, "dead": 0, "oldest": 0})
            row["scheduled"] += d.scheduled
            row["dead"] += d.dead
            row["oldest"] = max(row["oldest"], d.oldest_ready_age_s or 0)
        for queue, row in sorted(per_queue.items()):
            scheduled.add_metric([queue], row["scheduled"])
            dead.add_metric([queue], row["dead"])
            oldest.add_metric([queue], row["oldest"])
        yield from (ready, scheduled, dead, oldest)
        try:
            leased = {queue: self.side.depth(queue)[1] for queue in sorted(per_queue)}
        except Exception as exc:
            log.warning("Reading the queue's Redis failed: %s", type(exc).__name__)
            yield ("redis", False)
            return
        yield ("redis", True)
        for queue, count in leased.items():
            in_flight.add_metric([queue], count)
        yield in_flight


class RetentionReader:
    """The tiers' ``retention.runs`` at scrape time, as their readonly roles, with short timeouts."""

    QUERY = """
        SELECT table_name, sum(deleted)::float8,
               extract(epoch FROM max(finished_at) FILTER (WHERE status = 'succeeded'))::float8,
               (array_agg(status ORDER BY id DESC))[1] = 'failed'
          FROM retention.runs GROUP BY table_name ORDER BY table_name"""

    def __init__(self, urls: dict[str, str], timeout: float):
        self.urls, self.timeout = dict(urls), timeout
        self._conns: dict = {}

    def _conn(self, tier: str):
        import psycopg

        conn = self._conns.get(tier)
        if conn is None or conn.closed or conn.broken:
            conn = self._conns[tier] = psycopg.connect(
                self.urls[tier],
                autocommit=True,
                application_name="penguinmails-exporter",
                connect_timeout=max(1, int(self.timeout)),
                options=f"-c statement_timeout={int(self.timeout * 1000)}",
            )
        return conn

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | tuple[str, bool]]:
        deleted = CounterMetricFamily(
            "penguinmails_retention_deleted_rows",
            "Rows deleted by row retention since the tier was created, per table",
            labels=["tier", "table"],
        )
        last = GaugeMetricFamily(
            "penguinmails_retention_last_run_timestamp_seconds",
            "When the tier's last successful retention run of a table finished (the oldest of its tables)",
            labels=["tier"],
        )
        failed = GaugeMetricFamily(
            "penguinmails_retention_last_run_failed",
            "1 when the latest retention run of the table failed",
            labels=["tier", "table"],
        )
        for tier in sorted(self.urls):
            try:
                rows = self._conn(tier).execute(self.QUERY).fetchall()
            except Exception as exc:
                log.warning("Reading retention.runs of %s failed: %s", tier, type(exc).__name__)
                yield (f"postgres_{tier}_retention", False)
                continue
            yield (f"postgres_{tier}_retention", True)
            stamps = []
            for table, total, finished, is_failed in rows:
                deleted.add_metric([tier, table], total or 0.0)
                failed.add_metric([tier, table], 1.0 if is_failed else 0.0)
                stamps.append(finished or 0.0)
            if stamps:
                last.add_metric([tier], min(stamps))
        yield from (deleted, last, failed)


class ReputationLoop(_Periodic):
    """The DNSBL rounds; :attr:`last` is the newest finished :class:`Round`."""

    what = "DNSBL round"

    def __init__(self, config: ExporterConfig):
        super().__init__(config.check_interval_seconds)
        self.config = config
        self.store = ReputationStore(config.oltp_url, "penguinmails-exporter") if config.oltp_url else None

    def wanted(self) -> bool:
        return bool(self.config.sending_ips and self.config.dnsbl_zones)

    def check(self) -> Round:
        c = self.config
        return run_round(
            c.sending_ips, c.zones(), c.resolvers, c.concurrency, c.query_timeout_seconds, self.store
        )

    def stop(self) -> None:
        super().stop()
        if self.store is not None:
            self.store.close()


@dataclass(frozen=True)
class DnsRound:
    finished: float
    reports: list[DomainReport]


class DnsVerifyLoop(_Periodic):
    """What `penguinmails dns verify` checks (MX, SPF, DKIM, DMARC, MTA-STS fetched over HTTPS, TLS-RPT,
    PTR), for every sending domain of the stack, on a timer."""

    what = "DNS verification"

    def __init__(self, config: ExporterConfig):
        super().__init__(config.dns_interval_seconds)
        self.config = config
        self.expectations = expectations_from_output(config.dns_verification)

    def wanted(self) -> bool:
        return bool(self.expectations)

    def check(self) -> DnsRound:
        lookup = lookup_for(self.config.dns_resolvers or None)
        reports = verify(self.expectations, lookup, fetcher=PolicyFetcher(self.config.dns_ca_file))
        return DnsRound(time.time(), reports)


class PenguinmailsCollector(Collector):
    def __init__(
        self,
        config: ExporterConfig,
        loop: ReputationLoop,
        dns: DnsVerifyLoop | None = None,
        warmup: WarmupLoop | None = None,
    ):
        self.config = config
        self.loop = loop
        self.dns = dns
        self.warmup = warmup
        self.queue = QueueReader(config.queue, config.scrape_timeout_seconds) if config.queue else None
        self.retention = (
            RetentionReader(config.retention_urls, config.scrape_timeout_seconds)
            if config.retention_urls
            else None
        )
        self.backups = BackupReader(config.backup_stanzas) if config.backup_stanzas else None
        self._lock = threading.Lock()  # one scrape at a time shares the queue connections

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "penguinmails_source_up",
            "1 when the source answered this scrape or the last check",
            labels=["source"],
        )
        if self.queue is not None:
            with self._lock:
                for item in self.queue.collect():
                    if isinstance(item, tuple):
                        up.add_metric([item[0]], 1.0 if item[1] else 0.0)
                    else:
                        yield item
        if self.retention is not None:
            with self._lock:
                for item in self.retention.collect():
                    if isinstance(item, tuple):
                        up.add_metric([item[0]], 1.0 if item[1] else 0.0)
                    else:
                        yield item
        yield from self._reputation(up)
        yield from replication.collect(self.config.replicas, self.config.scrape_timeout_seconds, up)
        yield from self._dns()
        if self.warmup is not None:
            yield from self.warmup.collect(up)
        if self.backups is not None:
            yield from self.backups.collect()
        yield up

    def _dns(self) -> Iterator[GaugeMetricFamily]:
        last = self.dns.last if self.dns is not None else None
        if last is None:
            return
        failing = GaugeMetricFamily(
            "penguinmails_dns_verify_failing",
            "1 when a check of the domain's published records failed in the last verification",
            labels=["domain"],
        )
        checks = GaugeMetricFamily(
            "penguinmails_dns_verify_check_failing",
            "1 when this check of the domain failed (spf, dkim, dmarc, mx, mta-sts, tls-rpt, ptr…)",
            labels=["domain", "check"],
        )
        for report in last.reports:
            failing.add_metric([report.domain], 0.0 if report.passed else 1.0)
            for result in report.results:
                checks.add_metric([report.domain, result.check.lower()], 0.0 if result.passed else 1.0)
        yield failing
        yield checks
        yield GaugeMetricFamily(
            "penguinmails_dns_verify_timestamp_seconds",
            "When the last DNS verification finished",
            value=last.finished,
        )

    def _reputation(self, up: GaugeMetricFamily) -> Iterator[GaugeMetricFamily]:
        last = self.loop.last
        if last is None:
            return
        listed = GaugeMetricFamily(
            "penguinmails_dnsbl_listed",
            "1 when the zone lists the IP, 0 when it does not",
            labels=["ip", "zone"],
        )
        errors = GaugeMetricFamily(
            "penguinmails_dnsbl_check_errors",
            "IPs whose check in the zone gave no usable answer (timeout, SERVFAIL, refused)",
            labels=["zone"],
        )
        failed: dict[str, int] = {z.name: 0 for z in self.config.dnsbl_zones}
        for r in last.results:
            if r.outcome is Outcome.ERROR:
                failed[r.zone] = failed.get(r.zone, 0) + 1
            else:
                listed.add_metric([r.ip, r.zone], 1.0 if r.outcome is Outcome.LISTED else 0.0)
        for zone, count in sorted(failed.items()):
            errors.add_metric([zone], count)
        quarantined = GaugeMetricFamily(
            "penguinmails_ip_quarantined", "1 while the IP is quarantined (listed on a DNSBL)", labels=["ip"]
        )
        for ip, flag in sorted(last.quarantined().items()):
            quarantined.add_metric([ip], 1.0 if flag else 0.0)
        yield listed
        yield errors
        yield quarantined
        yield GaugeMetricFamily(
            "penguinmails_dnsbl_check_timestamp_seconds",
            "When the last DNSBL round finished",
            value=last.finished,
        )
        yield GaugeMetricFamily(
            "penguinmails_dnsbl_check_duration_seconds",
            "How long the last DNSBL round took",
            value=last.seconds,
        )
        answered = any(r.outcome is not Outcome.ERROR for r in last.results)
        up.add_metric(["dnsbl"], 1.0 if answered or not last.results else 0.0)
        if self.loop.store is not None:
            up.add_metric(["postgres_oltp"], 0.0 if last.store_error else 1.0)


class Exporter:
    """Config, check loop, collector and HTTP server together (the CLI and the tests start this)."""

    def __init__(
        self, config: ExporterConfig, listen: str = DEFAULT_LISTEN, routes_listen: str | None = None
    ):
        self.config = config
        self.host, self.port = split_hostport(listen, default_port=9395)
        if routes_listen and not config.routes_token:
            raise ExporterConfigError(
                "exporter: --routes-listen needs routes_token in the config (the hosts' bearer token)"
            )
        self.routes_address = split_hostport(routes_listen, default_port=9396) if routes_listen else None
        self.routes = None
        self.loop = ReputationLoop(config)
        self.dns = DnsVerifyLoop(config)
        self.warmup = WarmupLoop(
            stack=config.stack,
            warmup_url=config.warmup_url,
            prometheus_url=config.prometheus_url,
            plan=config.warmup_plan,
            start_day=config.warmup_start_day,
            interval=config.warmup_interval_seconds,
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = PenguinmailsCollector(config, self.loop, self.dns, self.warmup)
        self.registry.register(self.collector)
        self.server = None
        self._thread = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> Exporter:
        from prometheus_client import start_http_server

        self.server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        self.port = self.server.server_port
        if self.routes_address is not None:
            from modules.monitoring.routes import RoutesServer

            try:
                self.routes = RoutesServer(
                    *self.routes_address,
                    self.config.routes_token,
                    self.config.stack,
                    lambda: self.loop.last,
                    warmup=lambda: self.warmup.last,
                ).start()
            except OSError:
                self.server.shutdown()
                self.server.server_close()
                raise
            log.info("Exporter[%s] serving routes on %s", self.config.stack, self.routes.url)
        self.loop.start()
        self.dns.start()
        self.warmup.start()
        log.info("Exporter[%s] serving %s", self.config.stack, self.url)
        return self

    def stop(self) -> None:
        self.loop.stop()
        self.dns.stop()
        self.warmup.stop()
        if self.routes is not None:
            self.routes.stop()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def serve(path: Path, listen: str = DEFAULT_LISTEN, routes_listen: str | None = None) -> None:
    """Run until interrupted (``penguinmails monitoring exporter``)."""
    exporter = Exporter(load_config(path), listen, routes_listen)
    try:
        exporter.start()
    except OSError as exc:
        where = f"{listen} / {routes_listen}" if routes_listen else listen
        raise ExporterConfigError(f"exporter: cannot listen on {where}: {exc.strerror or exc}") from None
    stop = threading.Event()
    try:
        import signal

        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        while not stop.wait(1.0):
            pass
    finally:
        exporter.stop()
