"""The client's pure parts: how answers become data or typed errors, and what is kept secret."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from devenv.hostwinds_sim.backends import MemoryBackend
from devenv.hostwinds_sim.model import IMAGES, Account
from devenv.hostwinds_sim.server import Faults, Simulator
from modules.errors import ToolkitError
from modules.hostwinds import client as client_module
from modules.hostwinds.client import (
    IDEMPOTENT_ACTIONS,
    HostwindsClient,
    HostwindsError,
    HostwindsInvalidRequest,
    HostwindsNotFound,
    HostwindsRateLimited,
    HostwindsTransient,
    HostwindsUnauthorized,
    as_int,
    as_list,
    exact_label_matches,
    interpret,
    parse_retry_after,
    scrub,
)


def answer(value, status=200):
    return status, json.dumps(value).encode()


def test_read_data_is_the_success_value():
    assert interpret("get_instance", *answer({"success": {"serviceid": 7}})) == {"serviceid": 7}
    assert interpret("check_serviceid", *answer({"success": True})) is True


def test_accepted_change_is_the_list_of_steps():
    body = [{"result": "success", "action": "Invoice Paid"}, {"result": "success", "action": "Add Instance"}]
    assert interpret("add_instance", *answer(body)) == body


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            [{"result": "error", "message": "A valid serviceid is required.", "ERROR": "342432"}],
            HostwindsNotFound,
        ),
        ([{"result": "error", "message": "Service Id is required."}], HostwindsNotFound),
        ({"result": "error", "action": "Authorization", "message": "Not Authorized!"}, HostwindsUnauthorized),
        ([{"result": "error", "message": "Not Authorized!"}], HostwindsUnauthorized),
        ([{"result": "error", "message": "Invalid Action.", "ERROR": "6734"}], HostwindsInvalidRequest),
        ([{"result": "error", "message": "Location Id is invalid"}], HostwindsInvalidRequest),
        ([{"result": "error", "message": "Please try again later"}], HostwindsTransient),
    ],
)
def test_error_answers_with_http_200_become_typed_errors(body, error):
    with pytest.raises(error):
        interpret("x", *answer(body))


def test_error_code_and_message_are_kept():
    with pytest.raises(HostwindsNotFound) as caught:
        interpret(
            "get_instance",
            *answer([{"result": "error", "message": "A valid serviceid is required.", "ERROR": "342432"}]),
        )
    assert caught.value.code == "342432" and caught.value.action == "get_instance"
    assert "get_instance: A valid serviceid is required. (ERROR 342432)" in caught.value.message
    assert isinstance(caught.value, ToolkitError)


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_errors_are_transient(status):
    with pytest.raises(HostwindsTransient, match=f"HTTP {status}"):
        interpret("get_instances", status, b"<html><title>Bad Gateway</title></html>")


def test_html_with_status_200_is_transient_and_quoted_briefly():
    with pytest.raises(HostwindsTransient, match=r"not JSON .*Maintenance"):
        interpret("get_instances", 200, b"<html><body><h1>Maintenance</h1>" + b"x" * 5000 + b"</body></html>")


def test_http_auth_statuses_are_unauthorized_and_other_4xx_invalid():
    with pytest.raises(HostwindsUnauthorized):
        interpret("get_instances", 403, b"")
    with pytest.raises(HostwindsInvalidRequest):
        interpret("get_instances", 404, b"")


def test_unexpected_json_shape_is_a_plain_error():
    with pytest.raises(HostwindsError, match="unexpected answer shape"):
        interpret("get_instances", *answer({"data": []}))


def test_secret_fields_are_removed_and_their_values_redacted_later():
    body = {
        "success": {
            "serviceid": 9,
            "password": "root-pw-123456",
            "configkey": "cfg-key-abcdef",
            "nested": [{"password": "other-pw-98765"}],
        }
    }
    data = interpret("get_instance", *answer(body))
    assert "password" not in data and "configkey" not in data and data["nested"] == [{}]
    text = scrub("failed with root-pw-123456 and cfg-key-abcdef and other-pw-98765")
    assert text == "failed with *** and *** and ***"
    assert "root-pw-123456" not in HostwindsError("echo root-pw-123456").message


def test_php_arrays_and_string_numbers_are_accepted():
    assert as_list({"0": "a", "1": "b", "10": "c", "2": "d"}) == ["a", "b", "d", "c"]
    assert as_list([1]) == [1] and as_list(None) == [] and as_list({"id": 1}) == [{"id": 1}]
    assert as_int("12") == 12 and as_int(12.0) == 12 and as_int(1.5) is None and as_int("x") is None
    assert as_int(True) is None


def test_exact_label_matches_ignore_substring_hits():
    rows = [
        {"id": "5", "srvrname": "dev-mx-01"},
        {"id": 6, "srvrname": "dev-mx-010"},
        {"id": 7, "srvrname": "x"},
    ]
    assert exact_label_matches(rows, "dev-mx-01") == [5]


def test_orders_and_toggles_are_never_retried():
    for action in ("add_instance", "upgrade_instance", "upgrade_server", "confirm_upgrade", "toggle_lock"):
        assert action not in IDEMPOTENT_ACTIONS
    assert {"get_instance", "get_instances", "set_rdns", "terminate"} <= IDEMPOTENT_ACTIONS


def test_backoff_is_jittered_and_capped():
    client = HostwindsClient("http://127.0.0.1:1/cloud/api.php", "k" * 16, backoff_base=0.5, backoff_cap=4)
    samples = [client._backoff(attempt) for attempt in range(10) for _ in range(20)]
    assert min(samples) >= 0 and max(samples) <= 4
    assert len({round(s, 6) for s in samples}) > 100


def test_client_refuses_missing_key_and_bad_endpoint_without_quoting_the_key():
    with pytest.raises(HostwindsUnauthorized, match="hostwindsApiKey"):
        HostwindsClient("https://example.invalid/cloud/api.php", "")
    with pytest.raises(HostwindsInvalidRequest, match="not an http"):
        HostwindsClient("ftp://example.invalid/api.php", "some-secret-key")
    assert "some-secret-key" not in repr(HostwindsClient("http://127.0.0.1/api.php", "some-secret-key"))


# -- HTTP 429 and Retry-After ----------------------------------------------------------------------------


def test_retry_after_is_read_as_seconds_or_as_an_http_date():
    now = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3", now) == 3 and parse_retry_after(" 120 ", now) == 120
    assert parse_retry_after("0.5", now) == 0.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=42), usegmt=True), now) == 42
    assert parse_retry_after("Fri, 01 May 2026 12:00:10 GMT", now) == 10
    assert parse_retry_after("Fri, 01 May 2026 11:00:00 GMT", now) == 0  # already past
    for unreadable in (None, "", "soon", "-1", "1e3"):
        assert parse_retry_after(unreadable, now) is None


def test_a_429_is_rate_limited_never_applied_and_its_pause_is_capped():
    with pytest.raises(HostwindsRateLimited) as caught:
        interpret("add_instance", 429, b"<title>429 Too Many Requests</title>", {"retry-after": "7"})
    error = caught.value
    assert isinstance(error, HostwindsTransient) and error.maybe_applied is False
    assert error.retry_after == 7 and "HTTP 429" in error.message and "Too Many Requests" in error.message
    with pytest.raises(HostwindsRateLimited) as missing:
        interpret("get_instances", 429, b"")
    assert missing.value.retry_after == 1  # no header: 1 s
    with pytest.raises(HostwindsRateLimited) as garbled:
        interpret("get_instances", 429, b"", {"Retry-After": "whenever"})
    assert garbled.value.retry_after == 1
    with pytest.raises(HostwindsRateLimited) as capped:
        interpret("get_instances", 429, b"", {"Retry-After": "3600"}, max_retry_after=60)
    assert capped.value.retry_after == 60
    with pytest.raises(HostwindsTransient) as other:
        interpret("get_instances", 503, b"", {"Retry-After": "5"})
    assert not isinstance(other.value, HostwindsRateLimited)


API_KEY = "client-test-key-0123456789abcdef"


@pytest.fixture
def sleeps(monkeypatch, bucket):
    """Every pause the client takes, instead of taking it (and moving the rate limit's clock)."""
    taken: list[float] = []

    def sleep(seconds: float) -> None:
        taken.append(seconds)
        bucket.now += seconds

    monkeypatch.setattr(client_module.time, "sleep", sleep)
    return taken


@pytest.fixture
def sim(bucket):
    simulator = Simulator(
        Account(MemoryBackend(), build_seconds=0), API_KEY, port=0, faults=Faults(seed=11), clock=bucket
    )
    simulator.start()
    yield simulator
    simulator.httpd.shutdown()
    simulator.httpd.server_close()


def client_for(sim, **kwargs) -> HostwindsClient:
    return HostwindsClient(sim.url, API_KEY, timeout=10, backoff_base=0.01, backoff_cap=0.02, **kwargs)


def create(client, label="node-1"):
    return client.instance_create(IMAGES[0]["uuid"], rid=1, location_id=1, srvrname=label)


def outcomes(sim, action):
    return [c["outcome"] for c in sim.log_since(0) if c["action"] == action]


def test_add_instance_is_retried_after_a_429_once_retry_after_has_passed(sim, sleeps):
    sim.set_faults({"rate_limit_per_second": 1, "retry_after_seconds": 1})
    client = client_for(sim)
    assert client.location_list()  # takes the only token
    steps = create(client)
    assert [step["action"] for step in steps] == ["Invoice Paid", "Add Instance"]
    assert outcomes(sim, "add_instance") == ["fault:429", "ok"]
    (pause,) = sleeps
    assert 1.0 <= pause <= 1.15  # Retry-After plus a little jitter
    assert [row["srvrname"] for row in sim.account.own_listing()] == ["node-1"]
    assert sim.stats()["orders"] == 1


def test_add_instance_is_never_retried_after_a_502(sim, sleeps):
    sim.set_faults({"error_rate": 1.0, "actions": ["add_instance"]})  # 5xx, nothing applied
    with pytest.raises(HostwindsTransient, match="HTTP 50") as caught:
        create(client_for(sim, retries=5))
    assert not isinstance(caught.value, HostwindsRateLimited) and caught.value.maybe_applied is True
    (first,) = outcomes(sim, "add_instance")
    assert first in ("fault:500", "fault:502", "fault:503")
    assert sleeps == [] and sim.account.instances == {}

    sim.set_faults({"error_rate": 0, "actions": [], "drop_rate": 1.0})  # applied, then a 502
    with pytest.raises(HostwindsTransient, match="HTTP 502"):
        create(client_for(sim, retries=5), label="dropped")
    assert outcomes(sim, "add_instance")[1:] == ["fault:dropped"]
    assert sleeps == [] and [row["srvrname"] for row in sim.account.own_listing()] == ["dropped"]


def test_a_lost_answer_of_another_mutation_is_not_retried_either(sim, sleeps):
    create(client_for(sim))
    (sid,) = sim.account.instances
    sim.set_faults({"mutating_drop_rate": 1.0})
    with pytest.raises(HostwindsTransient) as caught:
        client_for(sim).main_ip_change(sid)  # not idempotent
    assert caught.value.maybe_applied is True and outcomes(sim, "change_main_ip") == ["fault:dropped"]
    assert sleeps == []


def test_rate_limited_calls_give_up_after_rate_limit_retries_with_capped_pauses(sim, sleeps, caplog):
    caplog.set_level(logging.DEBUG, logger="penguinmails.hostwinds")
    sim.set_faults({"throttle_rate": 1.0, "retry_after_seconds": 600})
    client = client_for(sim, rate_limit_retries=3, max_retry_after=2)
    with pytest.raises(HostwindsRateLimited) as caught:
        create(client)
    assert caught.value.retry_after == 2 and caught.value.maybe_applied is False
    assert outcomes(sim, "add_instance") == ["fault:429"] * 4 and sim.account.instances == {}
    assert len(sleeps) == 3 and all(2 <= pause <= 2.25 for pause in sleeps)
    text = "\n".join(record.getMessage() for record in caplog.records) + caught.value.message
    assert "rate limited" in text and API_KEY not in text


def test_a_429_does_not_spend_the_retry_budget_of_idempotent_actions(sim, sleeps):
    sim.set_faults({"rate_limit_per_second": 1, "retry_after_seconds": 1})
    client = client_for(sim, retries=0)
    assert client.image_list()
    assert client.location_list()  # 429, then a retry although retries=0
    assert outcomes(sim, "get_locations") == ["fault:429", "ok"] and len(sleeps) == 1

    sim.set_faults({"rate_limit_per_second": 0, "error_rate": 1.0})
    with pytest.raises(HostwindsTransient):
        client_for(sim, retries=2).location_list()
    later = outcomes(sim, "get_locations")[2:]
    assert len(later) == 3 and all(outcome.startswith("fault:50") for outcome in later)
    assert len(sleeps) == 3  # two backoffs: transient failures keep their own budget


def test_php_object_answers_are_read_like_lists():
    error = b'{"0": {"result": "error", "action": "Authorization", "message": "Not Authorized!"}}'
    with pytest.raises(HostwindsUnauthorized):
        interpret("add_instance", 200, error)
    accepted = b'{"0": {"result": "success", "action": "Invoice Paid"}, "1": {"result": "success"}}'
    assert [step["result"] for step in interpret("add_instance", 200, accepted)] == ["success", "success"]
