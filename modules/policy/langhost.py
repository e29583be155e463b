"""A language host that only runs Python policy packs: ``pulumi-language-penguinmails-policy``.

Why it exists: the v3.274.1 engine starts a policy pack *directory* through the language host its
``PulumiPolicy.yaml`` names (``RunPlugin``; the old ``pulumi-analyzer-policy-<runtime>`` shim path is gone
from ``pkg/v3/resource/plugin``). Our ``pulumi-language-python`` is the v3.68.0 host (README "Engine"):
its ``RunPlugin`` runs ``python <request.program>``, a field the current engine no longer sets (it sends
``info`` instead), so ``runtime: python`` packs die at once with "could not read plugin: EOF". Our pack
declares ``runtime: penguinmails-policy`` instead, and this host answers the engine for that runtime: it
runs ``python -u -m pulumi.policy <engine> <pack dir>`` (what the SDK's own analyzer shim ran) with the
engine's environment and streams the analyzer's stdout/stderr back, so the engine reads its port and logs.
It implements nothing else: programs still run through ``pulumi-language-python``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent import futures

import grpc
from pulumi.runtime.proto import language_pb2, language_pb2_grpc, plugin_pb2

VERSION = "0.1.0"
RUNTIME = "penguinmails-policy"


class PolicyLanguageHost(language_pb2_grpc.LanguageRuntimeServicer):
    """The ``LanguageRuntime`` calls the engine makes to boot a policy pack (the rest stay unimplemented)."""

    def Handshake(self, request, context):
        return language_pb2.LanguageHandshakeResponse()

    def GetPluginInfo(self, request, context):
        return plugin_pb2.PluginInfo(version=VERSION)

    def RunPlugin(self, request, context):
        if request.kind and request.kind != "analyzer":
            context.abort(
                grpc.StatusCode.UNIMPLEMENTED, f"{RUNTIME} runs policy packs only, not {request.kind}"
            )
        pack_dir = request.info.program_directory or request.program
        env = dict(item.split("=", 1) for item in request.env if "=" in item)
        process = subprocess.Popen(
            [sys.executable, "-u", "-m", "pulumi.policy", *request.args, pack_dir],
            cwd=pack_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # The engine cancels the call when it is done with the analyzer: stop the pack with it.
        context.add_callback(process.terminate)
        chunks: list[language_pb2.RunPluginResponse] = []
        ready = threading.Condition()

        def pump(stream, field: str) -> None:
            for line in iter(stream.readline, b""):
                with ready:
                    chunks.append(language_pb2.RunPluginResponse(**{field: line}))
                    ready.notify()
            stream.close()

        pumps = [
            threading.Thread(target=pump, args=(process.stdout, "stdout"), daemon=True),
            threading.Thread(target=pump, args=(process.stderr, "stderr"), daemon=True),
        ]
        for thread in pumps:
            thread.start()
        while True:
            with ready:
                ready.wait_for(lambda: chunks or not any(t.is_alive() for t in pumps), timeout=1)
                pending, chunks[:] = list(chunks), []
            yield from pending
            if not pending and not any(t.is_alive() for t in pumps):
                break
        yield language_pb2.RunPluginResponse(exitcode=process.wait())


def serve() -> None:
    """Serve on a loopback port and announce it on stdout, as every plugin does."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(PolicyLanguageHost(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:  # the engine interrupts its plugins when the operation ends
        server.stop(0)


if __name__ == "__main__":
    serve()
