"""The simulator as a devenv service: idempotent start, its exports, a kept account, loopback only."""

from __future__ import annotations

from devenv.hostwinds import OPERATOR_KEY_NAME, HostwindsService
from modules.hostwinds.client import HostwindsClient
from tests.support.hostwinds import free_port


def test_service_start_is_idempotent_and_a_restart_keeps_the_account(tmp_path):
    service = HostwindsService(root=tmp_path, port=free_port(), backend="memory", build_seconds=0)
    try:
        assert service.start().running
        pid = service.pid()
        assert service.start().running and service.pid() == pid  # no second server
        status = service.status()
        assert status.address.startswith("127.0.0.1:") and "memory backend" in status.detail

        env = service.env()
        assert env["PENGUINMAILS_HOSTWINDS_ENDPOINT"] == f"http://127.0.0.1:{service.port}/cloud/api.php"
        private_key = tmp_path / "hostwinds" / "operator_ed25519"
        assert env["PENGUINMAILS_FLEET_SSH_PRIVATE_KEY"] == str(private_key)
        assert private_key.stat().st_mode & 0o077 == 0
        assert (tmp_path / "hostwinds" / "api.key").stat().st_mode & 0o077 == 0

        client = HostwindsClient(
            env["PENGUINMAILS_HOSTWINDS_ENDPOINT"], env["PENGUINMAILS_HOSTWINDS_API_KEY"]
        )
        assert [k["name"] for k in client.ssh_key_list()] == [OPERATOR_KEY_NAME]
        template = client.image_list()[0]["uuid"]
        client.instance_create(template, rid=1, location_id=1, srvrname="kept", keys=[OPERATOR_KEY_NAME])
        before = client.instance_list()

        assert service.stop().running is False and service.pid() is None
        assert service.start().running and service.pid() != pid
        after = HostwindsClient(
            service.env()["PENGUINMAILS_HOSTWINDS_ENDPOINT"], service.api_key()
        ).instance_list()
        assert [(i["serviceid"], i["srvrname"], i["main_ip"]) for i in after] == [
            (i["serviceid"], i["srvrname"], i["main_ip"]) for i in before
        ]
        assert service.api_key() not in (tmp_path / "hostwinds" / "hostwinds.log").read_text()
    finally:
        service.stop()
