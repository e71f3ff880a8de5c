"""The Arrow-table shuffle: mappers split tables by key, reducers get one table each.

``shuffle_write(job, prefix, m, table, by="k", partitions=R)`` splits mapper m's table into R
parts, by a stable hash of the ``by`` column(s) or by key range, and publishes each as one
uncompressed Arrow IPC stream per (mapper, reducer), under the bytes shuffle's keys and with
its conventions (:mod:`pocketlib.serverless.shuffle`): every part is published, an empty one
included (its stream keeps the schema), each stored atomically; a mapper delivered twice
rewrites the same objects. Parts from 256 KiB are written by Arrow straight into the memory
of a node on this host (:meth:`Job.put_filled <pocketlib.client.job.Job.put_filled>`); smaller ones
go in one batched ``put_many``.
``shuffle_read(job, prefix, r, mappers=M)`` waits on the nodes for its M parts (or raises
ShuffleAbortedError if the shuffle was aborted), reads them, by default deleting them as it
does, and concatenates them. When the node is on
this host the table's buffers are the node's shared memory (no copy): the node keeps their
space until the table is freed.

The hash (:func:`key_hash`) is pocketlib's own, documented so that any process, on any host,
in any run, computes the same partitions: SplitMix64 over 64-bit words of each value, in
numpy. Integer, temporal and boolean values hash by their integer value (int32 5 and int64 5
alike), floats by their float64 bits (-0.0 as 0.0, one NaN), strings and binaries by their
bytes (string, large_string and binary alike), dictionaries by their values; nulls hash to 0.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc

from ..errors import (
    ConfigError,
    NotFoundError,
)
from ..serverless.shuffle import RangePartitioner, part_key, publish, wait_for_parts
from .buffers import arrow_buffer

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from ..client.job import Job

__all__ = [
    "hash_partitions",
    "key_hash",
    "range_partitioner",
    "shuffle_read",
    "shuffle_write",
    "split",
]

#: What decides each row's partition: a RangePartitioner over the key column, or a callable
#: ``(table, partitions)`` returning one id in [0, partitions) per row.
Partitioner = RangePartitioner | Callable[[pa.Table, int], Any]

_U = np.uint64
_GAMMA, _M1, _M2 = _U(0x9E3779B97F4A7C15), _U(0xBF58476D1CE4E5B9), _U(0x94D049BB133111EB)
_BYTES_SEED, _COMBINE = _U(0x5851F42D4C957F2D), _U(0x100000001B3)
_S30, _S27, _S31 = _U(30), _U(27), _U(31)
#: Parts from this size are written straight into a co-located node's memory (below, one
#: batched put of them all costs fewer round trips).
_IN_PLACE_MIN = 256 * 1024
#: Readers of more parts than this copy them (one batched get) rather than lease them.
_MAX_LEASES = 64
#: Work on more bytes than this is spread over two threads (Arrow's takes and copies and the
#: checksums release the GIL).
_PARALLEL_MIN = 8 << 20


def _threads(nbytes: int) -> int:
    return 2 if nbytes >= _PARALLEL_MIN and (os.cpu_count() or 1) > 1 else 1


def _mix(z: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """SplitMix64 (Steele et al.): ``z += 0x9E37...; z = (z ^ z>>30) * 0xBF58...; z = (z ^
    z>>27) * 0x94D0...; z ^ z>>31``, wrapping mod 2**64; a new array."""
    z = z + _GAMMA
    t = np.empty_like(z)  # (one scratch array: fresh arrays cost page faults)
    z ^= np.right_shift(z, _S30, out=t)
    z *= _M1
    z ^= np.right_shift(z, _S27, out=t)
    z *= _M2
    z ^= np.right_shift(z, _S31, out=t)
    return z


def _words_hash(offsets: NDArray[np.int64], data: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """The hash of variable-length values (``data[offsets[i]:offsets[i+1]]``): ``h =
    mix(len ^ 0x5851F42D4C957F2D)``, then ``h = mix(h ^ w)`` for each little-endian 8-byte
    word w of the value (the last one zero-padded), one numpy pass per word position."""
    starts = offsets[:-1]
    lengths = offsets[1:] - starts
    h = _mix(lengths.astype(np.uint64) ^ _BYTES_SEED)
    if len(lengths) == 0 or int(lengths.max()) == 0:
        return h
    padded = np.concatenate([data[int(starts.min()) : int(offsets[-1])], np.zeros(8, np.uint8)])
    starts = starts - int(starts.min())
    windows = np.lib.stride_tricks.sliding_window_view(padded, 8)
    for k in range(0, int(lengths.max()), 8):
        rows = np.flatnonzero(lengths > k)
        word = windows[starts[rows] + k].view("<u8").ravel()
        left = np.minimum(lengths[rows] - k, 8).astype(np.uint64)
        partial = left < 8
        word[partial] &= (_U(1) << (left[partial] * _U(8))) - _U(1)
        h[rows] = _mix(h[rows] ^ word)
    return h


def _array_hash(arr: pa.Array) -> NDArray[np.uint64]:
    """The hash of each value of one Arrow array (see the module's docstring)."""
    t = arr.type
    nulls = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    if pa.types.is_dictionary(t):
        values = _array_hash(arr.dictionary)
        indices = arr.indices.fill_null(0).to_numpy()
        h = values[indices] if len(values) else np.zeros(len(arr), np.uint64)
    elif pa.types.is_null(t):
        return np.zeros(len(arr), np.uint64)
    elif pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t):
        if pa.types.is_temporal(t):
            arr = arr.view(pa.int64() if t.bit_width == 64 else pa.int32())
        if nulls is not None:
            arr = arr.fill_null(False if pa.types.is_boolean(t) else 0)
        if arr.type != pa.int64():
            arr = pc.cast(arr, pa.int64(), safe=False)
        h = _mix(arr.to_numpy().view(np.uint64))
    elif pa.types.is_floating(t):
        floats = pc.cast(arr, pa.float64()).fill_null(0.0).to_numpy() + 0.0  # (-0.0 -> 0.0)
        floats[np.isnan(floats)] = np.nan
        h = _mix(floats.view(np.uint64))
    elif pa.types.is_fixed_size_binary(t) or pa.types.is_decimal(t):
        width = t.byte_width
        data = np.frombuffer(arr.buffers()[1], np.uint8)[arr.offset * width :]
        h = _words_hash(np.arange(len(arr) + 1, dtype=np.int64) * width, data)
    elif pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) \
            or pa.types.is_large_binary(t) or pa.types.is_string_view(t) \
            or pa.types.is_binary_view(t):  # fmt: skip
        if not (pa.types.is_large_string(t) or pa.types.is_large_binary(t)):
            arr = pc.cast(arr, pa.large_string() if "string" in str(t) else pa.large_binary())
        offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset : arr.offset + len(arr) + 1]
        data = np.frombuffer(arr.buffers()[2] or b"", np.uint8)
        h = _words_hash(offsets, data)
    else:
        raise ConfigError(f"cannot hash a key column of type {t}: use a primitive type")
    if nulls is not None:
        h[nulls] = 0
    return h


def key_hash(table: pa.Table, by: str | Sequence[str]) -> NDArray[np.uint64]:
    """The stable 64-bit hash of each row's key (the ``by`` columns): one column's hash, or
    ``h = mix(h * 0x100000001B3 ^ h_next)`` over several, in order."""
    names = [by] if isinstance(by, str) else list(by)
    if not names:
        raise ConfigError("a shuffle needs key columns (by=...)")
    out: NDArray[np.uint64] | None = None
    for name in names:
        column = table.column(name)
        chunks = [_array_hash(c) for c in column.chunks]
        h = chunks[0] if len(chunks) == 1 else np.concatenate([np.zeros(0, np.uint64), *chunks])
        out = h if out is None else _mix((out * _COMBINE) ^ h)
    assert out is not None
    return out


def hash_partitions(table: pa.Table, by: str | Sequence[str], partitions: int) -> NDArray[Any]:
    """Each row's partition: :func:`key_hash` modulo ``partitions``."""
    h = key_hash(table, by)
    return np.remainder(h, _U(partitions), out=h).view(np.int64)


def range_partitioner(sample: pa.Array | pa.ChunkedArray, partitions: int) -> RangePartitioner:
    """A :class:`RangePartitioner` with boundaries at the quantiles of a sample of the key
    column, for ``partitions`` reducers (sorted by Arrow; nulls left out)."""
    if partitions < 1:
        raise ConfigError(f"partitions must be at least 1, not {partitions}")
    ordered = pc.drop_null(sample)
    ordered = ordered.take(pc.sort_indices(ordered))
    n = len(ordered)
    return RangePartitioner([ordered[n * r // partitions].as_py() for r in range(1, partitions)]
                            if n else [])  # fmt: skip


def _range_ids(table: pa.Table, by: str | Sequence[str], part: RangePartitioner,
               partitions: int) -> NDArray[Any]:  # fmt: skip
    """Partition ids as ``RangePartitioner.__call__`` gives them (bisect_right over its
    boundaries), one Arrow comparison per boundary; nulls go to partition 0."""
    names = [by] if isinstance(by, str) else list(by)
    if len(names) != 1:
        raise ConfigError("range partitioning takes one key column (by='column')")
    column = table.column(names[0])
    ids = np.zeros(len(column), np.int64)
    for b in part.boundaries:
        ids += pc.greater_equal(column, pa.scalar(b, column.type)).fill_null(False).to_numpy(
            zero_copy_only=False)  # fmt: skip
    return np.minimum(ids, partitions - 1)


def split(
    table: pa.Table, by: str | Sequence[str], partitions: int,
    partitioner: Partitioner | None = None,
) -> list[pa.Table]:  # fmt: skip
    """``table`` in ``partitions`` parts (zero-copy slices of one ``take``), by the hash of
    the ``by`` columns, a :class:`RangePartitioner`, or a callable ``(table, partitions) ->
    ids``."""
    if partitions < 1:
        raise ConfigError(f"partitions must be at least 1, not {partitions}")
    if partitioner is None:
        ids = hash_partitions(table, by, partitions)
    elif isinstance(partitioner, RangePartitioner):
        ids = _range_ids(table, by, partitioner, partitions)
    else:
        ids = np.asarray(partitioner(table, partitions))
        if ids.shape != (table.num_rows,) or not np.issubdtype(ids.dtype, np.integer) or (
                len(ids) and not 0 <= ids.min() <= ids.max() < partitions):  # fmt: skip
            raise ConfigError(f"a partitioner returns one id in [0, {partitions}) per row")
        ids = ids.astype(np.int64, copy=False)
    counts = np.bincount(ids, minlength=partitions) if len(ids) else np.zeros(partitions, int)
    if counts.max(initial=0) == table.num_rows:  # one partition (or none) has every row
        return [table if n else table.slice(0, 0) for n in counts]
    # (numpy's stable sort of a small integer type is a radix sort)
    small = ids.astype(np.uint8 if partitions <= 256 else np.uint16 if partitions <= 65536
                       else np.int64)  # fmt: skip
    order = np.argsort(small, kind="stable")
    if len(order) < 1 << 32:  # (half the index bytes for take to read)
        order = order.astype(np.uint32)
    ordered = pc.take(table, pa.array(order), boundscheck=False)  # (argsort's are in bounds)
    starts = np.concatenate([[0], np.cumsum(counts)])
    return [ordered.slice(int(starts[r]), int(counts[r])) for r in range(partitions)]


def _ipc_size(table: pa.Table) -> int:
    """The size of ``table``'s uncompressed IPC stream (counted, nothing copied)."""
    mock = pa.MockOutputStream()
    with pa.ipc.new_stream(mock, table.schema) as writer:
        writer.write_table(table)
    return int(mock.size())


def _ipc_into(table: pa.Table, view: memoryview) -> None:
    """Write ``table``'s IPC stream into ``view`` (exactly its size)."""
    sink = pa.FixedSizeBufferWriter(pa.py_buffer(view))
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def shuffle_write(
    job: Job,
    prefix: str,
    mapper: int,
    table: pa.Table,
    *,
    by: str | Sequence[str],
    partitions: int,
    partitioner: Partitioner | None = None,
    ttl: float | None = None,
) -> None:
    """Publish mapper ``mapper``'s ``table`` split into ``partitions`` parts by its ``by``
    column(s): a stable hash (:func:`key_hash`), or ``partitioner``, a
    :class:`~pocketlib.serverless.shuffle.RangePartitioner` (see :func:`range_partitioner`)
    or a callable ``(table, partitions)`` returning each row's partition. One IPC stream per
    reducer, an empty one included: written by Arrow straight into the memory of a node on
    this host (parts from 256 KiB), the others in one batched put. ``ttl`` (seconds) bounds
    how long unread parts live."""
    if mapper < 0:
        raise ConfigError(f"a mapper's number is at least 0, not {mapper}")
    if ttl is not None and ttl <= 0:
        raise ConfigError("ttl must be positive seconds")
    parts = split(table, by, partitions, partitioner)
    sizes = [_ipc_size(p) for p in parts]

    def put(r: int) -> None:  # (written by Arrow into the node's memory when co-located)
        key = part_key(prefix, r, mapper)
        job.put_filled(key, sizes[r], lambda view: _ipc_into(parts[r], view), ttl=ttl)

    large = [r for r in range(partitions) if sizes[r] >= _IN_PLACE_MIN]
    if _threads(sum(sizes[r] for r in large)) > 1:  # two at a time: one hashed, one written
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(put, large))
    else:
        for r in large:
            put(r)
    rest: dict[int, memoryview] = {}
    for r in (r for r in range(partitions) if sizes[r] < _IN_PLACE_MIN):
        rest[r] = memoryview(bytearray(sizes[r]))
        _ipc_into(parts[r], rest[r])
    if rest:  # the small parts: one batched put
        publish(job, prefix, mapper, rest, ttl=ttl)


def shuffle_read(
    job: Job,
    prefix: str,
    reducer: int,
    *,
    mappers: int,
    timeout: float | None = None,
    free: bool = True,
) -> pa.Table:
    """Reducer ``reducer``'s table: its part from each of ``mappers`` mappers, concatenated
    in mapper order, once all are published (PocketTimeoutError after ``timeout`` seconds;
    ShuffleAbortedError if the shuffle is aborted meanwhile). ``free`` deletes the parts as
    they are read. Zero copy from a co-located node (up to 64 mappers; more are copied in
    one batch): the table's buffers keep the node's space until they are freed."""
    if mappers < 1:
        raise ConfigError(f"a shuffle has at least one mapper, not {mappers}")
    keys = [part_key(prefix, reducer, m) for m in range(mappers)]
    wait_for_parts(job, prefix, keys, timeout)
    buffers: list[pa.Buffer] = []
    rest = keys
    if len(keys) <= _MAX_LEASES:  # (a lease holds a connection while its table lives)
        first, leased = arrow_buffer(job, keys[0], free=free)
        buffers.append(first)
        rest = keys[1:]
        if leased:  # the node is on this host: every part read in place

            def fetch(key: str) -> pa.Buffer:  # (each part's checksum checked)
                return arrow_buffer(job, key, free=free)[0]

            if _threads(first.size * len(rest)) > 1:
                with ThreadPoolExecutor(2) as pool:
                    buffers += pool.map(fetch, rest)
            else:
                buffers += map(fetch, rest)
            rest = []
    if rest:  # a remote node, or many parts: copies, in one batch
        got = job.get_many(rest, delete_after_read=free)
        missing = [k for k in rest if k not in got]
        if missing:  # (another reader took them)
            raise NotFoundError(f"shuffle parts gone: {', '.join(missing[:5])}")
        buffers += [pa.py_buffer(got[k]) for k in rest]
    tables = [pa.ipc.open_stream(b).read_all() for b in buffers]
    return pa.concat_tables(tables, promote_options="permissive")
