"""The one error tree. Each boundary translates it once, by table:
HTTP status in control/api, exit code in the CLI, close + access-log reason in the proxy.

Messages are written for the person who made the mistake: they name the offending
field or value and, where it helps, what to do next.
"""

from __future__ import annotations


class TetherError(Exception):
    """Base of every error Tether raises on purpose."""

    #: True when the same call may succeed if simply tried again later.
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(TetherError):
    """The caller sent something malformed or out of range (HTTP 400, exit 2)."""


class NotFound(TetherError):
    """The named object does not exist (HTTP 404)."""


class Conflict(TetherError):
    """The object exists already, or a compare-and-set precondition failed (HTTP 409)."""


class TooLarge(TetherError):
    """A value exceeds a documented size limit (HTTP 413)."""


class PermissionDenied(TetherError):
    """The caller may not do this (HTTP 403)."""


class AclDisabled(PermissionDenied):
    """An ACL management call on a server with ACLs off (HTTP 401, as Consul answers)."""


class RateLimited(TetherError):
    """Too many requests; retry after `retry_after` seconds (HTTP 429 + Retry-After)."""

    retryable = True

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(TetherError, ConnectionError):
    """A dependency (the server, the store) could not be reached (HTTP 503).

    Also a ConnectionError so generic network handlers keep working.
    """

    retryable = True


class NoPathToDatacenter(TetherError):
    """A request for a datacenter this cluster does not know (HTTP 500, Consul's
    `No path to datacenter`: clients recognise that text)."""

    def __init__(self, datacenter: str) -> None:
        super().__init__("No path to datacenter")
        self.datacenter = datacenter
