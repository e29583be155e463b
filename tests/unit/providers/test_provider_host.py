"""The provider host: one-line errors for expected failures, tracebacks for bugs or when asked."""

from __future__ import annotations

import grpc
import psycopg
import pytest

from modules.errors import PartialFailure, ToolkitError
from modules.hostwinds.client import HostwindsError
from modules.provider_host import Servicer, error_text, verbose, workers


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    "exc",
    [
        HostwindsError("Vps[x]: Hostwinds refused the order, nothing was ordered: bad plan"),
        ToolkitError("Tier[oltp]: cannot connect to 10.0.0.5:5432; check postgres.oltp.url"),
        ConnectionRefusedError(111, "Connection refused"),
        psycopg.OperationalError("connection failed: server closed the connection"),
    ],
)
def test_expected_failures_are_one_or_two_lines_without_a_traceback(exc):
    text = error_text(_raised(exc), with_traceback=False)
    assert "Traceback" not in text and len(text.splitlines()) <= 2, text
    assert str(exc.args[-1] if not isinstance(exc, ToolkitError) else exc.message).split(":")[0] in text


def test_bugs_keep_their_traceback_and_verbose_adds_one_to_expected_failures():
    bug = error_text(_raised(KeyError("label")), with_traceback=False)
    assert bug.startswith("Traceback") and "KeyError" in bug
    loud = error_text(_raised(HostwindsError("Vps[x]: refused")), with_traceback=True)
    assert loud.startswith("Vps[x]: refused") and "Traceback" in loud


def test_verbose_follows_the_engine_flag_and_the_variable(monkeypatch):
    monkeypatch.delenv("PENGUINMAILS_TRACEBACKS", raising=False)
    assert verbose(["127.0.0.1:1234"]) is False and verbose(["-v=0"]) is False
    assert verbose(["--logtostderr", "-v=9", "127.0.0.1:1"]) is True
    monkeypatch.setenv("PENGUINMAILS_TRACEBACKS", "1")
    assert verbose([]) is True
    monkeypatch.setenv("PENGUINMAILS_PROVIDER_WORKERS", "2")
    assert workers() == 4  # never below the SDK host's 4
    monkeypatch.setenv("PENGUINMAILS_PROVIDER_WORKERS", "64")
    assert workers() == 64


class _Aborted(Exception):
    pass


class _Context:
    def __init__(self):
        self.status = None

    def abort_with_status(self, status):
        self.status = status
        raise _Aborted

    def abort(self, code, details):
        self.status = (code, details)
        raise _Aborted


def test_a_partial_failure_is_sent_as_an_init_failure_with_the_state_to_record():
    from google.rpc import status_pb2
    from pulumi.runtime import proto

    context = _Context()
    failure = PartialFailure(
        "Vps[x]: no instance labelled 'x' appeared", "x", {"label": "x", "order_pending": True}
    )
    with pytest.raises(_Aborted):
        Servicer()._fail(context, failure, provider_key="blob")
    code, details, metadata = context.status
    assert code == grpc.StatusCode.UNKNOWN and details.startswith("Vps[x]: no instance")
    status = status_pb2.Status.FromString(dict(metadata)["grpc-status-details-bin"])
    detail = proto.ErrorResourceInitFailed()
    assert status.details[0].Unpack(detail)
    assert detail.id == "x" and detail.properties["order_pending"] is True
    assert detail.properties["__provider"] == "blob" and list(detail.reasons) == [details]

    plain = _Context()
    with pytest.raises(_Aborted):
        Servicer()._fail(plain, HostwindsError("Vps[x]: refused"), provider_key="blob")
    assert plain.status == (grpc.StatusCode.UNKNOWN, "Vps[x]: refused")
