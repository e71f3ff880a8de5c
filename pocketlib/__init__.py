"""pocketlib: elastic ephemeral storage for serverless analytics.

Start a node (``pocket node --tier dram --capacity 1GiB``) and connect to it::

    import pocketlib

    with pocketlib.connect(["127.0.0.1:7000"], job="sort") as job:
        job.put("map-0/part-3", data)
        data = job.get("map-0/part-3", delete_after_read=True)
"""

from .client.client import Client, Job, ObjectInfo, attach, connect
from .client.streams import ObjectReader, ObjectWriter
from .config import (
    Address,
    JobHints,
    Timeouts,
    format_rate,
    format_size,
    parse_size,
    parse_throughput,
)
from .control.cluster import LocalCluster
from .errors import (
    AccessError,
    CapacityError,
    ChecksumError,
    ConfigError,
    ConflictError,
    ConnectError,
    DrainingError,
    InvalidKeyError,
    NodeLostError,
    NotFoundError,
    PocketError,
    PocketTimeoutError,
    ProtocolError,
    RequestError,
    ServerError,
    StaleTicketError,
    TokenError,
    TransportError,
    UnknownJobError,
    VersionError,
)
from .ticket import Ticket
from .version import __version__

__all__ = [
    "AccessError",
    "Address",
    "CapacityError",
    "ChecksumError",
    "Client",
    "ConfigError",
    "ConflictError",
    "ConnectError",
    "DrainingError",
    "InvalidKeyError",
    "Job",
    "JobHints",
    "LocalCluster",
    "NodeLostError",
    "NotFoundError",
    "ObjectInfo",
    "ObjectReader",
    "ObjectWriter",
    "PocketError",
    "PocketTimeoutError",
    "ProtocolError",
    "RequestError",
    "ServerError",
    "StaleTicketError",
    "Ticket",
    "Timeouts",
    "TokenError",
    "TransportError",
    "UnknownJobError",
    "VersionError",
    "__version__",
    "attach",
    "connect",
    "format_rate",
    "format_size",
    "parse_size",
    "parse_throughput",
]
