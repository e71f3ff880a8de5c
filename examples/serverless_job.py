"""A driver registers a job with hints; its functions attach with the ticket alone.

    python examples/serverless_job.py

The "functions" are worker processes here (on AWS Lambda or Lithops they would be invocations
that receive the ticket in their payload). Nothing but the ticket passes between driver and
functions: no controller round trip inside a function.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import pocketlib
from pocketlib import JobHints

PARTITIONS = 8


def mapper(ticket: str, index: int) -> int:
    """Write one partition of this mapper's output per reducer."""
    job = pocketlib.attach(ticket)
    with job:
        for r in range(PARTITIONS):
            job.put(f"map-{index}/part-{r}", bytes([index]) * 64 * 1024)
    return index


def reducer(ticket: str, r: int) -> int:
    """Read (and free) every mapper's partition for this reducer."""
    with pocketlib.attach(ticket) as job:
        keys = [f"map-{m}/part-{r}" for m in range(PARTITIONS)]
        return sum(len(v) for v in job.get_many(keys, delete_after_read=True).values())


def main() -> None:
    with pocketlib.LocalCluster() as cluster, pocketlib.Client(cluster.address) as client:
        job = client.register_job("example", JobHints(capacity="16MiB", max_concurrency=PARTITIONS))
        ticket = job.ticket.to_json()
        print(f"registered {job.ticket.job}: {len(ticket)}-byte ticket, "
              f"weights {dict(job.ticket.maps[-1].weights)}")  # fmt: skip
        with ProcessPoolExecutor(4) as pool:
            list(pool.map(mapper, [ticket] * PARTITIONS, range(PARTITIONS)))
            read = sum(pool.map(reducer, [ticket] * PARTITIONS, range(PARTITIONS)))
        print(f"shuffled {read} bytes; left behind: {len(list(job.list()))} objects")
        print(f"bill: {job.deregister()['usage']}")


if __name__ == "__main__":
    main()
