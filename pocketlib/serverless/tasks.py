"""The executor's tasks, as they run in a worker (a local process, a Lambda invocation, a
Lithops call): one call of a function (``_run``), a shuffle's mapper (``_map_task``) and
reducer (``_reduce_task``), each with its function unpickled and its job attached once per
worker. :class:`~pocketlib.serverless.executor.FunctionExecutor` submits them; the Lambda
backend's handler (:func:`pocketlib.serverless.lambda_backend.handle`) runs them by name.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .refs import offload, resolve

if TYPE_CHECKING:
    from ..client.job import Job

_worker_funcs: dict[bytes, Callable[..., Any]] = {}


def _function(blob: tuple[bytes, bytes] | tuple[bytes, bytes, bool]) -> Callable[..., Any]:
    """The function of ``blob`` (an id and its pickle), unpickled once per worker."""
    func = _worker_funcs.get(blob[0])
    if func is None:
        if len(_worker_funcs) >= 64:
            _worker_funcs.clear()
        func = _worker_funcs[blob[0]] = pickle.loads(blob[1])  # (pickled by our driver)
    return func


def _attach(ticket: str) -> Job:
    """The job of ``ticket``, attached once per worker."""
    from ..client.client import attached

    return attached(ticket)


def _map_task(blob: tuple[bytes, bytes, bool], payload: dict[str, Any], ticket: str,
              shuffle: str, mapper: int, reducers: int,
              partition: Callable[..., Any] | None = None,
              mode: bool | tuple[str, Any] = False) -> int:  # fmt: skip
    """A mapper: its records partitioned and published, one object per reducer (``mode``:
    records, raw parts when True, or ``("arrow", by)``: a table shuffled by its key columns)."""
    from .shuffle import ShuffleWriter

    job = _attach(ticket)
    payload = resolve(payload, job)
    kwargs = dict(payload["kwargs"], **({"job": job} if blob[2] else {}))
    records = _function(blob)(*payload["args"], **kwargs)
    if isinstance(mode, tuple):
        from ..arrow.shuffle import shuffle_write

        if not _is_table(records):
            raise ConfigError(f"with by=..., a mapper returns a pyarrow Table, not "
                              f"{type(records).__name__}")  # fmt: skip
        shuffle_write(job, shuffle, mapper, records, by=mode[1], partitions=reducers,
                      partitioner=partition)  # fmt: skip
        return mapper
    if _is_table(records):
        raise ConfigError("a mapper returned a pyarrow Table: name its key column(s) with by=")
    with ShuffleWriter(job, shuffle, mapper, reducers) as out:
        if mode:
            parts = list(records)
            if len(parts) != reducers:
                raise ConfigError(f"a raw mapper returns {reducers} parts, not {len(parts)}")
            for r, part in enumerate(parts):
                out.write(r, part)
        elif partition is None:
            out.write_records(records)
        else:
            out.write_records(records, partition)
    return mapper


def _is_table(value: Any) -> bool:
    """Whether ``value`` is a pyarrow Table (without importing pyarrow if it is not loaded)."""
    pa = sys.modules.get("pyarrow")
    return pa is not None and isinstance(value, pa.Table)


def _reduce_task(blob: tuple[bytes, bytes, bool], ticket: str, shuffle: str, reducer: int,
                 mappers: int, timeout: float | None, threshold: int,
                 mode: bool | tuple[str, Any] = False) -> Any:  # fmt: skip
    """A reducer: its partition from every mapper (waited for on the nodes), reduced."""
    from .shuffle import ShuffleReader

    job = _attach(ticket)
    records: Any
    if isinstance(mode, tuple):
        from ..arrow.shuffle import shuffle_read

        records = shuffle_read(job, shuffle, reducer, mappers=mappers, timeout=timeout)
    else:
        reader = ShuffleReader(job, shuffle, reducer, mappers)
        records = reader.read(timeout=timeout) if mode else reader.read_records(timeout=timeout)
    result = _function(blob)(records, **({"job": job} if blob[2] else {}))
    del records  # (a table over the node's memory: its space is freed with it)
    return offload(result, job, threshold=threshold, pickled=True)


def _run(blob: tuple[bytes, bytes], payload: dict[str, Any], ticket: str | None,
         wants_job: bool, threshold: int) -> Any:  # fmt: skip
    """One call, in a worker process: the function unpickled and the job attached once per
    worker."""
    func = _function(blob)
    job = None
    if ticket is not None:
        job = _attach(ticket)
        payload = resolve(payload, job)
    kwargs = dict(payload["kwargs"])
    if wants_job:
        kwargs["job"] = job
    result = func(*payload["args"], **kwargs)
    if job is not None:
        result = offload(result, job, threshold=threshold, pickled=True)
    return result
