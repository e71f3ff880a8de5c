"""Distributed compilation, gg-style: compile C files in parallel functions, link in a last one.

One of the three applications of the Pocket paper. The driver puts the sources into a job;
each compile function gets one source from the job, runs the system compiler on it in its own
scratch directory and puts the object file back; the link function gets every object, links the
program and puts the executable. Nothing passes through the driver but keys. The program is
then run to check it.

    python examples/distributed_compile.py              # 24 generated C files
    python examples/distributed_compile.py --files 400  # a larger build
    python examples/distributed_compile.py --backend lambda  # functions in local Lambdas
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import pocketlib
import pocketlib.serverless as pls
from pocketlib import JobHints, LocalCluster


def generate(files: int) -> dict[str, str]:
    """``files`` C sources: file i defines f_i(x); main() sums every f_i(i)."""
    sources = {}
    for i in range(files):
        sources[f"src/f{i}.c"] = (
            f"int f{i}(int x) {{\n    int acc = {i};\n"
            f"    for (int k = 0; k < x % 7; k++) acc += k * {i % 13 + 1};\n"
            "    return acc;\n}\n"
        )
    decls = "".join(f"int f{i}(int);\n" for i in range(files))
    calls = "".join(f"    total += f{i}({i});\n" for i in range(files))
    sources["src/main.c"] = (
        f"#include <stdio.h>\n{decls}int main(void) {{\n    long total = 0;\n{calls}"
        '    printf("%ld\\n", total);\n    return 0;\n}\n'
    )
    return sources


def expected_total(files: int) -> int:
    return sum(i + sum(k * (i % 13 + 1) for k in range(i % 7)) for i in range(files))


def compile_one(source: str, job: pocketlib.Job) -> str:
    """A function: one source from the job, compiled; its object file back into the job."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, os.path.basename(source))
        with open(src, "wb") as f:
            f.write(job.get(source, delete_after_read=True))
        obj = src[:-2] + ".o"
        subprocess.run(["cc", "-O2", "-c", src, "-o", obj], check=True, capture_output=True)
        key = "obj/" + os.path.basename(obj)
        with open(obj, "rb") as f:
            job.put(key, f.read())
    return key


def link(objects: list[str], job: pocketlib.Job) -> str:
    """The last function: every object file from the job, linked; the program into the job."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for key, data in job.get_many(objects, delete_after_read=True).items():
            path = os.path.join(tmp, os.path.basename(key))
            with open(path, "wb") as f:
                f.write(data)
            paths.append(path)
        program = os.path.join(tmp, "program")
        subprocess.run(["cc", *sorted(paths), "-o", program], check=True, capture_output=True)
        with open(program, "rb") as f:
            job.put("bin/program", f.read())
    return "bin/program"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=24, help="C files to compile")
    parser.add_argument("--workers", type=int, default=4, help="functions at once")
    parser.add_argument("--backend", default="processes", choices=["processes", "lambda"])
    args = parser.parse_args()
    if shutil.which("cc") is None:
        print("distributed_compile: no C compiler (cc) on PATH", file=sys.stderr)
        return 1
    sources = generate(args.files)
    with LocalCluster(node_capacity="256MiB") as cluster, cluster.client() as client:
        job = client.register_job("compile", JobHints(capacity="64MiB",
                                                      max_concurrency=args.workers))  # fmt: skip
        job.put_many({k: v.encode() for k, v in sources.items()})
        lambda_args = {"env": {"PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}}
        started = time.perf_counter()
        with pls.FunctionExecutor(args.backend, job=job, workers=args.workers,
                                  lambda_args=lambda_args) as fexec:  # fmt: skip
            objects = fexec.get_result(fexec.map(compile_one, sorted(sources)))
            program = fexec.call_async(link, (objects,)).result()
        took = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "program")
            with open(path, "wb") as f:
                f.write(job.get(program))
            os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
            printed = subprocess.run([path], capture_output=True, text=True, check=True).stdout
        ok = int(printed) == expected_total(args.files)
        left = len(list(job.list()))
        print(f"compiled {len(objects)} files in parallel functions and linked them in "
              f"{took:.2f} s ({args.backend}); the program printed {printed.strip()}: "
              f"{'correct' if ok else 'WRONG'}; objects left in the job: {left - 1}")  # fmt: skip
        job.deregister()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
