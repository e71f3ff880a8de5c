"""Test kits for code built on pocketlib.

:mod:`pocketlib.testing.conformance` holds :class:`TierConformance`, the behaviour every
:class:`~pocketlib.tiers.TierDriver` must show. It needs pytest, so it is imported only by
test suites::

    from pocketlib.testing.conformance import TierConformance
"""

__all__: list[str] = []
