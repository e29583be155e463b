"""redis.deploy: external (default, dev's devenv Redis) or vps (converged by the redis role)."""

from __future__ import annotations

import pytest

from modules.config.loader import validate_config
from modules.errors import ConfigError


def test_default_is_external():
    assert validate_config({}, stack="t").redis.deploy == "external"


def test_vps_with_tls_is_accepted():
    assert validate_config({"redis": {"deploy": "vps", "tls": True}}, stack="t").redis.deploy == "vps"


@pytest.mark.parametrize(
    ("redis", "words"),
    [
        ({"deploy": "cluster"}, "'external' or 'vps'"),
        ({"deploy": "vps"}, "TLS only"),
        ({"deploy": "vps", "tls": False}, "TLS only"),
    ],
)
def test_bad_deploy_names_the_field(redis, words):
    with pytest.raises(ConfigError) as caught:
        validate_config({"redis": redis}, stack="t")
    assert any(r.startswith("penguinmails:redis.deploy:") and words in r for r in caught.value.reasons)
