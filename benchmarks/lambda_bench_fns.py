"""A handler for benchmarks/test_bench_lambda.py (imported by LocalLambda environments)."""

from __future__ import annotations

import os
from typing import Any

import pocketlib
import pocketlib.serverless as pls

_blobs: dict[int, bytes] = {}


@pls.handler
def result_of(event: Any, context: Any, job: pocketlib.Job) -> bytes:
    """A result of event['mb'] MB, made once per environment (the benchmark times moving it)."""
    mb = int(event["mb"])
    if mb not in _blobs:
        _blobs[mb] = os.urandom(mb << 20)
    return _blobs[mb]
