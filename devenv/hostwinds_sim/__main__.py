"""``python -m devenv.hostwinds_sim``: run the Hostwinds simulator in the foreground (loopback only).

The API key is read from a file (``--api-key-file``), never from the command line, so it does not show in
``ps``. SIGTERM stops the server and saves the state file; podman containers keep running, like servers do
when the provider's API is down.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from devenv.hostwinds_sim.backends import MemoryBackend, PodmanBackend
from devenv.hostwinds_sim.model import Account
from devenv.hostwinds_sim.server import Faults, Simulator


def build_simulator(args: argparse.Namespace) -> Simulator:
    backend = PodmanBackend(args.podman_prefix) if args.backend == "podman" else MemoryBackend()
    account = Account(
        backend,
        build_seconds=args.build_seconds,
        delete_seconds=args.delete_seconds,
        resize_seconds=args.resize_seconds,
        processing_seconds=args.processing_seconds,
    )
    api_key = Path(args.api_key_file).read_text().strip()
    if not api_key:
        raise SystemExit(f"{args.api_key_file} is empty")
    faults = Faults.from_dict(json.loads(args.faults)) if args.faults else Faults()
    state_file = Path(args.state_file) if args.state_file else None
    sim = Simulator(account, api_key, args.host, args.port, faults=faults, state_file=state_file)
    for spec in args.ssh_key:
        name, _, path = spec.partition("=")
        account.ensure_key(name, Path(path).read_text())
    return sim


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv.hostwinds_sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8930)
    parser.add_argument("--backend", choices=("memory", "podman"), default="memory")
    parser.add_argument("--podman-prefix", default="pm-vps", help="container name prefix (podman backend)")
    parser.add_argument("--build-seconds", type=float, default=5.0)
    parser.add_argument("--delete-seconds", type=float, default=0.5)
    parser.add_argument("--resize-seconds", type=float, default=None)
    parser.add_argument(
        "--processing-seconds", type=float, default=0.0, help="order processing: an order shows after this"
    )
    parser.add_argument("--api-key-file", required=True)
    parser.add_argument("--state-file", default=None, help="keep the account here across restarts")
    parser.add_argument("--faults", default=None, help="JSON, e.g. '{\"error_rate\": 0.2}'")
    parser.add_argument(
        "--ssh-key", action="append", default=[], metavar="NAME=PATH", help="register an account SSH key"
    )
    parser.add_argument("--pid-file", default=None)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the simulator listens on loopback only")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    sim = build_simulator(args)
    if args.pid_file:
        import os

        Path(args.pid_file).write_text(f"{os.getpid()}\n")

    def stop(signum, frame) -> None:
        # shutdown() blocks until serve_forever returns, so it must run outside the serving thread.
        threading.Thread(target=sim.httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger("hostwinds_sim").info(
        "serving %s (backend %s, build %.1f s)", sim.url, args.backend, args.build_seconds
    )
    sim.serve_forever()
    sim.httpd.server_close()
    sim.save()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
