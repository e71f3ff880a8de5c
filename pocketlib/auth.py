"""Tokens: the one place they are made and checked.

A job's token is ``HMAC-SHA256(secret, "job" NUL job)`` cut to 16 bytes. Every node that shares
the cluster secret checks it without asking anyone; only holders of the secret (the controller,
or a node in direct mode) can make one. Node tokens (``"node" NUL name``) let a node prove to
the controller that it belongs to the cluster. The NUL separates the two domains, so no job
name yields a node's token.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["TOKEN_BYTES", "job_token", "node_token", "verify"]

#: Token length on the wire: 128 bits is beyond guessing and keeps frame headers short.
TOKEN_BYTES = 16


def _sign(secret: bytes, domain: bytes, name: str) -> bytes:
    return hmac.new(secret, domain + b"\0" + name.encode(), hashlib.sha256).digest()[:TOKEN_BYTES]


def job_token(secret: bytes, job: str) -> bytes:
    """The token that authenticates ``job`` on every node sharing ``secret``."""
    return _sign(secret, b"job", job)


def node_token(secret: bytes, name: str) -> bytes:
    """The token a node named ``name`` presents to the controller."""
    return _sign(secret, b"node", name)


def verify(token: bytes, expected: bytes) -> bool:
    """Whether ``token`` equals ``expected``, in constant time."""
    return hmac.compare_digest(token, expected)
