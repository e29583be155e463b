"""The host process of every Python dynamic resource: the ``pulumi.dynamic`` protocol, served our way.

The SDK's host (``python -m pulumi.dynamic``) answers at most four calls at once, turns every exception
into a Python traceback, and cannot record a resource that was created but failed to initialise. All
three hurt a fleet: 200 nodes wait four at a time, an expected failure prints a page of stack frames per
node, and a server bought by an order whose create then timed out is forgotten. This host speaks the
same protocol (the provider object travels pickled in the ``__provider`` property) and differs in:

* **workers**: ``PENGUINMAILS_PROVIDER_WORKERS`` threads (default 256), so every node's create, wait and
  delete runs at once; the engine itself runs resource operations unbounded by default;
* **errors**: a :class:`~modules.errors.ToolkitError` (and the usual client-library failures: network,
  PostgreSQL, Redis, DNS, SSH) is answered with its message alone, one or two lines naming the resource
  and what to do; the traceback is added only with verbose logging (``pulumi -v=N`` passes ``-v=N`` to
  plugins) or ``PENGUINMAILS_TRACEBACKS=1``; any other exception is a bug and keeps its traceback;
* **partial state**: a :class:`~modules.errors.PartialFailure` from ``create`` or ``update`` is sent as
  ``ErrorResourceInitFailed``, so the engine keeps the resource (id and outputs) with an initialization
  error, and the next ``up`` updates it instead of creating it again.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import os
import sys
import threading
import traceback
from concurrent import futures
from typing import Any

import dill
import grpc
from google.protobuf import any_pb2, empty_pb2
from google.rpc import status_pb2
from pulumi.dynamic import Config, ConfigureRequest, ResourceProvider
from pulumi.runtime import Settings, configure, proto, rpc
from pulumi.runtime._grpc_settings import _GRPC_CHANNEL_OPTIONS
from pulumi.runtime._serialization import _deserialize
from pulumi.runtime.proto import provider_pb2_grpc

from modules.errors import PartialFailure, ToolkitError

PROVIDER_KEY = "__provider"
DEFAULT_WORKERS = 256
# Failures of the client libraries the providers use that are expected in operation (a refused
# connection, a failed login, a DNS timeout): shown as one line, like our own errors.
EXPECTED_LIBRARIES = frozenset({"psycopg", "redis", "dns", "paramiko", "ansible_runner", "ssl", "socket"})


def workers() -> int:
    try:
        return max(4, int(os.environ.get("PENGUINMAILS_PROVIDER_WORKERS", DEFAULT_WORKERS)))
    except ValueError:
        return DEFAULT_WORKERS


def verbose(argv: list[str] | None = None) -> bool:
    """True when the engine runs with ``-v=N`` (it passes the flag on to plugins) or tracebacks are asked for."""
    if os.environ.get("PENGUINMAILS_TRACEBACKS", "").lower() in ("1", "true", "yes"):
        return True
    for arg in sys.argv[1:] if argv is None else argv:
        if arg.startswith("-v=") and arg[3:].isdigit() and int(arg[3:]) > 0:
            return True
    return False


def is_expected(exc: BaseException) -> bool:
    if isinstance(exc, ToolkitError | OSError | TimeoutError):
        return True
    return any(cls.__module__.split(".")[0] in EXPECTED_LIBRARIES for cls in type(exc).__mro__)


def error_text(exc: BaseException, with_traceback: bool) -> str:
    """What the engine shows for a failed call: the message, or the traceback for a bug."""
    if isinstance(exc, ToolkitError):
        text = exc.message
    elif is_expected(exc):
        text = f"{type(exc).__name__}: {exc}".strip()
    else:
        return "".join(traceback.format_exception(exc))
    if with_traceback:
        text += "\n" + "".join(traceback.format_exception(exc))
    return text


class _Status(collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status):
    """A gRPC status with rich details (what ``grpc_status.rpc_status.to_status`` builds)."""


def _run(coro: Any) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def _serialize(props: dict[str, Any]) -> Any:
    return _run(rpc.serialize_properties(props, {}))


class Servicer(provider_pb2_grpc.ResourceProviderServicer):
    """The dynamic-provider protocol: each call unpickles (once) the provider named in ``__provider``."""

    def __init__(self, with_traceback: bool = False):
        self._config: dict[str, Any] = {}
        self._providers: dict[str, ResourceProvider] = {}
        self._lock = threading.Lock()
        self._traceback = with_traceback

    # -- plumbing ----------------------------------------------------------------------------------------

    def _provider(self, props: dict[str, Any]) -> ResourceProvider:
        key = props[PROVIDER_KEY]
        provider = self._providers.get(key)
        if provider is not None:
            return provider
        with self._lock:
            provider = self._providers.get(key)
            if provider is None:
                configure(Settings(project=os.environ.get("PULUMI_PROJECT", "project"), stack="stack"))
                # The engine passes back the blob our own program pickled (the dynamic-provider protocol).
                provider = _deserialize(lambda: dill.loads(base64.b64decode(key)))  # noqa: S301
                provider.configure(ConfigureRequest(config=Config(raw_config=self._config, project_name="")))
                self._providers[key] = provider
        return provider

    def _fail(self, context: grpc.ServicerContext, exc: BaseException, provider_key: Any = None) -> None:
        text = error_text(exc, self._traceback)
        if isinstance(exc, PartialFailure) and provider_key is not None and exc.id:
            detail = proto.ErrorResourceInitFailed(
                id=exc.id,
                properties=_serialize({**exc.outs, PROVIDER_KEY: provider_key}),
                reasons=[text],
            )
            packed = any_pb2.Any()
            packed.Pack(detail)
            status = status_pb2.Status(code=grpc.StatusCode.UNKNOWN.value[0], message=text, details=[packed])
            context.abort_with_status(
                _Status(
                    grpc.StatusCode.UNKNOWN,
                    text,
                    (("grpc-status-details-bin", status.SerializeToString()),),
                )
            )
        context.abort(grpc.StatusCode.UNKNOWN, text)

    def _guard(self, context: grpc.ServicerContext, work, provider_key: Any = None):
        try:
            return work()
        except Exception as exc:  # every failure becomes a gRPC status
            self._fail(context, exc, provider_key)

    # -- the protocol ------------------------------------------------------------------------------------

    def Configure(self, request, context):
        config = rpc.deserialize_properties(request.args)
        self._config = {k: rpc.unwrap_rpc_secret(v) for k, v in config.items()}
        return proto.ConfigureResponse(acceptSecrets=False)

    def GetPluginInfo(self, request, context):
        return proto.PluginInfo(version="0.1.0")

    def Cancel(self, request, context):
        return empty_pb2.Empty()

    def Check(self, request, context):
        olds = rpc.deserialize_properties(request.olds, True)
        news = rpc.deserialize_properties(request.news, True)
        source = olds if news.get(PROVIDER_KEY) == rpc.UNKNOWN else news

        def work():
            result = self._provider(source).check(olds, news)
            inputs = dict(result.inputs)
            inputs[PROVIDER_KEY] = news[PROVIDER_KEY]
            failures = [proto.CheckFailure(property=f.property, reason=f.reason) for f in result.failures]
            return proto.CheckResponse(inputs=_serialize(inputs), failures=failures)

        return self._guard(context, work)

    def Diff(self, request, context):
        olds = rpc.deserialize_properties(request.olds, True)
        news = rpc.deserialize_properties(request.news, True)
        source = olds if news.get(PROVIDER_KEY) == rpc.UNKNOWN else news

        def work():
            result = self._provider(source).diff(request.id, olds, news)
            fields: dict[str, Any] = {}
            if result.changes is None:
                fields["changes"] = proto.DiffResponse.DIFF_UNKNOWN
            else:
                fields["changes"] = (
                    proto.DiffResponse.DIFF_SOME if result.changes else proto.DiffResponse.DIFF_NONE
                )
            if result.replaces is not None:
                fields["replaces"] = result.replaces
            if result.delete_before_replace is not None:
                fields["deleteBeforeReplace"] = result.delete_before_replace
            return proto.DiffResponse(**fields)

        return self._guard(context, work)

    def Create(self, request, context):
        props = rpc.deserialize_properties(request.properties)

        def work():
            result = self._provider(props).create(props)
            outs = dict(result.outs or {})
            outs[PROVIDER_KEY] = props[PROVIDER_KEY]
            return proto.CreateResponse(id=result.id, properties=_serialize(outs))

        return self._guard(context, work, props.get(PROVIDER_KEY))

    def Read(self, request, context):
        props = rpc.deserialize_properties(request.properties)
        if not props and request.inputs is not None:
            props = rpc.deserialize_properties(request.inputs)

        def work():
            result = self._provider(props).read(request.id, props)
            outs = dict(result.outs or {})
            outs[PROVIDER_KEY] = props[PROVIDER_KEY]
            fields: dict[str, Any] = {"id": result.id, "properties": _serialize(outs)}
            if result.inputs is not None:
                fields["inputs"] = _serialize({**result.inputs, PROVIDER_KEY: props[PROVIDER_KEY]})
            return proto.ReadResponse(**fields)

        return self._guard(context, work)

    def Update(self, request, context):
        olds = rpc.deserialize_properties(request.olds)
        news = rpc.deserialize_properties(request.news)

        def work():
            result = self._provider(news).update(request.id, olds, news)
            outs = dict(result.outs or {})
            outs[PROVIDER_KEY] = news[PROVIDER_KEY]
            return proto.UpdateResponse(properties=_serialize(outs))

        return self._guard(context, work, news.get(PROVIDER_KEY))

    def Delete(self, request, context):
        props = rpc.deserialize_properties(request.properties)

        def work():
            self._provider(props).delete(request.id, props)
            return empty_pb2.Empty()

        return self._guard(context, work)


def serve() -> None:
    """Start the gRPC server on a free loopback port and announce the port on stdout, as plugins do."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="provider"),
        options=_GRPC_CHANNEL_OPTIONS,
    )
    provider_pb2_grpc.add_ResourceProviderServicer_to_server(Servicer(verbose()), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sys.stdout.buffer.write(f"{port}\n".encode())
    sys.stdout.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop(0)
