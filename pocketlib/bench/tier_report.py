"""Section d of the ``pocket bench`` report: the tiers, the co-located path, the sort against
files, the cold read and the restarts, as tables and target checks from a
:class:`~.tier_results.TierResults`."""

from __future__ import annotations

import numpy as np

from ..config import format_size
from .report_kit import Target, fmt_us, md_table, ratio_of, sort_rows
from .settings import COLO_SIZE, RECOVERY_OBJECTS, TIER_SIZES, GiB, MiB, Settings, size_label
from .tier_results import COLO_OPS, RAW_S3, REDIS, ColdRead, TierResults

__all__ = ["tiers_section"]

_LABELS = {
    "dram": "pocketlib dram", "nvme": "pocketlib nvme", "hdd": "pocketlib hdd",
    "s3": "pocketlib s3", REDIS: "Redis", RAW_S3: "raw S3 (boto3)",
}  # fmt: skip


def _label(system: str) -> str:
    return _LABELS.get(system, f"pocketlib {system}")


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.2f}"


def tiers_section(s: Settings, t: TierResults, targets: list[Target]) -> list[str]:
    out = ["## d. Tiers", ""]
    out += [f"Run with `pocket bench --parts d` (or `--parts abcd`); this part took "
            f"{t.seconds:.0f} s. Five measurements, each with the servers it needs started "
            "for it and stopped after it.", ""]  # fmt: skip
    out += _tier_table(s, t)
    out += _colo(s, t, targets)
    out += _tier_sort(s, t, targets)
    out += _nvme_vs_dram(t, targets)
    out += _recovery(s, t, targets)
    if t.notes or t.failures:
        out += ["### d. Notes", ""]
        out += [f"- FAILED: {n}" for n in t.failures]
        out += [f"- {n}" for n in t.notes]
        out += [""]
    return out


def _tier_table(s: Settings, t: TierResults) -> list[str]:
    out = ["### d.1 PUT and GET per tier, one client over TCP", ""]
    if not t.latency:
        return [*out, "Not measured (see the notes).", ""]
    batches = "; ".join(
        f"{size_label(size)}: " + ", ".join(f"{_label(x)} {s.tier_ops(x, size)}" for x in t.systems)
        for size in TIER_SIZES
    )
    where = "; ".join(f"`{k}` in a temporary directory under {v}" for k, v in
                      t.file_dirs.items())  # fmt: skip
    out += [f"One pocketlib node per tier (`dram`{'; ' + where if where else ''}; "
            f"`s3` with `--path s3://BUCKET/pocket` over a SeaweedFS "
            "`weed server -s3` started for this part), the client with "
            "`POCKET_SHARED_MEMORY=0` (TCP on 127.0.0.1). Beside them: Redis (redis-py with "
            "hiredis, as part a) and the raw S3 server: boto3 `put_object` / "
            "`get_object(...)['Body'].read()` against the same SeaweedFS. pocketlib GET is "
            f"`job.get` (a new bytes object, as Redis's GET). {s.rounds} interleaved rounds: "
            "in each, every operation runs a batch on every system, the order of the systems "
            f"rotating each round. Ops per batch: {batches}. Samples pooled per system; "
            "GB/s = size / p50. The ratios compare GB/s (for pocketlib rows higher is "
            "better).", ""]  # fmt: skip
    header = ["op", "size", "system", "p50 µs", "p99 µs", "GB/s", "GB/s vs Redis",
              "GB/s vs raw S3"]  # fmt: skip
    rows = []
    for op in ("PUT", "GET"):
        for size in TIER_SIZES:
            redis = t.latency.get((REDIS, op, size))
            raw = t.latency.get((RAW_S3, op, size))
            for system in t.systems:
                sr = t.latency.get((system, op, size))
                if sr is None:
                    continue
                vs_redis = f"{ratio_of(sr.gbps, redis.gbps):.2f}x" if redis else "n/a"
                vs_raw = f"{ratio_of(sr.gbps, raw.gbps):.2f}x" if raw else "n/a"
                rows.append([op, size_label(size), _label(system), fmt_us(sr.pct(50)),
                             fmt_us(sr.pct(99)), f"{sr.gbps:.3f}", vs_redis, vs_raw])  # fmt: skip
    out += [*md_table(header, rows, "lll" + "r" * (len(header) - 3)), ""]
    return out


def _colo(s: Settings, t: TierResults, targets: list[Target]) -> list[str]:
    out = [f"### d.2 Co-located path, {size_label(COLO_SIZE)}, one dram node", ""]
    if not t.colo:
        return [*out, "Not measured (see the notes).", ""]
    n = len(next(iter(t.colo.values())).ns)
    out += ["A client on the node's host maps the tier's file: `get_into` copies the value "
            "out of the mapping into a preallocated buffer and checks its checksum; "
            "`get_buffer` hands out a read-only view of the mapping (zero copy, checksum "
            "only); `put` copies into space reserved over the socket. Against: `numpy.copyto` "
            "between two preallocated arrays (memcpy) and the same operations over TCP (a "
            "second client with `POCKET_SHARED_MEMORY=0`). "
            f"{s.rounds} rounds, the order rotating each round; {n} samples per operation; "
            "GB/s = size / p50.", ""]  # fmt: skip
    memcpy = t.colo.get(COLO_OPS[0])
    tcp_get, tcp_put = t.colo.get(COLO_OPS[2]), t.colo.get(COLO_OPS[5])
    header = ["operation", "p50 ms", "p99 ms", "GB/s", "vs memcpy", "vs TCP"]
    rows = []
    for name in COLO_OPS:
        sr = t.colo.get(name)
        if sr is None:
            continue
        is_put = name.endswith("put")
        base = tcp_put if is_put else tcp_get
        vs_mem = f"{ratio_of(sr.gbps, memcpy.gbps):.2f}x" if memcpy and not is_put else ""
        vs_tcp = f"{ratio_of(sr.gbps, base.gbps):.2f}x" if base and name != COLO_OPS[0] else ""
        rows.append([name, _ms(sr.pct(50) * 1e3),
                     _ms(sr.pct(99) * 1e3), f"{sr.gbps:.2f}", vs_mem, vs_tcp])  # fmt: skip
    out += [*md_table(header, rows), ""]
    gi, gb = t.colo.get(COLO_OPS[1]), t.colo.get(COLO_OPS[3])
    if gi is not None and memcpy is not None and tcp_get is not None:
        targets.append(Target(
            f"{size_label(COLO_SIZE)} co-located get_into >= 0.5x memcpy's GB/s",
            ratio_of(gi.gbps, memcpy.gbps), 0.5, True,
            f"{gi.gbps:.2f} GB/s vs {memcpy.gbps:.2f} GB/s",
        ))  # fmt: skip
        beside = f"; get_buffer: {ratio_of(gb.gbps, tcp_get.gbps):.2f}x" if gb else ""
        targets.append(Target(
            f"{size_label(COLO_SIZE)} co-located get_into >= 2x the TCP get_into's GB/s",
            ratio_of(gi.gbps, tcp_get.gbps), 2.0, True,
            f"{gi.gbps:.2f} GB/s vs {tcp_get.gbps:.2f} GB/s{beside}",
        ))  # fmt: skip
    return out


def _tier_sort(s: Settings, t: TierResults, targets: list[Target]) -> list[str]:
    out = [f"### d.3 Sort, {size_label(s.sort_size)}: co-located pocketlib vs files on "
           "/dev/shm", ""]  # fmt: skip
    if not t.sorts:
        return [*out, "Not measured (see the notes).", ""]
    out += ["The sort of part c (same mappers, reducers and verification) on one machine, "
            "once through a fresh dram node with the co-located path on (mappers put through "
            "the mapping, reducers read their partitions zero-copy with `get_buffer`), once "
            "through `FileShuffle` (`pocketlib/bench/fileshuffle.py`): one file per "
            "partition in a fresh directory on /dev/shm, written with `write(2)`, read whole "
            "with `read(2)` into a preallocated buffer, then unlinked. "
            f"{s.sort_runs} run(s) each, alternating which goes first; the ratios compare the "
            "medians. Shuffle GB/s as in part c.", ""]  # fmt: skip
    header = ["store", "seconds", "map s", "reduce s", "shuffle bytes", "store I/O s",
              "shuffle GB/s", "peak bytes", "verified"]  # fmt: skip
    out += [*md_table(header, sort_rows(t.sorts), "lrrrrrrrl"), ""]
    ps = [r for r in t.sorts if r.store.startswith("pocketlib")]
    fs = [r for r in t.sorts if not r.store.startswith("pocketlib")]
    if not ps or not fs:
        return out
    p_gbps = float(np.median([r.shuffle_gbps for r in ps]))
    f_gbps = float(np.median([r.shuffle_gbps for r in fs]))
    p_sec = float(np.median([r.seconds for r in ps]))
    f_sec = float(np.median([r.seconds for r in fs]))
    out += [f"- shuffle GB/s ratio pocketlib/files (higher is better): "
            f"{ratio_of(p_gbps, f_gbps):.2f}x",
            f"- end-to-end time ratio pocketlib/files (lower is better): "
            f"{ratio_of(p_sec, f_sec):.2f}x", ""]  # fmt: skip
    label = size_label(s.sort_size)
    note = "" if s.sort_size == GiB else f" (run at {label}; the target is set for 1 GiB)"
    targets.append(Target(
        f"{label} sort, co-located: pocketlib shuffle GB/s >= files on /dev/shm{note}",
        ratio_of(p_gbps, f_gbps), 1.0, True, f"{p_gbps:.2f} GB/s vs {f_gbps:.2f} GB/s",
    ))  # fmt: skip
    return out


def _nvme_vs_dram(t: TierResults, targets: list[Target]) -> list[str]:
    big = 16 * MiB
    out = [f"### d.4 NVMe vs DRAM, {size_label(big)}", ""]
    dram = {op: t.latency.get(("dram", op, big)) for op in ("GET", "PUT")}
    nvme = {op: t.latency.get(("nvme", op, big)) for op in ("GET", "PUT")}
    if dram["GET"] is None or nvme["GET"] is None:
        out += ["Warm: not measured (no nvme node; see the notes).", ""]
    else:
        out += ["Warm page cache: the rows of d.1 (one client over TCP, p50).", ""]
        rows = []
        for op in ("GET", "PUT"):
            d, n = dram[op], nvme[op]
            if d is None or n is None:
                continue
            rows.append([op, f"{d.gbps:.2f}", f"{n.gbps:.2f}", f"{ratio_of(n.gbps, d.gbps):.2f}x"])
        out += [*md_table(["op", "DRAM GB/s", "NVMe GB/s", "NVMe / DRAM"], rows), ""]
        d, n = dram["GET"], nvme["GET"]
        assert d is not None
        assert n is not None
        targets.append(Target(
            f"{size_label(big)} GET, warm cache: NVMe >= 0.8x DRAM's GB/s",
            ratio_of(n.gbps, d.gbps), 0.8, True, f"{n.gbps:.2f} GB/s vs {d.gbps:.2f} GB/s",
        ))  # fmt: skip
    if t.cold is not None:
        out += _cold(t.cold)
    return out


def _cold(c: ColdRead) -> list[str]:
    total = c.values * c.size
    resident = (f"{c.resident_before / MiB:.0f} MiB" if c.resident_before is not None
                else "unknown (mincore unavailable)")  # fmt: skip
    out = [f"Cold-cache attempt: {c.values} values of {size_label(c.size)} put on a fresh "
           "nvme node, the node stopped, `sync` and `echo 3 > /proc/sys/vm/drop_caches` "
           f"({'done' if c.dropped else 'not possible here: ' + c.drop_error}), the node "
           "restarted on the same directory, the caches dropped again once it answered "
           "(its start-up checksum pass reads every value), then each value read once "
           "(`get_into`, TCP) and at once a second time. Page cache holding the data file "
           f"just before the reads (`mincore`): {resident} of the {total / MiB:.0f} MiB "
           f"written (file {c.file_bytes / MiB:.0f} MiB).", ""]  # fmt: skip
    ratio = ratio_of(c.cold_gbps, c.warm_gbps)
    out += [*md_table(["read", "median ms", "GB/s"], [
        ["first (\"cold\")", _ms(float(np.median(c.cold_ns))), f"{c.cold_gbps:.2f}"],
        ["second (warm)", _ms(float(np.median(c.warm_ns))), f"{c.warm_gbps:.2f}"],
    ]), ""]  # fmt: skip
    if not c.dropped:
        verdict = ("Not a cold read: the page cache could not be dropped here, so the first "
                   "read found the values cached.")  # fmt: skip
    elif c.resident_before is not None and c.resident_before >= total // 2:
        verdict = (f"Not a cold read: {resident} of the file stayed cached through "
                   "`drop_caches`. The node maps its data file and its start-up checksum "
                   "pass touched every value; pages mapped by a live process are not "
                   "dropped. A cold number needs the node to stop mapping what it verified "
                   f"(or a device without a page cache). First read at {ratio:.2f}x the "
                   "second.")  # fmt: skip
    elif ratio >= 0.7:
        verdict = (f"The values were out of the guest's page cache (mincore), yet the first "
                   f"read ran at {ratio:.2f}x the second: the VM's virtual disk is served "
                   "from the host's cache, so this is not a cold-disk number either.")  # fmt: skip
    else:
        verdict = f"Cold: the first read ran at {ratio:.2f}x the speed of the second."
    return [*out, verdict, ""]


def _recovery(s: Settings, t: TierResults, targets: list[Target]) -> list[str]:
    out = ["### d.5 Restart after kill -9", ""]
    if not t.recovery:
        return [*out, "Not measured (no nvme or hdd driver; see the notes).", ""]
    out += [f"{RECOVERY_OBJECTS:,} objects of 1,000 to 19,000 bytes stored with `put_many` on "
            "a node over a fresh temporary directory, the node killed with SIGKILL, then "
            f"{s.recovery_runs} time(s): an empty node of the same tier and capacity started "
            "on another fresh directory, then the killed node restarted on its directory "
            "(and killed again after the check). Time = from starting the process to its "
            "first answered PING. Recovered = the tier's `recovered` counter in STATS; 50 "
            "objects read back and compared.", ""]  # fmt: skip
    header = ["tier", "objects", "bytes", "put_many s", "restart to first answer s",
              "empty node s", "restart / empty", "recovered", "dropped corrupt",
              "read back"]  # fmt: skip
    rows = []
    for r in t.recovery:
        restart = float(np.median(r.restart_seconds)) if r.restart_seconds else float("nan")
        empty = float(np.median(r.empty_seconds)) if r.empty_seconds else float("nan")
        runs = ", ".join(f"{x:.3f}" for x in r.restart_seconds)
        rows.append([r.tier, f"{r.objects:,}", format_size(r.stored_bytes),
                     f"{r.put_seconds:.2f}", f"{restart:.3f} ({runs})", f"{empty:.3f}",
                     f"{ratio_of(restart, empty):.2f}x",
                     ", ".join(f"{x:,}" for x in r.recovered),
                     ", ".join(str(x) for x in r.dropped),
                     "yes" if r.read_back_ok else "NO"])  # fmt: skip
    out += [*md_table(header, rows, "l" + "r" * (len(header) - 2) + "l"), ""]
    for r in t.recovery:
        wrong = [x for x in r.recovered if x != r.objects]
        got = wrong[0] if wrong else (r.recovered[0] if r.recovered else 0)
        targets.append(Target(
            f"{r.tier}: objects recovered after kill -9 = objects stored", got, r.objects,
            True, f"{len(r.recovered)} restart(s), read back "
            f"{'ok' if r.read_back_ok else 'WRONG'}", unit="", exact=True,
        ))  # fmt: skip
    return out
