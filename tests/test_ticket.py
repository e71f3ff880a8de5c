"""Tickets: what a driver hands its functions must survive JSON and refuse garbage."""

from __future__ import annotations

import json

import pytest

from pocketlib import ConfigError, Ticket
from pocketlib.routing import WeightMap


def ticket() -> Ticket:
    return Ticket(
        job="sort-1a2b", name="sort", token=bytes(range(16)),
        maps=(WeightMap(1, {"10.0.0.1:7000": 1.0}),
              WeightMap(2, {"10.0.0.1:7000": 1.0, "10.0.0.2:7000": 3.0})),
        stripe_size=1 << 20, lost=frozenset({"10.0.0.3:7000"}),
        retired=frozenset({"10.0.0.4:7000"}), controller="10.0.0.9:7070",
    )  # fmt: skip


def test_round_trip_through_json() -> None:
    t = ticket()
    text = t.to_json()
    back = Ticket.parse(text)
    assert back == t
    assert Ticket.parse(text.encode()) == t
    assert Ticket.parse(json.loads(text)) == t
    assert Ticket.parse(t) is t
    assert back.version == 2
    assert back.maps[-1].weights["10.0.0.2:7000"] == pytest.approx(0.75)
    assert back.nodes == ["10.0.0.1:7000", "10.0.0.2:7000"]
    assert len(text) < 600  # small enough to pass to thousands of functions


def test_repr_keeps_the_token_out() -> None:
    assert bytes(range(16)).hex() not in repr(ticket())


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "[1, 2]",
        "{}",
        '{"job": "x", "token": "zz", "maps": []}',
        '{"job": "x", "token": "00", "maps": []}',
        '{"job": "x", "token": "00", "maps": [{"version": 0, "weights": {"a:1": 1}}]}',
        '{"job": "x", "token": "00", "maps": [{"version": 1, "weights": {"a:1": -1}}]}',
        '{"job": "x", "token": "00", "maps": [{"version": 1, "weights": {"a:1": 1}}], '
        '"stripe_size": 10}',
    ],
)
def test_malformed_tickets_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"ticket|stripe"):
        Ticket.parse(bad)


def test_versions_must_increase() -> None:
    with pytest.raises(ConfigError):
        Ticket("j", "j", b"", (WeightMap(2, {"a:1": 1.0}), WeightMap(1, {"a:1": 1.0})))
