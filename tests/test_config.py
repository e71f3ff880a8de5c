"""Sizes, addresses and timeouts: the value objects every entry point parses."""

from __future__ import annotations

import pytest

from pocketlib import (
    Address,
    ConfigError,
    JobHints,
    Timeouts,
    format_rate,
    format_size,
    parse_size,
    parse_throughput,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0),
        (12345, 12345),
        ("100", 100),
        ("100b", 100),
        ("8GiB", 8 * 1024**3),
        ("8gib", 8 * 1024**3),
        ("512 MB", 512 * 1000**2),
        ("512MiB", 512 * 1024**2),
        ("1.5GiB", 3 * 1024**3 // 2),
        (" 64 KiB ", 64 * 1024),
        ("2k", 2000),
        ("1TiB", 1024**4),
    ],
)
def test_parse_size(text: int | str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "GiB", "8 GiBs", "-1", "1e3", "lots", "8 Gib Gib", True, -5])
def test_parse_size_refuses(bad: int | str) -> None:
    with pytest.raises(ConfigError):
        parse_size(bad)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size("nope")


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
     (256 * 1024**2, "256.0 MiB"), (3 * 1024**3, "3.0 GiB"), (2 * 1024**4, "2.0 TiB")],
)  # fmt: skip
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:7000", "127.0.0.1", 7000),
        ("localhost:1", "localhost", 1),
        ("[::1]:7000", "::1", 7000),
        ("node-3.internal:65535", "node-3.internal", 65535),
    ],
)
def test_address_parse_and_str(text: str, host: str, port: int) -> None:
    a = Address.parse(text)
    assert (a.host, a.port) == (host, port)
    assert str(a) == text
    assert Address.parse(str(a)) == a
    assert Address.parse(a) is a
    assert Address.parse((host, port)) == a


@pytest.mark.parametrize(
    "bad", ["", "7000", "host", "host:", ":7000", "host:0", "host:65536", "host:70a", "host:-1"]
)
def test_address_parse_refuses(bad: str) -> None:
    with pytest.raises(ConfigError):
        Address.parse(bad)


def test_address_is_a_frozen_value() -> None:
    a = Address("h", 1)
    assert a == Address.parse("h:1")
    assert hash(a) == hash(Address("h", 1))
    with pytest.raises(AttributeError):
        a.port = 2  # type: ignore[misc]


def test_timeouts_defaults() -> None:
    t = Timeouts()
    assert t.connect is not None
    assert t.connect > 0
    assert t.io is not None
    assert t.io > 0
    assert Timeouts(io=None).io is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3GB/s", 3 * 10**9),
        ("600Mb/s", 75 * 10**6),  # lower-case b is bits
        ("10Gbps", 1_250_000_000),
        ("1.5 GiB/s", int(1.5 * 2**30)),
        ("200MB", 200 * 10**6),  # "/s" is optional
        ("123", 123),
        (5, 5),
    ],
)
def test_parse_throughput(text: str | int, expected: int) -> None:
    assert parse_throughput(text) == expected


@pytest.mark.parametrize("bad", ["", "fast", "3 GB/h", "-1GB/s", "3XB/s", -5, True, 1.5])
def test_parse_throughput_refuses(bad: object) -> None:
    with pytest.raises(ConfigError):
        parse_throughput(bad)  # type: ignore[arg-type]


def test_format_rate_round_trips_roughly() -> None:
    assert format_rate(3e9) == "3.0 GB/s"
    assert format_rate(512) == "512 B/s"


def test_job_hints_normalise_units() -> None:
    hints = JobHints(capacity="12GB", peak_throughput="24Gb/s", max_concurrency=250)
    assert hints.capacity == 12 * 10**9
    assert hints.peak_throughput == 3 * 10**9
    assert hints.latency_sensitive is True  # Pocket's default
    assert JobHints.from_dict(hints.as_dict()) == hints
    assert JobHints(capacity=1.0e9).capacity == 10**9  # a float of bytes is accepted


@pytest.mark.parametrize(
    "bad",
    [
        {"capacity": -1},
        {"capacity": float("nan")},
        {"capacity": float("inf")},
        {"capacity": "2000000TB"},  # beyond any cluster
        {"capacity": [1]},
        {"peak_throughput": "-3GB/s"},
        {"peak_throughput": "2000000TB/s"},
        {"max_concurrency": 0},
        {"max_concurrency": -4},
        {"max_concurrency": 2.5},
        {"max_concurrency": 10**9},
        {"latency_sensitive": "yes"},
    ],
)
def test_job_hints_refuse_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        JobHints(**bad)  # type: ignore[arg-type]


def test_job_hints_from_dict_refuses_unknown_fields() -> None:
    with pytest.raises(ConfigError, match="bogus"):
        JobHints.from_dict({"bogus": 1})
