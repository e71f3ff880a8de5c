"""A dict model against the client over a real node, for every registered tier.

Hypothesis drives random sequences of puts (small, large, compressed, with many keys at once),
gets, deletes, prefix deletes, listings and delete-after-reads against one node per tier, and
checks each answer against a plain dict. A failure shrinks to the shortest sequence that
breaks, which is the whole point of a stateful test.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

import pocketlib
from pocketlib.control.processes import NodeProcess
from pocketlib.errors import NotFoundError
from pocketlib.tiers import available_drivers, load_driver

FILE_TIERS = {"nvme", "hdd"}
keys = st.sampled_from([f"{d}/{i}" for d in ("a", "b", "ab") for i in range(6)])
values = st.one_of(
    st.binary(max_size=300),
    st.integers(min_value=60_000, max_value=300_000).map(lambda n: os.urandom(n)),
)


def tiers() -> list[str]:
    """Every registered tier whose driver can be loaded here."""
    names = []
    for name in sorted(available_drivers()):
        try:
            load_driver(name)
        except Exception:
            continue
        names.append(name)
    return names


@pytest.fixture(scope="module", params=tiers())
def tier_node(request: pytest.FixtureRequest) -> Iterator[NodeProcess]:
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        extra = ["--path", tmp] if request.param in FILE_TIERS else []
        if request.param == "s3":  # a node over a real S3 server, as the tests start one
            server = request.getfixturevalue("s3server")
            for name, value in server.env().items():
                mp.setenv(name, value)
            extra = ["--path", f"s3://{request.getfixturevalue('bucket')}/stateful-{os.getpid()}"]
        node = NodeProcess(request.param, "64MiB", extra_args=extra)
        try:
            yield node
        finally:
            node.stop()


class StoreModel(RuleBasedStateMachine):
    """The store must behave like a dict of its puts."""

    address = ""

    @initialize()
    def connect(self) -> None:
        self.job = pocketlib.connect([self.address], job=f"model-{os.getpid()}-{id(self)}")
        self.model: dict[str, bytes] = {}

    @rule(key=keys, value=values, compress=st.booleans())
    def put(self, key: str, value: bytes, compress: bool) -> None:
        self.job.put(key, value, compress=compress)
        self.model[key] = value

    @rule(items=st.dictionaries(keys, st.binary(max_size=200), max_size=6))
    def put_many(self, items: dict[str, bytes]) -> None:
        self.job.put_many(items)
        self.model.update(items)

    @rule(key=keys)
    def get(self, key: str) -> None:
        if key in self.model:
            assert self.job.get(key) == self.model[key]
        else:
            with pytest.raises(NotFoundError):
                self.job.get(key)

    @rule(key=keys)
    def get_and_delete(self, key: str) -> None:
        if key in self.model:
            assert self.job.get(key, delete_after_read=True) == self.model.pop(key)
        assert not self.job.exists(key)

    @rule(key=keys, start=st.integers(0, 400), length=st.integers(0, 400))
    def get_range(self, key: str, start: int, length: int) -> None:
        if key in self.model:
            assert (
                self.job.get_range(key, start, start + length)
                == self.model[key][start : start + length]
            )

    @rule(key=keys)
    def delete(self, key: str) -> None:
        assert self.job.delete(key) == (key in self.model)
        self.model.pop(key, None)

    @rule(prefix=st.sampled_from(["a", "a/", "ab/", "b/1", "zz"]))
    def delete_prefix(self, prefix: str) -> None:
        doomed = [k for k in self.model if k.startswith(prefix)]
        assert self.job.delete_prefix(prefix) == len(doomed)
        for k in doomed:
            del self.model[k]

    @rule(ks=st.lists(keys, max_size=6))
    def get_many(self, ks: list[str]) -> None:
        assert self.job.get_many(ks) == {k: self.model[k] for k in ks if k in self.model}

    @invariant()
    def listing_matches(self) -> None:
        if hasattr(self, "job"):
            assert list(self.job.list(page_size=4)) == sorted(self.model)

    def teardown(self) -> None:
        if hasattr(self, "job"):
            self.job.purge()
            self.job.close()


def test_the_store_behaves_like_a_dict(tier_node: NodeProcess) -> None:
    StoreModel.address = str(tier_node.address)
    run_state_machine_as_test(
        StoreModel,
        settings=settings(
            max_examples=40, stateful_step_count=30, deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )  # fmt: skip
