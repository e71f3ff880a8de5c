"""Sizes, addresses and timeouts: the value objects every entry point parses."""

from __future__ import annotations

import pytest

from pocketlib import Address, ConfigError, Timeouts, format_size, parse_size


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
