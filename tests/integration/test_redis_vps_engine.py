"""`pulumi up` with ``redis.deploy: vps``: the queue's Redis ordered as a VPS, certified by the stack's CA
and converged with the redis role, through the real program on a private simulator with podman nodes.

The queue user of the stack's ``redis_url`` output works over TLS verified by the ``redis_ca_certificate``
output, only on its prefixes and never with a forbidden command; a second preview plans nothing.
"""

from __future__ import annotations

import contextlib
import uuid

import pytest
import redis
from pulumi import automation as auto

from devenv.podman_hosts import PodmanHosts
from tests.support.engine import project_stack
from tests.support.hostwinds import hostwinds_section, private_simulator

pytestmark = [pytest.mark.engine, pytest.mark.services]


def _config(sim) -> dict:
    return {
        "environment": "dev",
        "redis": {
            "deploy": "vps",
            "tls": True,
            "queue_user": f"pm-rv-{uuid.uuid4().hex[:8]}",
            "vps": {"ssh_key_names": ["penguinmails-dev-operator"], "rdns_domain": "rv.penguinmails.test"},
        },
        "postgres": {tier: {"enabled": False} for tier in ("oltp", "content", "analytics", "queue")},
        "hostwinds": hostwinds_section(sim),
    }


def test_up_orders_converges_and_certifies_the_queue_redis(tmp_path, devenv_env):
    prefix = f"pm-rv{uuid.uuid4().hex[:6]}"
    try:
        with private_simulator(tmp_path / "sim", backend="podman", podman_prefix=prefix) as sim:
            operator_key, _ = sim.service.operator_key()
            stack = project_stack(
                tmp_path,
                "dev",
                config=_config(sim),
                extra_env={
                    **sim.env(),
                    "PENGUINMAILS_FLEET_SSH_PRIVATE_KEY": str(operator_key),
                    "PENGUINMAILS_ANSIBLE_INVENTORY_DIR": str(tmp_path / "inventory"),
                    "PENGUINMAILS_ANSIBLE_STATE_DIR": str(tmp_path / "ansible-state"),
                },
            )
            try:
                _exercise(stack, tmp_path)
            finally:
                with contextlib.suppress(auto.CommandError):
                    stack.destroy(color="never")
            stack.workspace.remove_stack("dev")
    finally:
        PodmanHosts(prefix).clear()


def _exercise(stack, tmp_path):
    up = stack.up(color="never")
    assert up.summary.result == "succeeded"
    outputs = stack.outputs()
    assert outputs["redis_url"].secret and outputs["redis_url"].value.startswith("rediss://")
    assert "redis_ca_certificate" in outputs and not outputs["redis_ca_certificate"].secret
    results = outputs["redis_host_results"].value
    assert [r["failed"] for r in results.values()] == [0]
    ca_file = tmp_path / "redis-ca.pem"
    ca_file.write_text(outputs["redis_ca_certificate"].value)
    state = stack.export_stack().deployment
    # The CA's and the server's private keys are secrets in state: marked in the export, and nowhere in
    # the backend's files as plain text.
    secret_sig = "4dabf18193072939515e22adb298388d"
    for resource in state["resources"]:
        for part in ("inputs", "outputs"):
            for key, value in (resource.get(part) or {}).items():
                if "PRIVATE KEY" in str(value):
                    assert isinstance(value, dict) and secret_sig in value, (resource["urn"], part, key)
    backend = [p.read_text() for p in (tmp_path / "state" / "backend").rglob("*.json")]
    assert backend and not any("PRIVATE KEY" in text for text in backend)

    client = redis.Redis.from_url(
        outputs["redis_url"].value, ssl_ca_certs=str(ca_file), ssl_cert_reqs="required", socket_timeout=5
    )
    try:
        assert client.ping() is True
        assert client.zadd("queue:{rv}:ready:q", {"1": 1.0}) == 1
        assert client.zmscore("queue:{rv}:ready:q", ["1", "2"]) == [1.0, None]
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command("FLUSHALL")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set("outside:key", "v")
    finally:
        client.close()
    plain = outputs["redis_url"].value.replace("rediss://", "redis://")
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis.from_url(plain, socket_timeout=3).ping()  # no plaintext port

    preview = stack.preview(color="never", expect_no_changes=True)
    assert set(preview.change_summary) == {"same"}
