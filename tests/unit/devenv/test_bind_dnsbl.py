from __future__ import annotations

from devenv.bind import DNSBL_ZONE, BindService
from modules.config.reputation import DEV_ZONE


def test_the_dev_bind_serves_the_local_dnsbl_zone_with_dynamic_updates(tmp_path):
    bind = BindService(root=tmp_path, port=15399, acme_names=[])
    assert DNSBL_ZONE == DEV_ZONE
    assert DNSBL_ZONE in bind.zones()
    (tmp_path / "bind").mkdir(parents=True, exist_ok=True)
    text = bind.config_text().replace(str(tmp_path), "ROOT")
    line = next(line for line in text.splitlines() if line.startswith(f'zone "{DNSBL_ZONE}"'))
    assert "grant penguinmails-dev zonesub ANY;" in line


def test_the_dnsbl_zone_carries_the_rfc5782_test_entry(tmp_path):
    bind = BindService(root=tmp_path, port=15399, zones=[DNSBL_ZONE], acme_names=[])
    bind._write_zone(DNSBL_ZONE)
    text = bind.zone_file(DNSBL_ZONE).read_text()
    assert "2.0.0.127 60 IN A 127.0.0.2" in text
