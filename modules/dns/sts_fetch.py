"""Fetch an MTA-STS policy the way a sending MTA does (RFC 8461 3.3), from an address we resolved ourselves.

The policy host's address comes from the stack's own resolvers (the caller's lookup), not the system
resolver; the TLS connection goes to that address with SNI ``mta-sts.<domain>`` and validates the chain
and the name against the given CA bundle (none: the system trust store). HTTPS only, TLS 1.2 or newer,
no redirects followed, ``text/plain`` only, at most :data:`MAX_POLICY_BYTES`, every step time-bounded.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modules.dns.errors import DnsError

if TYPE_CHECKING:
    from modules.config.model import StackConfig

DEV_CA_FILE_VARIABLE = "PENGUINMAILS_DEV_CA_FILE"
WELL_KNOWN_PATH = "/.well-known/mta-sts.txt"
MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 3.3 suggests senders accept up to 64 KiB


class PolicyFetchError(DnsError):
    """The policy could not be fetched as a sender would; the message says which step failed and why."""


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``host`` (SNI, certificate name, Host header) at a given address instead of a resolved one."""

    def __init__(self, host: str, address: str, port: int, context: ssl.SSLContext, timeout: float):
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


@dataclass(frozen=True)
class PolicyFetcher:
    """How to reach policy hosts: the CA bundle that validates them, the port and the time limit."""

    ca_file: str | None = None  # None: the system trust store
    port: int = 443
    timeout: float = 5.0  # seconds, for the whole fetch
    max_bytes: int = MAX_POLICY_BYTES

    def context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise PolicyFetchError(f"cannot read the CA bundle {self.ca_file}: {exc}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def url(self, host: str) -> str:
        port = "" if self.port == 443 else f":{self.port}"
        return f"https://{host}{port}{WELL_KNOWN_PATH}"

    def fetch(self, host: str, address: str) -> str:
        """The policy text served by ``address`` for ``host``; :class:`PolicyFetchError` says why not."""
        where = f"{self.url(host)} at {address}"
        deadline = time.monotonic() + self.timeout
        connection = _PinnedHTTPSConnection(host, address, self.port, self.context(), self.timeout)
        try:
            connection.request(
                "GET", WELL_KNOWN_PATH, headers={"Accept": "text/plain", "Connection": "close"}
            )
            response = connection.getresponse()
            if 300 <= response.status < 400:
                target = response.getheader("Location", "?")
                raise PolicyFetchError(
                    f"{where}: answered {response.status} redirect to {target}; senders do not follow "
                    "redirects (RFC 8461 3.3)"
                )
            if response.status != 200:
                raise PolicyFetchError(f"{where}: answered HTTP {response.status} {response.reason}")
            media_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
            if media_type != "text/plain":
                raise PolicyFetchError(f"{where}: Content-Type is {media_type or 'missing'}, not text/plain")
            body = b""
            while len(body) <= self.max_bytes:
                if time.monotonic() > deadline:
                    raise PolicyFetchError(f"{where}: took longer than {self.timeout:g} s")
                chunk = response.read(min(8192, self.max_bytes + 1 - len(body)))
                if not chunk:
                    break
                body += chunk
            if len(body) > self.max_bytes:
                raise PolicyFetchError(f"{where}: the policy is larger than {self.max_bytes} bytes")
        except ssl.SSLCertVerificationError as exc:
            raise PolicyFetchError(
                f"{where}: the certificate is not valid for {host}: {exc.verify_message or exc.reason}"
            ) from None
        except ssl.SSLError as exc:
            raise PolicyFetchError(f"{where}: TLS failed: {exc.reason or exc}") from None
        except TimeoutError:
            raise PolicyFetchError(f"{where}: no answer within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise PolicyFetchError(f"{where}: {type(exc).__name__}: {exc}") from None
        finally:
            connection.close()
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyFetchError(f"{where}: the policy is not UTF-8 text") from None


def ca_file_for(config: StackConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The CA bundle that validates a stack's policy hosts; None means the system trust store.

    A dev stack takes the devenv's ``PENGUINMAILS_DEV_CA_FILE`` first, then ``mail.mta_sts_ca_file``;
    staging and production never read a devenv variable (the rule of ``modules.providers``).
    """
    environ = os.environ if environ is None else environ
    if config.environment == "dev" and environ.get(DEV_CA_FILE_VARIABLE):
        return environ[DEV_CA_FILE_VARIABLE]
    return config.mail.mta_sts_ca_file
