"""The DNS subsystem's branch of the toolkit's exception family."""

from __future__ import annotations

from modules.errors import ToolkitError, ValidationError


class DnsError(ToolkitError):
    """A DNS server could not be reached or refused what we asked."""


class DnsUnreachable(DnsError):
    """No answer from the server (timeout, connection refused)."""


class DnsAuthError(DnsError):
    """The server refused our TSIG key (unknown name, wrong secret, clock skew) or refused us outright."""

    exit_code = 3


class DnsZoneNotServed(DnsError):
    """The server is not authoritative for the zone (NOTAUTH/REFUSED for a transfer or an update)."""


class DnsUpdateFailed(DnsError):
    """The server answered an RFC 2136 update with an error code."""


class DnsConcurrentChange(DnsUpdateFailed):
    """A prerequisite failed: the zone changed between our read and our update."""


class DnsConflict(DnsError):
    """A record we would create is already there and is not ours (takeover is opt-in)."""


class DnsSafetyError(DnsError):
    """The run would change or delete more of the zone than its configured share allows."""

    exit_code = 4


class DnsValidationError(ValidationError):
    """Records that fail validation; every reason names the domain and the record."""
