"""The wire format, sans-IO: no sockets, only bytes in and frames out."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocketlib.bodies import (
    ENTRY,
    Entry,
    decode_entries,
    decode_json,
    decode_keys,
    encode_entries,
    encode_json,
    encode_keys,
)
from pocketlib.config import MAX_KEY_BYTES
from pocketlib.errors import InvalidKeyError, ProtocolError, VersionError
from pocketlib.frames import FrameDecoder, Request, Response
from pocketlib.protocol import (
    MAGIC,
    REQUEST_HEADER,
    RESPONSE_HEADER,
    VERSION,
    Flag,
    Op,
    checksum,
    encode_request,
    encode_response,
    unpack_request,
    unpack_response,
    validate_key,
)


def _request(
    op: Op, rid: int, key: bytes = b"", value: bytes = b"", job: bytes = b"job", **kw: int
) -> bytes:
    """A whole request frame: header, job, token, key, and the value for body ops."""
    length = kw.pop("length", len(value))
    return encode_request(op, rid, job, b"t" * 16, key, length=length, **kw) + value


def _raw_header(**over: object) -> bytes:
    """A request header packed by hand, with some fields overridden."""
    fields: dict[str, object] = {
        "magic": MAGIC, "version": VERSION, "op": int(Op.PING), "flags": 0, "key_len": 0,
        "request_id": 1, "job_len": 0, "token_len": 0, "reserved": 0, "offset": 0,
        "length": 0, "ttl_ms": 0, "arg": 0, "checksum": 0,
    }  # fmt: skip
    fields.update(over)
    return REQUEST_HEADER.pack(*fields.values())


def _sample_requests() -> tuple[bytes, list[bytes]]:
    """A stream of several requests of every shape, and each frame's bytes."""
    value = bytes(range(256)) * 3 + b"tail"
    frames = [
        _request(Op.PING, 1, job=b""),
        _request(Op.PUT, 2, b"map-0/part-3", value, value_checksum=checksum(value), ttl_ms=500),
        # GET of a range: ``length`` is the size of the range and no body follows.
        _request(Op.GET, 3, b"map-0/part-3", flags=Flag.RANGE, offset=10, length=100, arg=2),
        _request(Op.LIST, 4, b"prefix/", b"cursor", arg=7),
        _request(Op.PUT, 5, "ключ".encode(), b""),
        _request(Op.MULTI_GET, 6, b"", encode_keys([b"a", b"bb", b""])),
        _request(Op.DELETE, 7, b"k" * MAX_KEY_BYTES),
        _request(Op.STREAM_PUT, 8, b"s", b"chunk" * 10, flags=Flag.MORE, offset=0),
    ]
    return b"".join(frames), frames


def _sample_responses() -> bytes:
    bodies = [b"", b"value bytes" * 20, b"x", b"error message"]
    out = b""
    for i, body in enumerate(bodies):
        out += encode_response(
            i + 1, status=9 if i == 3 else 0, flags=Flag.LZ4 if i == 1 else 0, length=len(body),
            value_checksum=checksum(body), size=len(body) + 5, version=i * 3,
        ) + body  # fmt: skip
    return out


def _decode_all(kind: str, chunks: list[bytes]) -> list[Request | Response]:
    decoder = FrameDecoder(kind)
    frames: list[Request | Response] = []
    for chunk in chunks:
        decoder.feed(chunk)
        frames.extend(decoder)
    assert decoder.buffered == 0
    return frames


# -- headers -----------------------------------------------------------------------------------


def test_request_roundtrip() -> None:
    frame = encode_request(
        Op.PUT, 0xDEADBEEF, b"job", b"token", b"key", flags=Flag.LZ4, offset=3, length=4,
        ttl_ms=1500, arg=99, value_checksum=1 << 63,
    )  # fmt: skip
    h = unpack_request(frame[: REQUEST_HEADER.size])
    assert (h.op, h.flags, h.request_id) == (Op.PUT, Flag.LZ4, 0xDEADBEEF)
    assert (h.job_len, h.token_len, h.key_len) == (3, 5, 3)
    assert (h.offset, h.length, h.ttl_ms, h.arg, h.checksum) == (3, 4, 1500, 99, 1 << 63)
    assert h.var_len == 11
    assert frame[REQUEST_HEADER.size :] == b"jobtokenkey"


def test_response_roundtrip() -> None:
    head = encode_response(
        42, 9, flags=Flag.MORE, length=12, value_checksum=7, size=1 << 40, version=5
    )
    assert len(head) == RESPONSE_HEADER.size
    h = unpack_response(head)
    assert (h.request_id, h.status, h.flags, h.length) == (42, 9, Flag.MORE, 12)
    assert (h.checksum, h.size, h.version) == (7, 1 << 40, 5)


def test_get_length_is_a_range_not_a_body() -> None:
    get = unpack_request(_request(Op.GET, 1, b"k", flags=Flag.RANGE, length=1000)[:56])
    assert get.length == 1000
    assert get.body_len == 0
    put = unpack_request(_request(Op.PUT, 1, b"k", b"v" * 1000)[:56])
    assert put.body_len == 1000
    for op in (Op.STREAM_PUT, Op.MULTI_PUT, Op.MULTI_GET, Op.LIST):
        assert unpack_request(encode_request(op, 1, length=33)[:56]).body_len == 33
    for op in (Op.PING, Op.STAT, Op.EXISTS, Op.DELETE, Op.DELETE_PREFIX, Op.STATS):
        assert unpack_request(encode_request(op, 1, length=33)[:56]).body_len == 0


def test_decoder_does_not_wait_for_a_body_after_a_ranged_get() -> None:
    decoder = FrameDecoder("request")
    decoder.feed(_request(Op.GET, 1, b"k", flags=Flag.RANGE, offset=5, length=1 << 30))
    frame = decoder.next_frame()
    assert isinstance(frame, Request)
    assert (frame.key, frame.value, frame.header.length) == (b"k", b"", 1 << 30)
    assert decoder.buffered == 0


def test_decoder_waits_for_the_whole_body() -> None:
    frame = _request(Op.PUT, 1, b"k", b"0123456789")
    decoder = FrameDecoder("request")
    decoder.feed(frame[:-1])
    assert decoder.next_frame() is None
    decoder.feed(frame[-1:])
    req = decoder.next_frame()
    assert isinstance(req, Request)
    assert (req.job, req.token, req.key, req.value) == ("job", b"t" * 16, b"k", b"0123456789")


def test_bad_magic_is_a_protocol_error() -> None:
    header = _raw_header(magic=b"XX")
    with pytest.raises(ProtocolError) as info:
        unpack_request(header)
    assert type(info.value) is ProtocolError
    decoder = FrameDecoder("request")
    decoder.feed(header)
    with pytest.raises(ProtocolError):
        decoder.next_frame()
    bad = b"XX" + encode_response(1)[2:]
    with pytest.raises(ProtocolError):
        unpack_response(bad)


def test_wrong_version_is_a_version_error() -> None:
    with pytest.raises(VersionError):
        unpack_request(_raw_header(version=VERSION + 1))
    with pytest.raises(VersionError):
        unpack_request(_raw_header(version=0))
    response = bytearray(encode_response(1))
    response[2] = VERSION + 1
    with pytest.raises(VersionError):
        unpack_response(response)
    decoder = FrameDecoder("response")
    decoder.feed(bytes(response))
    with pytest.raises(VersionError):
        decoder.next_frame()


def test_over_long_key_length_is_an_invalid_key_error() -> None:
    unpack_request(_raw_header(key_len=MAX_KEY_BYTES))
    with pytest.raises(InvalidKeyError):
        unpack_request(_raw_header(key_len=MAX_KEY_BYTES + 1))
    decoder = FrameDecoder("request")
    decoder.feed(_raw_header(key_len=0xFFFF))
    with pytest.raises(InvalidKeyError):
        decoder.next_frame()


def test_decoder_refuses_a_body_over_its_limit() -> None:
    decoder = FrameDecoder("request", max_value=100)
    decoder.feed(encode_request(Op.PUT, 1, length=101))
    with pytest.raises(ProtocolError):
        decoder.next_frame()
    decoder = FrameDecoder("response", max_value=100)
    decoder.feed(encode_response(1, length=101))
    with pytest.raises(ProtocolError):
        decoder.next_frame()
    with pytest.raises(ValueError, match="kind"):
        FrameDecoder("neither")


def test_encode_request_refuses_over_long_job_and_token() -> None:
    encode_request(Op.PING, 1, b"j" * 255, b"t" * 255)
    with pytest.raises(ProtocolError):
        encode_request(Op.PING, 1, b"j" * 256)
    with pytest.raises(ProtocolError):
        encode_request(Op.PING, 1, b"j", b"t" * 256)


# -- split invariance --------------------------------------------------------------------------


def test_request_stream_split_at_every_byte_boundary() -> None:
    stream, frames = _sample_requests()
    whole = _decode_all("request", [stream])
    assert len(whole) == len(frames)
    assert [f.header.request_id for f in whole if isinstance(f, Request)] == list(range(1, 9))
    for cut in range(len(stream) + 1):
        assert _decode_all("request", [stream[:cut], stream[cut:]]) == whole, cut


def test_request_stream_fed_a_byte_at_a_time() -> None:
    stream, _ = _sample_requests()
    whole = _decode_all("request", [stream])
    assert _decode_all("request", [stream[i : i + 1] for i in range(len(stream))]) == whole


def test_request_stream_random_splits() -> None:
    stream, _ = _sample_requests()
    whole = _decode_all("request", [stream])
    rng = random.Random(1234)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randrange(1, 12)))
        bounds = [0, *cuts, len(stream)]
        chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
        assert _decode_all("request", chunks) == whole


def test_response_stream_split_at_every_byte_boundary() -> None:
    stream = _sample_responses()
    whole = _decode_all("response", [stream])
    assert [f.header.request_id for f in whole if isinstance(f, Response)] == [1, 2, 3, 4]
    bodies = [f.body for f in whole if isinstance(f, Response)]
    assert bodies == [b"", b"value bytes" * 20, b"x", b"error message"]
    for cut in range(len(stream) + 1):
        assert _decode_all("response", [stream[:cut], stream[cut:]]) == whole


_keys = st.binary(min_size=0, max_size=40)
_values = st.binary(min_size=0, max_size=300)
_frames = st.lists(
    st.tuples(
        st.sampled_from([Op.PUT, Op.GET, Op.LIST, Op.PING, Op.STREAM_PUT, Op.DELETE]),
        _keys,
        _values,
        st.binary(min_size=0, max_size=20),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(frames=_frames, data=st.data())
def test_split_invariance_property(
    frames: list[tuple[Op, bytes, bytes, bytes]], data: st.DataObject
) -> None:
    stream = b""
    expected: list[tuple[int, bytes, bytes, bytes]] = []
    for rid, (op, key, value, job) in enumerate(frames, 1):
        if op == Op.GET:  # a ranged GET announces a length but carries no body
            stream += _request(op, rid, key, job=job, flags=Flag.RANGE, length=len(value) + 7)
            expected.append((rid, job, key, b""))
        elif op in (Op.PUT, Op.LIST, Op.STREAM_PUT):
            stream += _request(op, rid, key, value, job=job)
            expected.append((rid, job, key, value))
        else:
            stream += _request(op, rid, key, job=job)
            expected.append((rid, job, key, b""))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10).map(sorted))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    got = _decode_all("request", chunks)
    assert got == _decode_all("request", [stream])
    decoded = [(f.header.request_id, f.job, f.key, f.value) for f in got if isinstance(f, Request)]
    assert decoded == [(rid, job.decode("utf-8", "replace"), k, v) for rid, job, k, v in expected]


# -- structured bodies -------------------------------------------------------------------------


def _entries() -> list[Entry]:
    return [
        Entry(b"a", b"first value", 0, Flag.LZ4, 11),
        Entry(b"", b"", 9, 0, 0),
        Entry("ключ".encode(), bytes(range(256)), 0, 0, checksum(bytes(range(256)))),
        Entry(b"k" * MAX_KEY_BYTES, b"x", 3, 0, 1 << 63),
        Entry(b"empty-value", b"", 0, 0, 0),
    ]


def test_entries_roundtrip() -> None:
    entries = _entries()
    body = b"".join(bytes(p) for p in encode_entries(entries))
    decoded = decode_entries(body)
    assert [(e.key, bytes(e.value), e.status, e.flags, e.checksum) for e in decoded] == [
        (e.key, bytes(e.value), e.status, e.flags, e.checksum) for e in entries
    ]
    assert decode_entries(b"") == []


def test_entries_keep_large_values_apart_and_decode_them_as_views() -> None:
    """Small values are joined into the buffer of headers; one above 4 KiB is sent as a
    buffer of its own and decoded as a view of the body, not a copy."""
    large = bytes(range(256)) * 80  # 20 KiB
    entries = [Entry(b"s1", b"a" * 100), Entry(b"big", large, 0, Flag.LZ4, 7),
               Entry(b"s2", b"b" * 4096)]  # fmt: skip
    parts = encode_entries(entries)
    assert len(parts) == 3  # headers and s1 | the large value | the header of s2 and s2
    assert parts[1] is large
    decoded = decode_entries(b"".join(bytes(p) for p in parts))
    assert [(e.key, bytes(e.value), e.flags) for e in decoded] == [
        (b"s1", b"a" * 100, 0),
        (b"big", large, Flag.LZ4),
        (b"s2", b"b" * 4096, 0),
    ]
    assert isinstance(decoded[1].value, memoryview)
    assert isinstance(decoded[0].value, bytes)


def test_entries_reject_truncated_bodies() -> None:
    entries = _entries()
    body = b"".join(bytes(p) for p in encode_entries(entries))
    boundaries = {0}
    pos = 0
    for e in entries:
        pos += ENTRY.size + len(e.key) + len(e.value)
        boundaries.add(pos)
    assert pos == len(body)
    for cut in range(len(body)):
        if cut in boundaries:
            # A cut between entries is a shorter, valid body.
            assert len(decode_entries(body[:cut])) == sorted(boundaries).index(cut)
        else:
            with pytest.raises(ProtocolError):
                decode_entries(body[:cut])


def test_keys_roundtrip_and_reject_truncated_bodies() -> None:
    keys = [b"a", b"", "ключ".encode(), b"k" * MAX_KEY_BYTES, b"z" * 300]
    body = encode_keys(keys)
    assert decode_keys(body) == keys
    assert decode_keys(memoryview(body)) == keys
    assert decode_keys(b"") == []
    boundaries = [0]
    for k in keys:
        boundaries.append(boundaries[-1] + 2 + len(k))
    for cut in range(len(body)):
        if cut in boundaries:
            assert decode_keys(body[:cut]) == keys[: boundaries.index(cut)]
        else:
            with pytest.raises(ProtocolError):
                decode_keys(body[:cut])


def test_key_list_refuses_an_over_long_key() -> None:
    body = (MAX_KEY_BYTES + 1).to_bytes(2, "little") + b"k" * (MAX_KEY_BYTES + 1)
    with pytest.raises(ProtocolError):
        decode_keys(body)


def test_json_bodies() -> None:
    obj = {"b": [1, 2], "a": {"x": None}, "c": "é"}
    assert decode_json(encode_json(obj)) == obj
    with pytest.raises(ProtocolError):
        decode_json(b"[1, 2]")
    with pytest.raises(ProtocolError):
        decode_json(b"{not json")


# -- keys --------------------------------------------------------------------------------------


def test_validate_key() -> None:
    assert validate_key("a") == b"a"
    assert validate_key("k" * MAX_KEY_BYTES) == b"k" * MAX_KEY_BYTES
    assert validate_key("é" * (MAX_KEY_BYTES // 2)) == "é".encode() * (MAX_KEY_BYTES // 2)
    with pytest.raises(InvalidKeyError):
        validate_key("")
    with pytest.raises(InvalidKeyError):
        validate_key("k" * (MAX_KEY_BYTES + 1))
    with pytest.raises(InvalidKeyError):
        validate_key("é" * (MAX_KEY_BYTES // 2) + "x")  # 1025 bytes in UTF-8
    with pytest.raises(InvalidKeyError):
        validate_key("lone-surrogate-\ud800")  # cannot be encoded as UTF-8
    for bad in (b"bytes", 42, None, ["k"]):
        with pytest.raises(InvalidKeyError):
            validate_key(bad)  # type: ignore[arg-type]
