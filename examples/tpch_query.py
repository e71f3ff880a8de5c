"""A TPC-H-style query as serverless stages: scans, an Arrow shuffle by the join key, joins.

TPC-H Q3 (the shipping-priority query): the ten unshipped orders of the BUILDING market
segment with the largest revenue, as of 1995-03-15.

    SELECT l_orderkey, sum(l_extendedprice * (1 - l_discount)) AS revenue,
           o_orderdate, o_shippriority
    FROM customer, orders, lineitem
    WHERE c_mktsegment = 'BUILDING' AND c_custkey = o_custkey AND l_orderkey = o_orderkey
      AND o_orderdate < DATE '1995-03-15' AND l_shipdate > DATE '1995-03-15'
    GROUP BY l_orderkey, o_orderdate, o_shippriority
    ORDER BY revenue DESC, o_orderdate, l_orderkey LIMIT 10

The driver generates customer, orders and lineitem with numpy (TPC-H's row counts and value
ranges at ``--scale``; prices in cents and discounts in percent, so sums are exact) and stores
them in a job as Arrow IPC files, one per input partition. Then, on a FunctionExecutor:

1. a function picks the BUILDING customers and stores their keys in the job (a broadcast);
2. scan functions read a partition (zero-copy when co-located), filter it and project it:
   orders by date and by the broadcast customers, lineitem by ship date and summed per order;
   both return tables of one schema, tagged by side, and ``map_shuffle_reduce(by="orderkey")``
   shuffles them through the job as Arrow IPC, so every order meets its line items;
3. reduce functions join the two sides of their partition and keep their ten best orders;
4. a last function merges the reducers' top tens.

The result is checked against the same query run in one process (DuckDB's SQL, or pyarrow's
joins when DuckDB is not installed).

    python examples/tpch_query.py                 # scale 0.1: 600,000 line items
    python examples/tpch_query.py --scale 1 --reducers 16
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import pocketlib
import pocketlib.arrow as parrow
import pocketlib.serverless as pls
from pocketlib import JobHints, LocalCluster

SEGMENTS = ["AUTOMOBILE", "BUILDING", "FURNITURE", "HOUSEHOLD", "MACHINERY"]
START, END = np.datetime64("1992-01-01"), np.datetime64("1998-08-02")
CUTOFF = np.datetime64("1995-03-15")
#: The shuffled tables' schema: one for both sides of the join, tagged by ``side``.
SIDES = pa.schema([("orderkey", pa.int64()), ("side", pa.int8()), ("revenue", pa.int64()),
                   ("orderdate", pa.date32()), ("shippriority", pa.int32())])  # fmt: skip
LINEITEM, ORDERS = 0, 1


def generate(scale: float, seed: int = 0) -> dict[str, pa.Table]:
    """customer, orders and lineitem, with TPC-H's sizes at ``scale`` (150,000 customers,
    1,500,000 orders and about 6,000,000 line items at scale 1)."""
    rng = np.random.default_rng(seed)
    n_c, n_o = max(10, int(150_000 * scale)), max(100, int(1_500_000 * scale))
    customer = pa.table({
        "c_custkey": np.arange(1, n_c + 1),
        "c_mktsegment": pa.array(np.array(SEGMENTS)[rng.integers(0, 5, n_c)]),
    })  # fmt: skip
    days = int((END - START).astype(int)) - 151
    orderdate = START + rng.integers(0, days, n_o).astype("timedelta64[D]")
    orders = pa.table({
        "o_orderkey": np.arange(1, n_o + 1) * 4 - rng.integers(0, 4, n_o),  # sparse, as TPC-H
        "o_custkey": rng.integers(1, n_c + 1, n_o),
        "o_orderdate": pa.array(orderdate, pa.date32()),
        "o_shippriority": pa.array(rng.integers(0, 2, n_o), pa.int32()),
    })  # fmt: skip
    lines = rng.integers(1, 8, n_o)  # 1 to 7 line items per order
    which = np.repeat(np.arange(n_o), lines)
    n_l = len(which)
    quantity = rng.integers(1, 51, n_l)
    shipped = rng.integers(1, 122, n_l).astype("timedelta64[D]")  # days after the order
    lineitem = pa.table({
        "l_orderkey": orders["o_orderkey"].to_numpy()[which],
        "l_extendedprice": quantity * rng.integers(90_000, 200_000, n_l),  # cents
        "l_discount": rng.integers(0, 11, n_l),  # percent
        "l_shipdate": pa.array(orderdate[which] + shipped, pa.date32()),
    })  # fmt: skip
    return {"customer": customer, "orders": orders, "lineitem": lineitem}


# -- the serverless stages ---------------------------------------------------------------------


def _url(job: pocketlib.Job, key: str) -> str:
    return f"pocket://{job.name}/{key}"


def building_customers(job: pocketlib.Job) -> int:
    """Stage 1: the keys of the BUILDING customers, stored for every orders scan."""
    ticket = job.ticket.to_json()
    customer = parrow.read_table(_url(job, "tpch/customer/0.arrow"), ticket=ticket)
    keys = customer.filter(pc.equal(customer["c_mktsegment"], "BUILDING")).select(["c_custkey"])
    parrow.write_table(keys, _url(job, "tpch/building.arrow"), ticket=ticket)
    return keys.num_rows


def scan(name: str, part: int, job: pocketlib.Job) -> pa.Table:
    """Stage 2 (a mapper): one input partition, filtered, projected to the shuffled schema."""
    ticket = job.ticket.to_json()
    t = parrow.read_table(_url(job, f"tpch/{name}/{part}.arrow"), ticket=ticket)
    cutoff = pa.scalar(CUTOFF.astype(object), pa.date32())
    if name == "orders":
        building = parrow.read_table(_url(job, "tpch/building.arrow"), ticket=ticket)
        t = t.filter(pc.and_(pc.less(t["o_orderdate"], cutoff),
                             pc.is_in(t["o_custkey"], building["c_custkey"])))  # fmt: skip
        return pa.table([t["o_orderkey"], pa.array(np.full(t.num_rows, ORDERS), pa.int8()),
                         pa.nulls(t.num_rows, pa.int64()), t["o_orderdate"],
                         t["o_shippriority"]], schema=SIDES)  # fmt: skip
    t = t.filter(pc.greater(t["l_shipdate"], cutoff))
    # price * (100 - discount): revenue in hundredths of a cent, exact; summed per order here
    # (a combiner) so that each order ships one row.
    revenue = pc.multiply(t["l_extendedprice"], pc.subtract(100, t["l_discount"]))
    lines = pa.table({"orderkey": t["l_orderkey"], "revenue": revenue})
    sums = lines.group_by("orderkey").aggregate([("revenue", "sum")])
    n = sums.num_rows
    return pa.table([sums["orderkey"], pa.array(np.full(n, LINEITEM), pa.int8()),
                     sums["revenue_sum"], pa.nulls(n, pa.date32()),
                     pa.nulls(n, pa.int32())], schema=SIDES)  # fmt: skip


def join_top(rows: pa.Table) -> pa.Table:
    """Stage 3 (a reducer): its partition's orders joined with their line items' revenue,
    summed per order; its ten best."""
    orders = rows.filter(pc.equal(rows["side"], ORDERS)).select(
        ["orderkey", "orderdate", "shippriority"])  # fmt: skip
    lines = rows.filter(pc.equal(rows["side"], LINEITEM)).group_by("orderkey").aggregate(
        [("revenue", "sum")])  # fmt: skip
    lines = pa.table({"orderkey": lines["orderkey"], "revenue": lines["revenue_sum"]})
    joined = lines.join(orders, "orderkey", join_type="inner")
    return _top(joined)


def _top(t: pa.Table, n: int = 10) -> pa.Table:
    order = [("revenue", "descending"), ("orderdate", "ascending"), ("orderkey", "ascending")]
    columns = ["orderkey", "revenue", "orderdate", "shippriority"]
    return t.select(columns).sort_by(order).slice(0, n).combine_chunks()


def merge(tops: list[pa.Table]) -> pa.Table:
    """Stage 4: the reducers' top tens merged into the query's."""
    return _top(pa.concat_tables(tops))


# -- one process ----------------------------------------------------------------------------


def reference(tables: dict[str, pa.Table]) -> tuple[pa.Table, str]:
    """The same query in one process: DuckDB's SQL, else pyarrow's joins."""
    try:
        import duckdb
    except ImportError:
        c, o, lineitem = tables["customer"], tables["orders"], tables["lineitem"]
        cutoff = pa.scalar(CUTOFF.astype(object), pa.date32())
        c = c.filter(pc.equal(c["c_mktsegment"], "BUILDING"))
        o = o.filter(pc.less(o["o_orderdate"], cutoff))
        o = o.join(c, "o_custkey", "c_custkey", join_type="inner")
        lineitem = lineitem.filter(pc.greater(lineitem["l_shipdate"], cutoff))
        rev = pc.multiply(lineitem["l_extendedprice"], pc.subtract(100, lineitem["l_discount"]))
        lineitem = lineitem.append_column("revenue", rev)
        joined = lineitem.join(o, "l_orderkey", "o_orderkey", join_type="inner")
        keys = ["l_orderkey", "o_orderdate", "o_shippriority"]
        sums = joined.group_by(keys).aggregate([("revenue", "sum")])
        names = {"l_orderkey": "orderkey", "revenue_sum": "revenue",
                 "o_orderdate": "orderdate", "o_shippriority": "shippriority"}  # fmt: skip
        return _top(pa.table({new: sums[old] for old, new in names.items()})), "pyarrow"
    con = duckdb.connect()
    for name, table in tables.items():
        con.register(name, table)
    got = con.sql("""
        SELECT l_orderkey AS orderkey,
               sum(l_extendedprice * (100 - l_discount))::BIGINT AS revenue,
               o_orderdate AS orderdate, o_shippriority AS shippriority
        FROM customer, orders, lineitem
        WHERE c_mktsegment = 'BUILDING' AND c_custkey = o_custkey AND l_orderkey = o_orderkey
          AND o_orderdate < DATE '1995-03-15' AND l_shipdate > DATE '1995-03-15'
        GROUP BY l_orderkey, o_orderdate, o_shippriority
        ORDER BY revenue DESC, o_orderdate, l_orderkey LIMIT 10
    """).to_arrow_table()  # fmt: skip
    return got.cast(pa.schema([("orderkey", pa.int64()), ("revenue", pa.int64()),
                               ("orderdate", pa.date32()), ("shippriority", pa.int32())])), \
        "DuckDB"  # fmt: skip


# -- the driver --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.1, help="TPC-H scale factor")
    parser.add_argument("--parts", type=int, default=4, help="input partitions per table")
    parser.add_argument("--reducers", type=int, default=4, help="join functions")
    parser.add_argument("--workers", type=int, default=4, help="functions at once")
    args = parser.parse_args()

    tables = generate(args.scale)
    sizes = {name: t.nbytes for name, t in tables.items()}
    print(f"generated TPC-H scale {args.scale:g}: "
          + ", ".join(f"{name} {t.num_rows:,} rows" for name, t in tables.items()))  # fmt: skip
    capacity = f"{max(64, 4 * sum(sizes.values()) >> 20)}MiB"
    with LocalCluster(node_capacity=capacity) as cluster, cluster.client() as client:
        job = client.register_job("tpch", JobHints(capacity=capacity, max_concurrency=args.workers))
        ticket = job.ticket.to_json()
        items: list[tuple[str, int]] = []
        for name, t in tables.items():
            parts = 1 if name == "customer" else args.parts
            step = -(-t.num_rows // parts)
            for p in range(parts):
                parrow.write_table(t.slice(p * step, step), _url(job, f"tpch/{name}/{p}.arrow"),
                                   ticket=ticket)  # fmt: skip
                if name != "customer":
                    items.append((name, p))
        print(f"stored them in the job as {len(items) + 1} Arrow IPC files")
        started = time.perf_counter()
        with pls.FunctionExecutor(job=job, workers=args.workers) as fexec:
            building = fexec.call_async(building_customers).result()
            print(f"stage 1: {building:,} BUILDING customers broadcast through the job")
            futures = fexec.map_shuffle_reduce(scan, items, join_top, reducers=args.reducers,
                                               by="orderkey", timeout=300)  # fmt: skip
            tops = fexec.get_result(futures)
            print(f"stages 2-3: {len(items)} scans shuffled their rows by orderkey to "
                  f"{args.reducers} joins")  # fmt: skip
            result = fexec.call_async(merge, (tops,)).result()
        took = time.perf_counter() - started
        print(f"stage 4: merged the top tens; the query took {took:.2f} s in functions")
        for row in result.to_pylist():
            print(f"  order {row['orderkey']:>9}  revenue {row['revenue'] / 10_000:>12,.2f}  "
                  f"{row['orderdate']}  priority {row['shippriority']}")  # fmt: skip
        expected, engine = reference(tables)
        same = result.equals(expected)
        left = len(list(job.list("shuffle/")))
        verdict = "identical" if same else "DIFFERENT"
        print(f"checked against {engine} in one process: {verdict}; shuffle objects left: {left}")
        job.deregister()
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
