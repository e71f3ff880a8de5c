"""The one exception tree of pocketlib.

Every error a user can see is a :class:`PocketError`. Errors raised by a storage node travel
over the wire as a status code and are raised again on the client as the same class, so
``except pocketlib.NotFoundError`` works the same in-process and across the network::

    PocketError
    ├── ConfigError            bad sizes, addresses, options
    ├── ProtocolError          malformed or unexpected frames
    │   └── VersionError       peer speaks another protocol version
    ├── ChecksumError          a value's checksum does not match: never returned as data
    ├── RequestError           the request itself is invalid
    │   ├── InvalidKeyError    empty, too long, or not UTF-8
    │   ├── ConflictError      the object changed under a streaming read
    │   └── DrainingError      the node takes no new data: it is being drained
    ├── NotFoundError          no such key (also a KeyError)
    ├── StaleTicketError       the handle's weight maps are older than the node's: refresh
    ├── CapacityError          the tier is full; nothing was evicted
    ├── AccessError            job authentication failed
    │   ├── UnknownJobError    the node does not know this job
    │   └── TokenError         the job token is missing or wrong
    └── TransportError         the node could not be reached or the link broke
        ├── ConnectError       could not connect
        ├── NodeLostError      the node holding the key was lost (with its data)
        └── PocketTimeoutError an operation exceeded its timeout (also builtin TimeoutError)
    ServerError                the node failed while serving (a bug or OS error there)
"""

from __future__ import annotations

__all__ = [
    "AccessError",
    "CapacityError",
    "ChecksumError",
    "ConfigError",
    "ConflictError",
    "ConnectError",
    "DrainingError",
    "InvalidKeyError",
    "NodeLostError",
    "NotFoundError",
    "PocketError",
    "ProtocolError",
    "RequestError",
    "ServerError",
    "StaleTicketError",
    "TokenError",
    "TransportError",
    "PocketTimeoutError",
    "UnknownJobError",
    "VersionError",
    "error_for_status",
    "status_for_error",
]


class PocketError(Exception):
    """Base class of every pocketlib error."""

    status: int = 1


class ConfigError(PocketError, ValueError):
    """A size, address or option is invalid."""

    status = 2


class ProtocolError(PocketError):
    """A frame was malformed, truncated or unexpected."""

    status = 3


class VersionError(ProtocolError):
    """The peer speaks a protocol version this side does not."""

    status = 4


class ChecksumError(PocketError):
    """A value's checksum did not match: the bytes are never handed out as data."""

    status = 5


class RequestError(PocketError, ValueError):
    """The request is invalid (bad arguments)."""

    status = 6


class InvalidKeyError(RequestError):
    """A key is empty, longer than the limit, or not valid UTF-8."""

    status = 7


class ConflictError(RequestError):
    """The object was overwritten or deleted during a multi-request read."""

    status = 8


class DrainingError(RequestError):
    """The node is being drained: it serves reads and deletes but takes no new data.

    A client with a ticket refreshes it from the controller and writes to the job's newest
    weight map, which no longer names the node.
    """

    status = 19


class NotFoundError(PocketError, KeyError):
    """No object has this key."""

    status = 9

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else "not found"


class StaleTicketError(PocketError):
    """The handle's ticket is older than a weight-map version the node has learnt.

    A node fences writes (and answers a read that misses) from a handle whose ticket predates
    the job's newest weight map, because the key may live where only the newer map sends it.
    A handle with a controller refreshes its ticket and repeats the operation by itself; this
    reaches the caller only when no newer ticket can be had (the controller is unreachable).
    """

    status = 20


class CapacityError(PocketError):
    """The tier has no room for the value; nothing stored was evicted to make room.

    ``node`` is the address of the node that refused, where the client knows it."""

    status = 10
    node: str | None = None


class AccessError(PocketError):
    """The job could not be authenticated."""

    status = 11


class UnknownJobError(AccessError):
    """The node does not know this job (never opened, or already deleted)."""

    status = 12


class TokenError(AccessError):
    """The job token is missing or does not match the job."""

    status = 13


class TransportError(PocketError):
    """The node could not be reached, or the connection broke mid-request."""

    status = 14


class ConnectError(TransportError, ConnectionError):
    """A connection to the node could not be established."""

    status = 15


class PocketTimeoutError(TransportError, TimeoutError):
    """An operation did not finish within its timeout."""

    status = 16


class NodeLostError(TransportError):
    """The node that held the key is gone: the controller found it dead, and its data with it.

    The rest of the job keeps working; writes go to the nodes that replaced it.
    """

    status = 18


class ServerError(PocketError):
    """The node failed while serving the request (a bug or an OS error on the node)."""

    status = 17


_BY_STATUS: dict[int, type[PocketError]] = {
    cls.status: cls
    for cls in (
        PocketError,
        ConfigError,
        ProtocolError,
        VersionError,
        ChecksumError,
        RequestError,
        InvalidKeyError,
        ConflictError,
        DrainingError,
        NotFoundError,
        StaleTicketError,
        CapacityError,
        AccessError,
        UnknownJobError,
        TokenError,
        TransportError,
        ConnectError,
        PocketTimeoutError,
        NodeLostError,
        ServerError,
    )
}


def error_for_status(status: int, message: str) -> PocketError:
    """Build the exception a node's error status stands for."""
    return _BY_STATUS.get(status, ServerError)(message)


def status_for_error(exc: BaseException) -> int:
    """The wire status of an exception raised while serving a request."""
    if isinstance(exc, PocketError):
        return exc.status
    return ServerError.status
