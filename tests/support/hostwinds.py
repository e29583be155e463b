"""Private Hostwinds simulators for tests and benchmarks, and stacks of the real project pointed at them.

Each simulator is the real devenv service (``devenv/hostwinds.py``) on a free port with its own data folder,
so the shared dev simulator on 8930 is never touched. ``SimHandle`` wraps its admin endpoints: faults, the
call log and the simulator's own instance listing (for counting duplicates and orphans).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from devenv.hostwinds import HostwindsService
from modules.engine import REPO_ROOT, engine_env, pulumi_command
from modules.hostwinds.client import HostwindsClient
from tests.support.engine import project_stack

FLEET_PROGRAM = Path(__file__).resolve().parent / "hostwinds_program"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SimHandle:
    def __init__(self, service: HostwindsService):
        self.service = service
        self.endpoint = service.endpoint
        self.api_key = service.api_key()

    def admin(self, path: str, data: Mapping[str, Any] | None = None) -> Any:
        body = json.dumps(data).encode() if data is not None else None
        url = f"{self.service.admin_url}/{path}"  # always http://127.0.0.1:<port>/_sim/…
        request = urllib.request.Request(url, data=body, method="POST" if body else "GET")
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def faults(self, **settings: Any) -> dict[str, Any]:
        return self.admin("faults", settings)

    def configure(self, **settings: Any) -> dict[str, Any]:
        return self.admin("config", settings)

    def instances(self, secrets: bool = False) -> list[dict[str, Any]]:
        return self.admin("instances?secrets=1" if secrets else "instances")

    def calls(self, since: int = 0) -> list[dict[str, Any]]:
        return self.admin(f"log?since={since}")

    def stats(self) -> dict[str, Any]:
        return self.admin("stats")

    def clear_log(self) -> None:
        self.admin("log/clear", {})

    def replace(self, serviceid: int, change_ip: bool = False) -> dict[str, Any]:
        """Rebuild an instance behind the client's back (new server_uuid and root password, same id)."""
        return self.admin("replace", {"serviceid": serviceid, "change_ip": change_ip})

    def foreign(
        self, srvrname: str, location_id: int = 1, image: str = "debian-12", rid: int = 1, **extra: Any
    ) -> int:
        """An ACTIVE instance ordered "by a person in the portal" (a decoy); returns its service id."""
        body = {"srvrname": srvrname, "location_id": location_id, "image": image, "rid": rid, **extra}
        return self.admin("foreign", body)["serviceid"]

    def assign_ip(self, serviceid: int, ip: str | None = None) -> str:
        """An additional IPv4 "bought in the portal" for an instance; returns the address."""
        body: dict[str, Any] = {"serviceid": serviceid, **({"ip": ip} if ip else {})}
        return self.admin("ips", body)["ip"]

    def client(self, **kwargs: Any) -> HostwindsClient:
        return HostwindsClient(self.endpoint, self.api_key, **kwargs)

    def env(self) -> dict[str, str]:
        return {
            "PENGUINMAILS_HOSTWINDS_ENDPOINT": self.endpoint,
            "PENGUINMAILS_HOSTWINDS_API_KEY": self.api_key,
        }


@contextlib.contextmanager
def private_simulator(
    root: Path,
    build_seconds: float = 1.0,
    backend: str = "memory",
    delete_seconds: float = 0.2,
    podman_prefix: str = "pm-hwtest",
    processing_seconds: float = 0.0,
) -> Iterator[SimHandle]:
    service = HostwindsService(
        root=root,
        port=free_port(),
        backend=backend,
        build_seconds=build_seconds,
        delete_seconds=delete_seconds,
        podman_prefix=podman_prefix,
        persist=False,
        processing_seconds=processing_seconds,
    )
    service.start()
    try:
        yield SimHandle(service)
    finally:
        service.stop()


def fleet_only_stack(
    tmp_path: Path, stack_name: str, config: Mapping[str, Any], env: Mapping[str, str]
) -> auto.Stack:
    """A stack of ``hostwinds_program`` (the fleet alone) in an isolated project copy and backend."""
    project = tmp_path / "fleet-project"
    project.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "Pulumi.yaml", project / "Pulumi.yaml")
    for name, target in (("stacks", FLEET_PROGRAM), (".venv", REPO_ROOT / ".venv")):
        if not (project / name).exists():
            (project / name).symlink_to(target)
    workspace = auto.LocalWorkspace(
        work_dir=str(project),
        env_vars={**os.environ, **engine_env(tmp_path / "state"), **env},
        pulumi_command=pulumi_command(),
        secrets_provider="passphrase",
    )
    stack = auto.Stack.create(stack_name, workspace)
    values = {f"penguinmails:{key}": auto.ConfigValue(json.dumps(value)) for key, value in config.items()}
    stack.set_all_config(values, path=False)
    return stack


def fleet_stack(
    tmp_path: Path,
    sim: SimHandle,
    stack_name: str,
    nodes: int,
    fleet: Mapping[str, Any] | None = None,
    hostwinds: Mapping[str, Any] | None = None,
    whole_project: bool = False,
    extra_env: Mapping[str, str] | None = None,
) -> auto.Stack:
    """A stack with ``nodes`` fleet nodes on ``sim``: the fleet alone, or the whole project.

    The whole project also declares the other parts of the platform (its Redis user gets its own name).
    """
    config: dict[str, Any] = {
        "environment": "dev",
        "hostwinds": hostwinds_section(sim, **{"build_timeout_seconds": 120, **(hostwinds or {})}),
        "fleet": {
            "nodes": nodes,
            "rdns_domain": "fleet.penguinmails.test",
            "ssh_key_names": ["penguinmails-dev-operator"],
            **(fleet or {}),
        },
    }
    env = {**sim.env(), **(extra_env or {})}
    if not whole_project:
        return fleet_only_stack(tmp_path, stack_name, config, env)
    config["redis"] = {"queue_user": f"pm-hw-{uuid.uuid4().hex[:10]}", "port": 6390}
    return project_stack(tmp_path, stack_name, config=config, extra_env=env)


def hostwinds_section(sim: SimHandle, build_timeout_seconds: int = 300, **overrides: Any) -> dict[str, Any]:
    """A stack's ``hostwinds`` config for a private simulator: quick polls, a short lost-answer wait."""
    return {
        "endpoint": sim.endpoint,
        "poll_interval_seconds": 0.5,
        "lost_answer_wait_seconds": 1,
        "build_timeout_seconds": build_timeout_seconds,
        **overrides,
    }
