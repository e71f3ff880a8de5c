"""Start a storage node, store and read objects, and stop the node.

python examples/quickstart.py
"""

from __future__ import annotations

import pocketlib
from pocketlib.control.processes import NodeProcess


def main() -> None:
    with NodeProcess("dram", "256MiB") as node:
        print(f"node at {node.address}")
        with pocketlib.connect([str(node.address)], job="quickstart") as job:
            job.put("greeting", b"hello, ephemeral world")
            print(job.get("greeting"))

            # Lifetime hints: read once, or expire after a while.
            job.put("once", b"read me once")
            print(job.get("once", delete_after_read=True), job.exists("once"))
            job.put("short-lived", b"gone in a minute", ttl=60)

            # Many small objects in one round trip per node.
            job.put_many({f"part-{i:03d}": bytes([i]) * 100 for i in range(100)})
            print(len(job.get_many([f"part-{i:03d}" for i in range(100)])), "parts read back")
            print(list(job.list("part-00")))

            # Into a preallocated buffer: no allocation per read.
            buffer = bytearray(1 << 20)
            job.put("blob", bytes(range(256)) * 4096)
            n = job.get_into("blob", buffer)
            print(f"{n} bytes read into the buffer; stat: {job.stat('blob')}")

            # Larger than memory: stream it.
            with job.writer("stream") as w:
                for _ in range(16):
                    w.write(b"x" * (1 << 20))
            with job.reader("stream") as r:
                print(len(r.read()), "bytes streamed back")

            print(f"{job.purge()} objects freed")


if __name__ == "__main__":
    main()
