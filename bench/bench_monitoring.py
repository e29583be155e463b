"""Prometheus's own cost for a 200-node fleet: scrape and rule evaluation against stand-in exporters.

Targets are generated the way the stack generates them (:func:`modules.monitoring.targets.plan_targets`:
200 mail hosts, each with a node and a postfix exporter, plus four tiers, Redis, DNS and the queue). The
exporters are stand-ins: one asyncio process answering on one loopback port per target with the text a
real Debian ``prometheus-node-exporter`` and ``prometheus-postfix-exporter`` served here a moment before
(each target's samples carry its own instance label, so Prometheus stores 402 distinct series sets). A
private Prometheus (the devenv's configuration: 5 s scrape and evaluation interval, three times the
production default, and the checkout's alert rules) runs for a warm-up, then its CPU time and memory are
read from /proc over the measured window.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

NODES = 200
WARMUP_S = 45
WINDOW_S = 120


def _capture(binary: str, args: list[str], port: int) -> str:
    """One scrape of a real exporter started on loopback for the purpose."""
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                    return answer.read().decode()
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{binary} did not answer on 127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(10)


def _serve(bodies: dict[int, bytes], ready: threading.Event, stop: threading.Event) -> None:
    async def main() -> None:
        servers = []
        for port, body in bodies.items():
            head = (
                f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            )

            async def handle(reader, writer, payload=head + body):
                try:
                    while True:
                        request = await reader.readuntil(b"\r\n\r\n")
                        if not request:
                            break
                        writer.write(payload)
                        await writer.drain()
                except (asyncio.IncompleteReadError, ConnectionError):
                    pass
                finally:
                    writer.close()

            servers.append(await asyncio.start_server(handle, "127.0.0.1", port))
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.2)
        for server in servers:
            server.close()

    asyncio.run(main())


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _query(url: str, expr: str) -> float:
    with urllib.request.urlopen(  # noqa: S310 - the private Prometheus on loopback
        f"{url}/api/v1/query?query={urllib.parse.quote(expr)}", timeout=10
    ) as answer:
        result = json.load(answer)["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def run() -> dict:
    from devenv.bind import free_port
    from devenv.prometheus import PrometheusService
    from modules.monitoring.targets import TargetInputs, plan_targets

    node_text = _capture("/usr/bin/prometheus-node-exporter", [], free_port())
    postfix_text = _capture(
        "/usr/bin/prometheus-postfix-exporter", ["--postfix.logfile_path=/dev/null"], free_port()
    )
    nodes = [{"name": f"mx-{i:03d}", "ip": f"10.200.{i // 250}.{i % 250 + 1}"} for i in range(NODES)]
    jobs = plan_targets(
        TargetInputs(
            stack="bench",
            nodes=nodes,
            tiers={t: f"pm_bench_{t}" for t in ("oltp", "content", "analytics", "queue")},
            redis=True,
            dns=True,
            queue=True,
            reputation=True,
            exporters={},
        )
    )
    # Every node target points at a stand-in port of its own on loopback (the labels stay the plan's).
    bodies: dict[int, bytes] = {}
    for job, text in (("node", node_text), ("postfix", postfix_text)):
        for group in jobs[job]:
            port = free_port()
            while port in bodies:
                port = free_port()
            group["targets"] = [f"127.0.0.1:{port}"]
            bodies[port] = text.encode()
    ready, stop = threading.Event(), threading.Event()
    server = threading.Thread(target=_serve, args=(bodies, ready, stop), daemon=True)
    server.start()
    ready.wait(60)
    samples_per_scrape = {
        "node": sum(1 for line in node_text.splitlines() if line and not line.startswith("#")),
        "postfix": sum(1 for line in postfix_text.splitlines() if line and not line.startswith("#")),
    }
    with tempfile.TemporaryDirectory(prefix="pm-bench-prom-") as tmp:
        root = Path(tmp)
        prometheus = PrometheusService(root=root, port=free_port(), alertmanager_port=free_port())
        for job in ("node", "postfix"):
            folder = prometheus.targets / job
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "bench.json").write_text(json.dumps(jobs[job]))
        prometheus.start()
        url = f"http://{prometheus.address}"
        try:
            pid = prometheus.pid()
            time.sleep(WARMUP_S)
            up = _query(url, 'count(up{job=~"node|postfix"} == 1)')
            cpu0, t0 = _cpu_seconds(pid), time.monotonic()
            peak = 0.0
            while time.monotonic() - t0 < WINDOW_S:
                time.sleep(5)
                peak = max(peak, _rss_mib(pid))
            cpu = (_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
            result = {
                "nodes": NODES,
                "targets": len(bodies),
                "targets_up": int(up),
                "samples_per_scrape": samples_per_scrape,
                "scrape_interval_s": 5,
                "window_s": WINDOW_S,
                "cpu_cores_used": round(cpu, 3),
                "rss_mib_peak": round(peak, 1),
                "head_series": int(_query(url, "prometheus_tsdb_head_series")),
                "rule_groups_eval_seconds": round(
                    _query(url, "sum(prometheus_rule_group_last_duration_seconds)"), 4
                ),
                "scrape_duration_avg_s": round(
                    _query(url, 'avg(scrape_duration_seconds{job=~"node|postfix"})'), 4
                ),
            }
        finally:
            prometheus.stop()
            stop.set()
            server.join(10)
    return result
