"""redis.deploy: external (default, dev's devenv Redis) or vps (converged by the redis role)."""

from __future__ import annotations

import pytest

from modules.config.loader import validate_config
from modules.errors import ConfigError


def test_default_is_external():
    assert validate_config({}, stack="t").redis.deploy == "external"


def test_vps_with_tls_is_accepted():
    redis = validate_config(
        {"redis": {"deploy": "vps", "tls": True, "vps": {"ssh_key_names": ["ops"]}}}, stack="t"
    ).redis
    assert redis.deploy == "vps" and redis.vps.nodes == 1 and redis.vps.node_names() == ["redis-01"]


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


def test_redis_vps_config_is_required_for_deploy_vps_and_refused_without_it():
    with pytest.raises(ConfigError, match=r"redis\.vps"):
        validate_config({"redis": {"deploy": "vps", "tls": True}})
    with pytest.raises(ConfigError, match=r"only used with redis\.deploy: vps"):
        validate_config({"redis": {"vps": {"ssh_key_names": ["ops"]}}})
    with pytest.raises(ConfigError, match=r"nodes"):
        validate_config({"redis": {"deploy": "vps", "tls": True, "vps": {"nodes": 2}}})
