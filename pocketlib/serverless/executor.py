"""A PyWren/Lithops-style executor whose functions share a pocketlib job.

``FunctionExecutor(job=job)`` runs functions on a backend (local processes for now) and hands
each the job: a function with a parameter named ``job`` gets it, attached once per worker from
the job's ticket. Arguments and results above a threshold travel by reference through the job
(:mod:`pocketlib.serverless.refs`) instead of through the backend's own channel. Futures are
``concurrent.futures.Future`` objects; a function's exception comes back with its type and
its remote traceback.

>>> with FunctionExecutor(job=job) as fexec:          # doctest: +SKIP
...     futures = fexec.map(count_words, [("part-0",), ("part-1",)])
...     totals = fexec.get_result(futures)
"""

from __future__ import annotations

import concurrent.futures as cf
import inspect
import os
import pickle
import secrets
import sys
import sysconfig
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .lambda_backend import HANDLER, MAX_INLINE, LambdaBackend, aws_invoker, local_invoker
from .refs import offload, resolve
from .runtime import LocalLambda
from .tasks import _map_task, _reduce_task, _run

if TYPE_CHECKING:
    from ..client.job import Job

__all__ = ["ALL_COMPLETED", "ALWAYS", "ANY_COMPLETED", "FunctionExecutor"]

#: ``wait`` until every future is done, until one is, or not at all (PyWren's and Lithops'
#: names; any number between 0 and 1 waits for that fraction of the futures).
ALL_COMPLETED, ANY_COMPLETED, ALWAYS = "ALL_COMPLETED", "ANY_COMPLETED", "ALWAYS"
#: Arguments and results whose payload form is larger than this go through the job.
DEFAULT_THRESHOLD = 1 << 20


class FunctionExecutor:
    """Run functions with a job's data at hand; PyWren/Lithops method names.

    Backends: ``"processes"``, a pool of ``workers`` local processes (default: the CPU count);
    a :class:`~pocketlib.serverless.runtime.LocalLambda` whose handler is
    :data:`~pocketlib.serverless.lambda_backend.HANDLER`, invoked ``workers`` at a time (or
    ``"lambda"``: one made here, ``lambda_args`` passed to it); ``"aws"``, AWS Lambda through
    boto3: ``function_name`` and ``lambda_args`` for the client (region_name, endpoint_url);
    ``"lithops"``, Lithops (its ``concurrent.futures`` executor; ``lithops_config`` is its
    config, by default localhost compute and storage with this interpreter).
    ``job`` (optional) is what functions get as their ``job`` parameter and where large
    arguments and results go; ``threshold`` is that size (bytes of the pickle).
    """

    def __init__(
        self,
        backend: str | LocalLambda = "processes",
        *,
        job: Job | None = None,
        workers: int | None = None,
        threshold: int = DEFAULT_THRESHOLD,
        function_name: str | None = None,
        lambda_args: Mapping[str, Any] | None = None,
        lithops_config: Mapping[str, Any] | None = None,
        mp_context: Any = None,
    ) -> None:
        self.job = job
        self.threshold = threshold
        self._ticket = job.ticket.to_json() if job is not None else None
        self.futures: list[cf.Future[Any]] = []
        self._owned: LocalLambda | None = None
        self._pool: cf.Executor | LambdaBackend
        if backend == "processes":
            self._pool = cf.ProcessPoolExecutor(
                max_workers=workers or os.cpu_count() or 1, mp_context=mp_context
            )
            return
        if backend == "lithops":
            self._pool = _lithops_pool(workers or os.cpu_count() or 1, lithops_config)
            # (Lithops caps one call's data at 4 MiB: the rest goes by reference.)
            self.threshold = min(threshold, 1 << 20)
            return
        # What an invoke carries inline must fit its payload: the rest goes by reference.
        self.threshold = min(threshold, MAX_INLINE // 2)
        concurrency = workers or 16
        if backend == "lambda":
            backend = self._owned = LocalLambda(HANDLER, **dict(lambda_args or {}))
        if isinstance(backend, LocalLambda):
            self._pool = LambdaBackend(local_invoker(backend), concurrency)
        elif backend == "aws":
            if not function_name:
                raise ConfigError("backend 'aws' needs the function_name of a deployed handler")
            invoker = aws_invoker(function_name, **dict(lambda_args or {}))
            self._pool = LambdaBackend(invoker, concurrency)
        else:
            raise ConfigError(f"unknown backend {backend!r}: 'processes', 'lambda', 'aws' or a "
                              "LocalLambda")  # fmt: skip

    # -- submitting ---------------------------------------------------------------------------
    def call_async(self, func: Callable[..., Any], data: Any = ()) -> cf.Future[Any]:
        """Run ``func`` once on ``data`` (a tuple: positional arguments; a dict: keyword
        arguments; anything else: the one argument)."""
        return self.map(func, [data])[0]

    def map(self, func: Callable[..., Any], iterdata: Iterable[Any]) -> list[cf.Future[Any]]:
        """Run ``func`` on each item of ``iterdata`` (as :meth:`call_async`); one future each."""
        wants_job = "job" in _parameters(func)
        if wants_job and self.job is None:
            raise ConfigError(f"{_name(func)} takes a job: give the executor one (job=...)")
        blob = (secrets.token_bytes(8), self._dumps(func))  # unpickled once per worker
        futures = []
        for item in iterdata:
            args, kwargs = _arguments(item)
            payload = self._by_reference({"args": list(args), "kwargs": kwargs})
            future = self._pool.submit(_run, blob, payload, self._ticket, wants_job,
                                       self.threshold)  # fmt: skip
            futures.append(self._resolving(future))
        self.futures += futures
        return futures

    def map_reduce(
        self,
        map_func: Callable[..., Any],
        iterdata: Iterable[Any],
        reduce_func: Callable[..., Any],
    ) -> cf.Future[Any]:
        """``reduce_func(results)`` (with ``job`` if it takes one) once every ``map_func``
        call is done; the reduce's future."""
        mapped = self.map(map_func, iterdata)
        results = self.get_result(mapped)
        return self.call_async(reduce_func, (results,))

    def map_shuffle_reduce(
        self,
        map_func: Callable[..., Any],
        iterdata: Iterable[Any],
        reduce_func: Callable[..., Any],
        *,
        reducers: int,
        by: str | Sequence[str] | None = None,
        partition: Callable[..., Any] | None = None,
        raw: bool = False,
        timeout: float | None = None,
    ) -> list[cf.Future[Any]]:
        """MapReduce with a shuffle through the job: each ``map_func`` call returns ``(key,
        value)`` records, partitioned over ``reducers`` by a stable hash of the key
        (:func:`~pocketlib.serverless.shuffle.partition_of`); reducer r gets the records of
        its partition from every mapper, in mapper order, as ``reduce_func(records)``. The
        reducers' futures, in order. ``partition(key, reducers)`` may replace the hash: a
        :class:`~pocketlib.serverless.shuffle.RangePartitioner` built from a sample of the
        keys makes the reducers' outputs follow in key order. With ``raw``, ``map_func``
        partitions itself: it returns one bytes-like part per reducer (for bulk binary data,
        a sort's records), and ``reduce_func`` gets the list of its parts, one per mapper in
        mapper order. With ``by`` (a column name, or several), ``map_func`` returns a
        ``pyarrow.Table`` that is shuffled by those key columns
        (:func:`pocketlib.arrow.shuffle.shuffle_write`: a stable hash of the key, or
        ``partition``, a RangePartitioner over the one key column or a callable ``(table,
        reducers) -> ids``) and ``reduce_func`` gets one table: its rows from every mapper.
        Reducers wait on the nodes for their parts (``timeout`` seconds at most), so they may
        start before the mappers end."""
        if self.job is None:
            raise ConfigError("a shuffle goes through a job: give the executor one (job=...)")
        if reducers < 1:
            raise ConfigError(f"reducers must be at least 1, not {reducers}")
        if by is not None and raw:
            raise ConfigError("a shuffle is of tables (by=...) or of raw parts, not both")
        mode: Any = raw if by is None else ("arrow", by)
        items = list(iterdata)
        ticket = self.job.ticket.to_json()
        shuffle = f"shuffle/{secrets.token_hex(6)}"
        mapper = (secrets.token_bytes(8), self._dumps(map_func), "job" in _parameters(map_func))
        maps = []
        job = self.job
        for m, item in enumerate(items):
            args, kwargs = _arguments(item)
            payload = self._by_reference({"args": list(args), "kwargs": kwargs})
            task = (mapper, payload, ticket, shuffle, m, reducers, partition, mode)
            maps.append(self._pool.submit(_map_task, *task))
            maps[-1].add_done_callback(lambda f: _abort_if_failed(f, job, shuffle))
        self.futures += maps
        reducer = (
            secrets.token_bytes(8),
            self._dumps(reduce_func),
            "job" in _parameters(reduce_func),
        )
        futures = []
        for r in range(reducers):
            work = (reducer, ticket, shuffle, r, len(items), timeout, self.threshold, mode)
            future = self._resolving(self._pool.submit(_reduce_task, *work))
            futures.append(_failing_with_mappers(future, maps))
        self.futures += futures
        return futures

    # -- waiting ------------------------------------------------------------------------------
    def wait(
        self,
        fs: Sequence[cf.Future[Any]] | None = None,
        *,
        return_when: str | float = ALL_COMPLETED,
        timeout: float | None = None,
    ) -> tuple[list[cf.Future[Any]], list[cf.Future[Any]]]:
        """``(done, not_done)``: after every future is done, one is, none is waited for
        (``ALWAYS``), or a fraction between 0 and 1 of them is."""
        fs = list(self.futures if fs is None else fs)
        if return_when == ALWAYS:
            pass
        elif return_when in (ALL_COMPLETED, ANY_COMPLETED):
            how = cf.ALL_COMPLETED if return_when == ALL_COMPLETED else cf.FIRST_COMPLETED
            cf.wait(fs, timeout=timeout, return_when=how)
        elif isinstance(return_when, int | float) and 0 < return_when <= 1:
            need = max(1, -(-int(return_when * 1000) * len(fs) // 1000))
            finished = sum(f.done() for f in fs)
            try:
                for _ in cf.as_completed([f for f in fs if not f.done()], timeout=timeout):
                    finished += 1
                    if finished >= need:
                        break
            except cf.TimeoutError:
                pass  # what is done by then
        else:
            raise ConfigError(f"return_when is ALL_COMPLETED, ANY_COMPLETED, ALWAYS or a "
                              f"fraction in (0, 1], not {return_when!r}")  # fmt: skip
        done = [f for f in fs if f.done()]
        return done, [f for f in fs if not f.done()]

    def get_result(
        self, fs: Sequence[cf.Future[Any]] | cf.Future[Any] | None = None, *,
        timeout: float | None = None,
    ) -> Any:  # fmt: skip
        """The results of ``fs`` (default: every future so far), in order; a function's
        exception is raised here with its remote traceback as its cause."""
        if isinstance(fs, cf.Future):
            return fs.result(timeout)
        return [f.result(timeout) for f in (self.futures if fs is None else fs)]

    def clean(self) -> None:
        """Forget the futures (values they passed by reference were freed as they were read)."""
        self.futures = []

    def shutdown(self, wait: bool = True) -> None:
        """Stop the workers (``wait``: after the calls under way)."""
        if isinstance(self._pool, cf.Executor):
            self._pool.shutdown(wait=wait, cancel_futures=not wait)
        else:
            self._pool.shutdown(wait=wait)
        if self._owned is not None:
            self._owned.close()

    def __enter__(self) -> FunctionExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _dumps(self, func: Callable[..., Any]) -> bytes:
        """``func`` pickled for the backend's workers: local processes import what this
        process imports; other workers get the code of functions from outside installed
        packages by value (cloudpickle), as they could not import it."""
        return _dumps(func, by_value=not isinstance(self._pool, cf.ProcessPoolExecutor))

    # -- payloads -----------------------------------------------------------------------------
    def _by_reference(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.job is None or not any(
            type(v) not in _SMALL for v in (*payload["args"], *payload["kwargs"].values())
        ):
            return payload  # (nothing that could be large: no marker to make)
        args = [offload(a, self.job, threshold=self.threshold, pickled=True)
                for a in payload["args"]]  # fmt: skip
        kwargs = {k: offload(v, self.job, threshold=self.threshold, pickled=True)
                  for k, v in payload["kwargs"].items()}  # fmt: skip
        return {"args": args, "kwargs": kwargs}

    def _resolving(self, future: cf.Future[Any]) -> cf.Future[Any]:
        """A future of the function's result, with a result passed by reference fetched."""
        if self.job is None:
            return future
        out: cf.Future[Any] = cf.Future()
        job = self.job

        def done(f: cf.Future[Any]) -> None:
            exc = f.exception()
            if exc is not None:
                out.set_exception(exc)
                return
            try:
                out.set_result(resolve(f.result(), job))
            except BaseException as err:  # (a reference that cannot be fetched)
                out.set_exception(err)

        future.add_done_callback(done)
        return out


def _lithops_pool(workers: int, config: Mapping[str, Any] | None) -> cf.Executor:
    try:
        from lithops.concurrent.futures import FunctionExecutor as LithopsExecutor
    except ImportError:
        raise ConfigError(
            "backend 'lithops' needs lithops: pip install 'pocketlib[lithops]'"
        ) from None
    if config is None:
        config = {
            "lithops": {"backend": "localhost", "storage": "localhost", "log_level": "WARNING"},
            "localhost": {"runtime": sys.executable, "worker_processes": workers},
        }
    pool: cf.Executor = LithopsExecutor(max_workers=workers, config=dict(config))
    return pool


def _abort_if_failed(future: cf.Future[Any], job: Job, shuffle: str) -> None:
    """A mapper failed: its shuffle is aborted, so the reducers stop waiting for it."""
    from .shuffle import abort

    if not future.cancelled() and future.exception() is not None:
        abort(job, shuffle, f"{type(future.exception()).__name__}: {future.exception()}")


def _failing_with_mappers(reducer: cf.Future[Any], maps: list[cf.Future[Any]]) -> cf.Future[Any]:
    """The reducer's future, with the failed mapper's own exception if the shuffle aborted."""
    from .shuffle import ShuffleAbortedError

    out: cf.Future[Any] = cf.Future()

    def done(f: cf.Future[Any]) -> None:
        exc = f.exception()
        if isinstance(exc, ShuffleAbortedError):
            failed = next((m.exception() for m in maps if m.done() and not m.cancelled()
                           and m.exception() is not None), None)  # fmt: skip
            exc = failed or exc
        if exc is not None:
            out.set_exception(exc)
        else:
            out.set_result(f.result())

    reducer.add_done_callback(done)
    return out


#: Argument types too small ever to go by reference.
_SMALL = frozenset({int, float, bool, type(None)})


def _arguments(item: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(item, tuple):
        return item, {}
    if isinstance(item, dict):
        return (), dict(item)
    return (item,), {}


def _parameters(func: Callable[..., Any]) -> Sequence[str]:
    try:
        return list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return []


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", repr(func))


def _dumps(func: Callable[..., Any], *, by_value: bool = False) -> bytes:
    """The function pickled: by reference if it is importable, by value (cloudpickle, when
    installed) if it is a lambda, a closure, defined in the driver's ``__main__`` (which
    another process, a Lambda environment above all, cannot import), or, with ``by_value``,
    defined in a module outside the installed packages."""
    module = getattr(func, "__module__", None)
    foreign = module == "__main__" or (by_value and not _installed(module))
    if not foreign:
        try:
            return pickle.dumps(func)
        except (pickle.PicklingError, AttributeError, TypeError):
            pass
    try:
        import cloudpickle
    except ImportError:
        if foreign:
            return pickle.dumps(func)  # (forked workers share the driver's modules)
        raise ConfigError(
            f"{_name(func)} cannot be pickled; define it at module level or install cloudpickle"
        ) from None
    owner = sys.modules.get(module or "")
    if foreign and owner is not None and module != "__main__":
        cloudpickle.register_pickle_by_value(owner)
        try:
            data: bytes = cloudpickle.dumps(func)
        finally:
            cloudpickle.unregister_pickle_by_value(owner)
        return data
    data = cloudpickle.dumps(func)
    return data


def _installed(module: str | None) -> bool:
    """Whether ``module`` comes from an installed package (or the standard library)."""
    owner = sys.modules.get(module or "")
    path = getattr(owner, "__file__", None)
    if owner is None or path is None:
        return True  # (built in, or nothing to ship)
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib")}
    real = os.path.realpath(path)
    return any(real.startswith(os.path.realpath(r) + os.sep) for r in roots)
