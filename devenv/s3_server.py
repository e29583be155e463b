"""moto's S3 server as the devenv runs it: HTTP/1.1 keep-alive and a clean TLS close.

``moto_server`` answers HTTP/1.0-style (``Connection: close``) and closes the TLS socket without a
close_notify; pgBackRest (OpenSSL 3) reads that as "unexpected eof while reading" and fails. Here the same
moto application runs with an HTTP/1.1 handler that keeps connections open and sends close_notify when it
does close one.
"""

from __future__ import annotations

import argparse
import os
import ssl

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


class KeepAliveHandler(MotoRequestHandler):
    protocol_version = "HTTP/1.1"

    def finish(self) -> None:
        super().finish()
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.settimeout(1.0)
                self.connection.unwrap()
            except (OSError, ValueError):
                pass  # the peer went first; nothing more to say


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ssl-cert", required=True)
    parser.add_argument("--ssl-key", required=True)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        app,
        threaded=True,
        ssl_context=(args.ssl_cert, args.ssl_key),
        request_handler=KeepAliveHandler,
    )


if __name__ == "__main__":
    main()
