"""The resources' pure parts: labels, input checks, what replaces and what updates in place."""

from __future__ import annotations

import json

import pytest
from pulumi.runtime.rpc import UNKNOWN

from modules.hostwinds.resources import (
    FleetReadyProvider,
    SshKeyProvider,
    VpsProvider,
    is_hostname,
    resolve_image,
    settings_from,
    vps_failures,
    vps_label,
)
from modules.providers import ProviderSettings

PROPS = {
    "label": "dev-penguinmails-fleet-mx-01",
    "location_id": 1,
    "image": "debian-12",
    "plan_id": 1,
    "ssh_keys": ["operator"],
    "firewall_profile": "smtp",
    "rdns": "mx-01.fleet.example.com",
    "billing_cycle": "hourly",
    "wait_until_ready": False,
}


def test_labels_are_unique_per_stack_stable_and_short():
    assert vps_label("dev", "penguinmails-fleet-mx-01") == "dev-penguinmails-fleet-mx-01"
    assert vps_label("prod", "penguinmails-fleet-mx-01") != vps_label("dev", "penguinmails-fleet-mx-01")
    long_a, long_b = vps_label("s", "x" * 80 + "a"), vps_label("s", "x" * 80 + "b")
    assert len(long_a) <= 63 and long_a != long_b and long_a == vps_label("s", "x" * 80 + "a")
    assert vps_label("Org/Stack", "Node_1") == "org-stack-node-1"


def test_good_inputs_pass_and_every_bad_input_is_named():
    assert vps_failures(PROPS) == []
    bad = {
        **PROPS,
        "label": "has space",
        "location_id": 0,
        "plan_id": "two",
        "image": " ",
        "billing_cycle": "weekly",
        "ssh_keys": "operator",
        "rdns": "not_a_host",
        "firewall_profile": "",
        "wait_until_ready": "yes",
    }
    failed = {f.property for f in vps_failures(bad)}
    assert failed == {
        "label",
        "location_id",
        "plan_id",
        "image",
        "billing_cycle",
        "ssh_keys",
        "rdns",
        "firewall_profile",
        "wait_until_ready",
    }
    reasons = " ".join(f.reason for f in vps_failures(bad))
    assert "weekly" in reasons and "not_a_host" in reasons


def test_unknown_values_in_a_preview_are_not_judged():
    assert vps_failures({**PROPS, "rdns": UNKNOWN, "ssh_keys": [UNKNOWN], "label": UNKNOWN}) == []


def test_optional_rdns_and_firewall_may_be_null():
    assert vps_failures({**PROPS, "rdns": None, "firewall_profile": None}) == []
    assert (
        is_hostname("mx-01.example.com")
        and not is_hostname("localhost")
        and not is_hostname("-x.example.com")
    )


@pytest.mark.parametrize("key", ["location_id", "image"])
def test_location_or_image_change_replaces_deleting_first(key):
    news = {**PROPS, key: 2 if key == "location_id" else "rocky-9"}
    diff = VpsProvider().diff("1", PROPS, news)
    assert diff.changes is True and diff.replaces == [key] and diff.delete_before_replace is True


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("label", "renamed"),
        ("rdns", "mx-09.example.com"),
        ("firewall_profile", "web"),
        ("plan_id", 3),
        ("billing_cycle", "monthly"),
        ("ssh_keys", ["operator", "backup"]),
    ],
)
def test_other_changes_update_in_place(key, value):
    diff = VpsProvider().diff("1", PROPS, {**PROPS, key: value})
    assert diff.changes is True and diff.replaces == []


RECORDED = {"service_id": 5, "server_uuid": "3f1c", "main_ip": "198.18.0.1", "status": "ACTIVE"}


def test_no_change_and_output_only_fields_are_not_a_diff():
    olds = {**PROPS, **RECORDED, "endpoint": "http://x"}
    assert VpsProvider().diff("5", olds, PROPS).changes is False
    assert VpsProvider().diff("5", olds, {**PROPS, "rdns": UNKNOWN}).changes is True
    # Naming inputs (the fleet tag, the order budget) never change a server.
    renamed = {**PROPS, "name_base": "other", "owner_tag": "zzzzzzzzzz", "order_budget": 9}
    assert VpsProvider().diff("5", olds, renamed).changes is False


def test_state_from_an_older_version_without_wait_flag_is_not_a_change():
    olds = {**{k: v for k, v in PROPS.items() if k != "wait_until_ready"}, **RECORDED}
    assert VpsProvider().diff("5", olds, PROPS).changes is False


def test_a_node_recorded_before_uuids_updates_in_place_to_learn_it_and_a_pending_order_resumes():
    legacy = {**PROPS, "service_id": 5, "main_ip": "198.18.0.1"}
    diff = VpsProvider().diff("5", legacy, PROPS)
    assert diff.changes is True and diff.replaces == []
    pending = {**PROPS, "order_pending": True, "service_id": None}
    diff = VpsProvider().diff(PROPS["label"], pending, PROPS)
    assert diff.changes is True and diff.replaces == []


def test_fleet_ready_changes_only_when_nodes_change():
    node = {
        "name": "mx-01",
        "label": "l",
        "service_id": 5,
        "fqdn": "mx-01.x.test",
        "rdns": "mx-01.x.test",
        "firewall_profile": "smtp",
    }
    olds = {"nodes": [node], "inventory": [{"name": "mx-01", "ip": "198.18.0.1"}], "endpoint": "http://x"}
    provider = FleetReadyProvider()
    assert provider.diff("f", olds, {"nodes": [node]}).changes is False
    assert provider.diff("f", olds, {"nodes": [{**node, "service_id": 6}]}).changes is True
    assert provider.diff("f", olds, {"nodes": UNKNOWN}).changes is True
    failures = provider.check({}, {"nodes": [node, dict(node)]}).failures
    assert [f.reason for f in failures] == ["node names must be unique"]


def test_ssh_key_replacement_order_depends_on_what_changed():
    provider = SshKeyProvider()
    olds = {"key_name": "a", "public_key": "ssh-ed25519 AAAA one"}
    same_name = provider.diff("a", olds, {**olds, "public_key": "ssh-ed25519 BBBB two"})
    assert same_name.replaces == ["public_key"] and same_name.delete_before_replace is True
    new_name = provider.diff("a", olds, {**olds, "key_name": "b"})
    assert new_name.replaces == ["key_name"] and new_name.delete_before_replace is False


def test_images_resolve_by_uuid_slug_or_name():
    images = [
        {"uuid": "u-1", "slug": "debian-12", "name": "Debian 12"},
        {"uuid": "u-2", "name": "Rocky Linux 9"},
    ]
    assert resolve_image(images, "debian-12") == "u-1"
    assert resolve_image(images, "Debian 12") == "u-1"
    assert resolve_image(images, "u-2") == "u-2"
    assert resolve_image(images, "windows") is None


def test_environment_wins_over_config_for_endpoint_and_key(monkeypatch):
    settings = ProviderSettings(
        {
            "penguinmails:hostwinds": json.dumps(
                {"endpoint": "https://api.example.test/cloud/api.php", "poll_interval_seconds": 2}
            ),
            "penguinmails:hostwindsApiKey": "from-config",
        }
    )
    monkeypatch.delenv("PENGUINMAILS_HOSTWINDS_ENDPOINT", raising=False)
    monkeypatch.delenv("PENGUINMAILS_HOSTWINDS_API_KEY", raising=False)
    plain = settings_from(settings)
    assert (plain.endpoint, plain.api_key, plain.poll_interval) == (
        "https://api.example.test/cloud/api.php",
        "from-config",
        2.0,
    )
    monkeypatch.setenv("PENGUINMAILS_HOSTWINDS_ENDPOINT", "http://127.0.0.1:9/cloud/api.php")
    monkeypatch.setenv("PENGUINMAILS_HOSTWINDS_API_KEY", "from-env")
    env = settings_from(settings)
    assert (env.endpoint, env.api_key) == ("http://127.0.0.1:9/cloud/api.php", "from-env")


def test_check_without_the_api_warns_once_and_keeps_local_checks(monkeypatch):
    from modules.hostwinds import common as resources
    from modules.hostwinds.client import HostwindsClient, HostwindsTransient

    calls = []

    def down(self):
        calls.append(1)
        raise HostwindsTransient(
            "Hostwinds get_locations: cannot connect", "get_locations", maybe_applied=False
        )

    monkeypatch.setattr(HostwindsClient, "location_list", down)
    monkeypatch.setenv("PENGUINMAILS_HOSTWINDS_ENDPOINT", "http://127.0.0.1:9/cloud/api.php")
    monkeypatch.setenv("PENGUINMAILS_HOSTWINDS_API_KEY", "unit-test-key")
    monkeypatch.setattr(resources, "_CACHES", {})
    provider = VpsProvider()
    for _ in range(20):
        assert provider.check({}, PROPS).failures == []
    assert [f.property for f in provider.check({}, {**PROPS, "plan_id": 0}).failures] == ["plan_id"]
    assert len(calls) == 1  # the failure is remembered; 200 checks do not each wait out the retries
