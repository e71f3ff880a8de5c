"""Every registered tier driver passes the public conformance suite.

The drivers are read from ``available_drivers()`` (built-ins and the ``pocketlib.tiers``
entry points), so a newly registered driver is tested without touching this file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pocketlib.errors import ConfigError
from pocketlib.testing.conformance import TierConformance
from pocketlib.tiers import TierDriver, available_drivers, load_driver

DRIVERS = sorted(available_drivers())


def test_the_builtin_dram_driver_is_registered() -> None:
    assert "dram" in DRIVERS


@pytest.mark.parametrize("name", DRIVERS)
def test_driver_loads_under_its_own_name(name: str) -> None:
    cls = load_driver(name)
    assert issubclass(cls, TierDriver)
    assert cls.name == name


def test_unknown_driver_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no-such-tier"):
        load_driver("no-such-tier")


@pytest.fixture(params=DRIVERS)
def driver_cls(request: pytest.FixtureRequest) -> type[TierDriver]:
    name: str = request.param
    return load_driver(name)


class TestRegisteredDriver(TierConformance):
    """The conformance suite, once per registered driver."""

    @pytest.fixture(autouse=True)
    def _bind_driver(self, driver_cls: type[TierDriver], tmp_path: Path) -> None:
        self.driver_cls = driver_cls
        self.tmp_path = tmp_path
        self.made = 0

    def make_tier(self, capacity: int) -> TierDriver:
        try:
            return self.driver_cls.from_options(capacity)
        except ConfigError:
            # A file-backed driver needs a --path: give each tier a directory of its own.
            self.made += 1
            path = self.tmp_path / f"tier-{self.made}"
            path.mkdir()
            try:
                return self.driver_cls.from_options(capacity, str(path))
            except ConfigError:
                # Neither a capacity nor a directory will do: a driver that needs a server
                # (S3) runs this suite in its own module, against a real one.
                pytest.skip(f"{self.driver_cls.name} needs a server: see its own test module")
