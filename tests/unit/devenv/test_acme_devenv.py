"""devenv's ACME pieces without running them: BIND's grants for the narrow key, Pebble's listen addresses."""

from __future__ import annotations

import json

from devenv.bind import ACME_KEY_NAME, PODMAN_GATEWAY, BindService
from devenv.pebble import PebbleService
from devenv.registry import SERVICE_CLASSES


def _bind(tmp_path, names):
    bind = BindService(
        root=tmp_path, port=15353, zones=["example.test", "sub.example.test", "other.test"], acme_names=names
    )
    (bind.dir / "tsig.key").write_text(
        'key "penguinmails-dev" { algorithm hmac-sha256; secret "bWFpbg=="; };\n'
    )
    (bind.dir / "acme-tsig.key").write_text(
        f'key "{ACME_KEY_NAME}" {{ algorithm hmac-sha256; secret "YWNtZQ=="; }};\n'
    )
    return bind


def test_acme_key_may_write_only_txt_at_acme_challenge_of_listed_names(tmp_path):
    bind = _bind(tmp_path, ["mx-1.example.test", "mail.d.sub.example.test"])
    zones = {line.split('"')[1]: line for line in bind.config_text().splitlines() if line.startswith("zone ")}
    assert f"grant {ACME_KEY_NAME} name _acme-challenge.mx-1.example.test. TXT;" in zones["example.test"]
    # A name goes to its most specific zone only.
    assert "mail.d.sub" not in zones["example.test"]
    assert (
        f"grant {ACME_KEY_NAME} name _acme-challenge.mail.d.sub.example.test. TXT;"
        in zones["sub.example.test"]
    )
    assert ACME_KEY_NAME not in zones["other.test"]
    # Never a wider rule for the ACME key.
    for line in zones.values():
        for rule in line.split("update-policy {")[1].split("};")[0].split(";"):
            if ACME_KEY_NAME in rule:
                assert rule.strip().startswith(
                    f"grant {ACME_KEY_NAME} name _acme-challenge."
                ) and rule.strip().endswith(" TXT")
    assert "grant penguinmails-dev zonesub ANY;" in zones["other.test"]


def test_bind_answers_on_loopback_and_the_podman_bridge(tmp_path):
    text = _bind(tmp_path, []).config_text()
    assert f"listen-on port 15353 {{ 127.0.0.1; {PODMAN_GATEWAY}; }};" in text
    assert "allow-query { 127.0.0.1; 10.88.0.0/16; };" in text
    assert "recursion no;" in text


def test_bind_exports_the_narrow_key_for_the_hosts(tmp_path):
    env = _bind(tmp_path, []).env()
    assert env["PENGUINMAILS_ACME_TSIG_KEY_NAME"] == ACME_KEY_NAME
    assert env["PENGUINMAILS_ACME_TSIG_SECRET"] == "YWNtZQ=="
    assert env["PENGUINMAILS_ACME_DNS_SERVER"] == PODMAN_GATEWAY
    assert env["PENGUINMAILS_TSIG_SECRET"] == "bWFpbg=="


def test_a_renamed_acme_key_is_made_again(tmp_path):
    bind = _bind(tmp_path, [])
    other = BindService(root=tmp_path, port=15353, zones=["example.test"], acme_key_name="another-acme")
    secret = other.tsig_secret(acme=True)
    assert 'key "another-acme"' in other.acme_key_file.read_text() and secret != "YWNtZQ=="
    assert bind.tsig_secret() == "bWFpbg=="  # the zone-wide key is never remade


def test_pebble_never_listens_on_every_interface_and_keeps_management_on_loopback(tmp_path):
    pebble = PebbleService(root=tmp_path, port=24000, management_port=25000, dns_server="127.0.0.1:15353")
    config = json.loads(pebble.config_text())["pebble"]
    assert config["listenAddress"] in (f"{PODMAN_GATEWAY}:24000", "127.0.0.1:24000")
    assert config["managementListenAddress"] == "127.0.0.1:25000"
    env = pebble.env()
    assert env["PENGUINMAILS_DEV_CA_FILE"] == str(tmp_path / "pebble" / "roots.pem")
    assert env["PENGUINMAILS_ACME_DIRECTORY"] == f"https://{pebble.host}:24000/dir"


def test_pebble_starts_after_bind():
    names = [cls.name for cls in SERVICE_CLASSES]
    assert names.index("pebble") > names.index("bind")
