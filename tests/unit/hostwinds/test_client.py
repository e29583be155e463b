"""The client's pure parts: how answers become data or typed errors, and what is kept secret."""

from __future__ import annotations

import json

import pytest

from modules.errors import ToolkitError
from modules.hostwinds.client import (
    IDEMPOTENT_ACTIONS,
    HostwindsClient,
    HostwindsError,
    HostwindsInvalidRequest,
    HostwindsNotFound,
    HostwindsTransient,
    HostwindsUnauthorized,
    as_int,
    as_list,
    exact_label_matches,
    interpret,
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
