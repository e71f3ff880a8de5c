"""pocketlib for serverless functions: a Lambda handler decorator and payloads by reference.

``import pocketlib`` does not import this package; nothing here imports boto3, lithops or
awslambdaric at import time. See docs/serverless.md.

>>> import pocketlib.serverless as pls
>>> @pls.handler
... def handle(event, context, job):
...     job.put("out", job.get("in"))
"""

from __future__ import annotations

from .context import ASYNC_PAYLOAD_LIMIT, SYNC_PAYLOAD_LIMIT, in_lambda, payload_limit
from .decorator import handler, is_cold_start
from .executor import ALL_COMPLETED, ALWAYS, ANY_COMPLETED, FunctionExecutor
from .invocation import Invocation, LambdaError
from .refs import REF_KEY, is_ref, offload, resolve
from .runtime import LocalLambda
from .shuffle import (
    RangePartitioner,
    ShuffleAbortedError,
    ShuffleReader,
    ShuffleWriter,
    partition_of,
)

__all__ = [
    "ALL_COMPLETED",
    "ALWAYS",
    "ANY_COMPLETED",
    "ASYNC_PAYLOAD_LIMIT",
    "FunctionExecutor",
    "Invocation",
    "LambdaError",
    "LocalLambda",
    "RangePartitioner",
    "ShuffleAbortedError",
    "REF_KEY",
    "SYNC_PAYLOAD_LIMIT",
    "ShuffleReader",
    "ShuffleWriter",
    "handler",
    "in_lambda",
    "is_cold_start",
    "is_ref",
    "offload",
    "partition_of",
    "payload_limit",
    "resolve",
]
