"""Video analytics: decode a video's segments in parallel functions, then classify and reduce.

One of the three applications of the Pocket paper. The driver makes a synthetic video (a
bright square crossing a dark scene during known frames), cut into independently decodable
segments that go into a job. Stage one: each function decodes one segment and puts every
frame, downscaled to grey, back into the job (the intermediate data: thousands of small
objects). Stage two: each function classifies a share of the frames (is the square in view?),
reading them with one batched get that frees them. A last function reduces the labels to the
intervals the square was in view, which the driver checks against what it drew.

    python examples/video_analytics.py                 # 8 segments of 24 frames
    python examples/video_analytics.py --segments 64   # a longer video
    python examples/video_analytics.py --backend lambda

Needs PyAV (``pip install av``), whose wheel carries FFmpeg: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from typing import Any

import pocketlib
import pocketlib.serverless as pls
from pocketlib import JobHints, LocalCluster

WIDTH, HEIGHT, FPS = 160, 120, 24


def in_view(frame: int, total: int) -> bool:
    """Whether the square is drawn in ``frame``: two passes, at a third and two thirds in."""
    return total // 5 <= frame < 2 * total // 5 or 3 * total // 5 <= frame < 4 * total // 5


def make_segment(first: int, count: int, total: int) -> bytes:
    """Frames ``[first, first + count)`` of the video, encoded as an MP4 of their own."""
    import av
    import numpy as np

    out = io.BytesIO()
    container = av.open(out, mode="w", format="mp4")
    stream = container.add_stream("mpeg4", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    rng = np.random.default_rng(first)
    for i in range(first, first + count):
        image = rng.integers(0, 40, (HEIGHT, WIDTH, 3), dtype=np.uint8)  # a noisy dark scene
        if in_view(i, total):
            x = int((i % 40) / 40 * (WIDTH - 30))
            image[40:70, x : x + 30] = 230
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return out.getvalue()


def decode(segment: int, job: pocketlib.Job) -> int:
    """Stage one: a segment decoded; each frame put back downscaled to grey (80 x 60)."""
    import av

    data = job.get(f"video/{segment:05d}", delete_after_read=True)
    frames = {}
    with av.open(io.BytesIO(data)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            grey = frame.to_ndarray(format="gray")[::2, ::2]
            frames[f"frames/{segment:05d}/{i:04d}"] = grey.tobytes()
    job.put_many(frames)
    return len(frames)


def classify(keys: list[str], job: pocketlib.Job) -> dict[str, bool]:
    """Stage two: is the square in view (a patch far brighter than the scene)?"""
    import numpy as np

    labels = {}
    for key, data in job.get_many(keys, delete_after_read=True).items():
        grey = np.frombuffer(data, dtype=np.uint8).reshape(HEIGHT // 2, WIDTH // 2)
        labels[key] = bool((grey > 180).sum() > 50)
    return labels


def intervals(labels: list[dict[str, bool]]) -> list[tuple[int, int]]:
    """The last function: the frame intervals the square was in view."""
    merged: dict[str, bool] = {}
    for part in labels:
        merged.update(part)
    seen = [merged[k] for k in sorted(merged)]
    out: list[tuple[int, int]] = []
    for i, view in enumerate(seen):
        if view and (not out or out[-1][1] != i):
            out.append((i, i + 1))
        elif view:
            out[-1] = (out[-1][0], i + 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--frames", type=int, default=24, help="frames per segment")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--backend", default="processes", choices=["processes", "lambda"])
    args = parser.parse_args()
    try:
        import av  # noqa: F401
    except ImportError:
        print("video_analytics: needs PyAV: pip install av", file=sys.stderr)
        return 1
    total = args.segments * args.frames
    with LocalCluster(node_capacity="512MiB") as cluster, cluster.client() as client:
        job = client.register_job("video", JobHints(capacity="256MiB",
                                                    max_concurrency=args.workers))  # fmt: skip
        job.put_many({f"video/{s:05d}": make_segment(s * args.frames, args.frames, total)
                      for s in range(args.segments)})  # fmt: skip
        lambda_args: dict[str, Any] = {"memory_mb": 1024, "env": {
            "PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}}  # fmt: skip
        started = time.perf_counter()
        with pls.FunctionExecutor(args.backend, job=job, workers=args.workers,
                                  lambda_args=lambda_args) as fexec:  # fmt: skip
            decoded = sum(fexec.get_result(fexec.map(decode, range(args.segments))))
            keys = sorted(job.list("frames/"))
            shares = [(keys[i :: args.workers],) for i in range(args.workers)]
            labels = fexec.get_result(fexec.map(classify, shares))
            found = fexec.call_async(intervals, (labels,)).result()
        took = time.perf_counter() - started
        drawn = intervals([{f"{i:06d}": in_view(i, total) for i in range(total)}])
        ok = decoded == total and found == drawn
        print(f"decoded {decoded} frames of {args.segments} segments and classified them in "
              f"{took:.2f} s ({args.backend}); the square was in view during frames {found}: "
              f"{'as drawn' if ok else f'WRONG (drawn: {drawn})'}; frames left in the job: "
              f"{len(list(job.list('frames/')))}")  # fmt: skip
        job.deregister()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
