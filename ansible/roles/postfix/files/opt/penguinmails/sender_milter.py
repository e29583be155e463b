#!/usr/bin/python3
"""Sender milter: refuse authenticated mail whose From: or Sender: the SASL login may not use.

Postfix checks only the envelope sender against ``smtpd_sender_login_maps``; OpenDKIM signs whatever
From: domain it has a key for. This milter runs before OpenDKIM and reads the same Postfix table, so a
tenant's login can neither put another tenant's domain in From:/Sender: nor get it signed. Mail without
a login (port 25) passes untouched: OpenDKIM signs only authenticated or local mail.

Strict on purpose: one From: with one mailbox, at most one Sender:, no parse defects, and no address of
a domain the login may not use anywhere in those headers (display names and comments included, also
after RFC 2047 decoding), so no parser further down can read a different sender than the one checked.

Runs with Debian's python3 and python3-milter; the checks are plain functions (unit-tested without it).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import threading
from email import policy
from email.header import decode_header, make_header

CHECKED = ("from", "sender")
# Anything that looks like local@domain, wherever it appears in a header value.
ADDRESS_LIKE = re.compile(r"@\s*([A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+)\.?")

log = logging.getLogger("sender-milter")


def parse_table(text: str) -> dict[str, frozenset[str]]:
    """A Postfix ``texthash`` table of ``smtpd_sender_login_maps``: key (address or @domain) → logins."""
    table: dict[str, frozenset[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        owners = frozenset(o.lower() for o in re.split(r"[\s,]+", value.strip()) if o)
        table[key.lower()] = owners
    return table


def owns(table: dict[str, frozenset[str]], login: str, address: str) -> bool:
    """Whether ``login`` may use ``address``: the lookup order of smtpd_sender_login_maps."""
    address = address.lower().rstrip(".")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return False
    owners = table.get(address)
    if owners is None:
        owners = table.get("@" + domain, frozenset())
    return login.lower() in owners


def _decoded(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # an undecodable encoded word: the raw text is all there is to check
        return value


def check(table: dict[str, frozenset[str]], login: str, headers: list[tuple[str, str]]) -> str | None:
    """Why the message must be refused, or None. ``headers``: (name, value) of every header field."""
    if not login:
        return None
    fields = {name: [v for n, v in headers if n.lower() == name] for name in CHECKED}
    if len(fields["from"]) != 1:
        return "exactly one From: header is required"
    if len(fields["sender"]) > 1:
        return "at most one Sender: header is allowed"
    for name in CHECKED:
        for value in fields[name]:
            label = "From" if name == "from" else "Sender"
            try:
                parsed = policy.default.header_factory(label, value)
                mailboxes = list(parsed.addresses)
            except Exception:  # the parser gave up: nothing to trust in this header
                parsed, mailboxes = None, []
            if parsed is None or parsed.defects or len(mailboxes) != 1 or not mailboxes[0].domain:
                return f"{label}: must hold exactly one well-formed address"
            address = mailboxes[0].addr_spec
            if not owns(table, login, address):
                return f"{label}: {address} is not an address {login} may send as"
            for text in (value, _decoded(value)):
                for domain in ADDRESS_LIKE.findall(text):
                    if not owns(table, login, f"x@{domain}"):
                        return f"{label}: names {domain}, which {login} may not send as"
    return None


class Table:
    """The sender table, read again when its file changes; unreadable means refuse to decide."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._table: dict[str, frozenset[str]] = {}

    def get(self) -> dict[str, frozenset[str]]:
        info = os.stat(self.path)
        stamp = (info.st_mtime, info.st_size)
        with self._lock:
            if stamp != self._stamp:
                with open(self.path, encoding="utf-8") as handle:
                    self._table = parse_table(handle.read())
                self._stamp = stamp
                log.info("loaded %s: %d entries", self.path, len(self._table))
            return self._table


def serve(socket: str, table: Table, timeout: int) -> None:
    import Milter  # python3-milter, present on the mail host only

    class SenderMilter(Milter.Base):
        def __init__(self):
            self.login = ""
            self.headers: list[tuple[str, str]] = []

        def envfrom(self, mailfrom, *params):
            self.login = (self.getsymval("{auth_authen}") or "").strip().lower()
            self.headers = []
            return Milter.CONTINUE

        def header(self, name, value):
            if name.lower() in CHECKED:
                self.headers.append((name, value))
            return Milter.CONTINUE

        def eoh(self):
            if not self.login:
                return Milter.ACCEPT
            try:
                reason = check(table.get(), self.login, self.headers)
            except OSError as exc:
                log.error("cannot read %s: %s", table.path, exc)
                self.setreply("451", "4.3.0", "sender check unavailable, try again later")
                return Milter.TEMPFAIL
            if reason:
                log.warning("refused mail of %s: %s", self.login, reason)
                self.setreply("550", "5.7.1", f"Sender rejected: {reason}")
                return Milter.REJECT
            return Milter.ACCEPT

    Milter.factory = SenderMilter
    Milter.set_flags(0)
    log.info("listening on %s", socket)
    Milter.runmilter("penguinmails-sender", socket, timeout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="e.g. inet:8893@127.0.0.1")
    parser.add_argument("--table", required=True, help="the smtpd_sender_login_maps texthash file")
    parser.add_argument("--log-file", required=True)
    parser.add_argument("--timeout", type=int, default=60)
    args = parser.parse_args()
    logging.basicConfig(
        filename=args.log_file, level=logging.INFO, format="%(asctime)s %(name)s: %(levelname)s %(message)s"
    )
    table = Table(args.table)
    table.get()  # fail at start, not on the first message, when the table is missing
    serve(args.socket, table, args.timeout)


if __name__ == "__main__":
    main()
