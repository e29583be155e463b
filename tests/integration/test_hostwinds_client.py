"""The client's error model and retry rules against the simulator over real HTTP on loopback."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from modules.hostwinds.client import (
    HostwindsClient,
    HostwindsInvalidRequest,
    HostwindsNotFound,
    HostwindsTransient,
    HostwindsUnauthorized,
)
from tests.support.hostwinds import free_port, private_simulator


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with private_simulator(tmp_path_factory.mktemp("hostwinds-client"), build_seconds=0.0) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _reset(sim):
    sim.faults(reset=True)
    sim.clear_log()
    yield
    sim.faults(reset=True)


def actions(sim) -> Counter:
    return Counter(call["action"] for call in sim.calls())


def fast(sim, **kwargs) -> HostwindsClient:
    return sim.client(backoff_base=0.01, backoff_cap=0.05, **kwargs)


def template(sim) -> str:
    return sim.client().image_list()[0]["uuid"]


def test_wrong_key_is_unauthorized_and_the_key_is_not_quoted(sim):
    wrong = "wrong-key-that-must-not-leak"
    with pytest.raises(HostwindsUnauthorized) as caught:
        HostwindsClient(sim.endpoint, wrong).instance_list()
    assert "allow-listed" in caught.value.message
    assert wrong not in caught.value.message and wrong not in repr(HostwindsClient(sim.endpoint, wrong))


def test_not_authorized_answer_is_never_retried(sim):
    sim.faults(unauthorized_rate=1.0)
    with pytest.raises(HostwindsUnauthorized):
        fast(sim).instance_list()
    assert actions(sim)["get_instances"] == 1


def test_unknown_service_is_not_found_and_bad_requests_are_invalid(sim):
    client = sim.client()
    with pytest.raises(HostwindsNotFound, match="A valid serviceid is required"):
        client.instance_get(999)
    assert client.instance_exists(999) is False
    with pytest.raises(HostwindsInvalidRequest, match="Invalid Action"):
        client._post("no_such_action")
    with pytest.raises(HostwindsInvalidRequest, match="Location Id is invalid"):
        client.instance_create(template(sim), rid=1, location_id=99, srvrname="bad-location")


def test_transient_failures_of_reads_are_retried_with_backoff(sim):
    sim.faults(error_rate=0.5, seed=3)
    client = fast(sim, retries=8)
    for _ in range(5):
        assert client.location_list()
    outcomes = Counter(call["outcome"] for call in sim.calls())
    assert outcomes["ok"] == 5 and sum(v for k, v in outcomes.items() if k.startswith("fault:")) > 0

    sim.faults(error_rate=1.0)
    sim.clear_log()
    with pytest.raises(HostwindsTransient, match="HTTP 50"):
        fast(sim, retries=3).location_list()
    assert actions(sim)["get_locations"] == 4


def test_orders_are_never_retried_by_the_client(sim):
    sim.faults(error_rate=1.0, actions=["add_instance"])
    with pytest.raises(HostwindsTransient) as caught:
        fast(sim).instance_create(template(sim), rid=1, location_id=1, srvrname="no-retry")
    assert caught.value.maybe_applied is True
    assert actions(sim)["add_instance"] == 1


def test_a_slow_answer_times_out_as_transient(sim):
    sim.faults(latency_ms=1500)
    with pytest.raises(HostwindsTransient, match=r"no answer within 0\.3 s"):
        fast(sim, timeout=0.3, retries=0).location_list()


def test_a_closed_connection_and_a_refused_one_differ_in_maybe_applied(sim):
    sim.faults(drop_rate=1.0, drop_actions=["get_locations"], drop_mode="close")
    with pytest.raises(HostwindsTransient) as dropped:
        fast(sim, retries=0).location_list()
    assert dropped.value.maybe_applied is True
    with pytest.raises(HostwindsTransient) as refused:
        HostwindsClient(f"http://127.0.0.1:{free_port()}/cloud/api.php", "k" * 20, retries=0).location_list()
    assert refused.value.maybe_applied is False


def test_listing_follows_pages_and_search_is_exact_only_after_filtering(sim):
    client = sim.client()
    uuid = template(sim)
    for _ in range(11):
        client._post("add_instance", template=uuid, rid=1, location_id=1, srvrname="paged-node", qty=10)
    client.instance_create(uuid, rid=1, location_id=1, srvrname="paged-node-extra")
    rows = client.instance_ids(search="paged-node")
    assert len(rows) == 111
    assert actions(sim)["get_instance_ids"] == 2  # 100 + 11


def test_secrets_never_reach_logs_messages_or_returned_data(sim, caplog):
    caplog.set_level(logging.DEBUG, logger="penguinmails.hostwinds")
    client = sim.client()
    client.instance_create(template(sim), rid=1, location_id=1, srvrname="secret-check")
    sid = next(r["serviceid"] for r in sim.instances() if r["srvrname"] == "secret-check")
    instance = client.instance_get(sid)
    listing = client.instance_list()
    assert "password" not in instance and "configkey" not in instance
    assert all("password" not in row and "configkey" not in row for row in listing)
    sim.faults(error_rate=1.0)
    with pytest.raises(HostwindsTransient) as caught:
        fast(sim).instance_get(sid)
    row = next(r for r in sim.instances(secrets=True) if r["serviceid"] == sid)
    text = "\n".join(record.getMessage() for record in caplog.records) + caught.value.message
    assert "get_instance" in text
    for secret in (sim.api_key, row["password"], row["configkey"]):
        assert secret not in text
