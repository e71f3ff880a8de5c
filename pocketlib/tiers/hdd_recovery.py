"""Start-up of the HDD tier (see :mod:`pocketlib.tiers.hdd` for the directory layout).

:class:`HddRecovery`, mixed into the driver, takes a directory into service: it refuses one
that cannot be written or whose disk cannot hold the capacity, removes what a crash left in
``tmp/``, rebuilds the index from the headers of the files in ``objects/`` (moving damaged ones
to ``corrupt/``), and keeps the ceiling in ``DIR/version`` above every version handed out, so
versions never repeat across restarts.
"""

from __future__ import annotations

import os
import sys

from ..errors import ConfigError
from .base import ObjectMeta
from .hdd_files import charge, read_version, remove_temps, scan_objects, write_version
from .hdd_state import File, HddState
from .objindex import Entry

__all__ = ["HddRecovery"]

#: Versions are handed out below a ceiling kept in DIR/version, raised this much at a time.
_VERSION_STEP = 1 << 20


class HddRecovery(HddState):
    """The HDD tier's start: checks of the directory, recovery of the index, version ceiling."""

    path: str
    _tmp_dir: str
    _version_path: str
    _recovery_verify_max: int
    #: The highest version the tier may hand out before it raises (and persists) the ceiling.
    _version_ceiling: int
    recovered: int
    dropped: int
    removed_temps: int

    def _start(self) -> None:
        try:
            # A directory that cannot be written is refused now, not at the first put.
            probe = os.path.join(self._tmp_dir, f"probe-{os.getpid()}")
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600))
            os.unlink(probe)
            self._recover()
            self._raise_version_ceiling()
        except OSError as exc:
            raise ConfigError(
                f"cannot use {self.path} for the hdd tier: {exc.strerror or exc}"
            ) from exc
        self._check_space(self.path)
        ix = self._index
        if ix.used > ix.capacity:
            print(
                f"pocket hdd tier: {ix.used} bytes stored in {self.path} exceed the capacity "
                f"{ix.capacity}; new puts are refused until objects are deleted",
                file=sys.stderr,
            )

    def _check_space(self, path: str) -> None:
        """ConfigError unless the file system of ``path`` has room for the capacity (less what
        the tier already stores there)."""
        try:
            st = os.statvfs(path)
        except OSError as exc:
            raise ConfigError(f"cannot use {self.path} for the hdd tier: {exc.strerror}") from exc
        free = st.f_bavail * st.f_frsize
        used, capacity = self._index.used, self._index.capacity
        if capacity > free + used:
            stored = f" (besides {used} bytes already stored)" if used else ""
            raise ConfigError(
                f"{self.path} has {free} bytes free{stored}, too few for a capacity of "
                f"{capacity}; lower --capacity or free space"
            )

    def _recover(self) -> None:
        """Rebuild the index from the object files; remove what a crash left in tmp/."""
        self.removed_temps += remove_temps(self._tmp_dir)
        ix = self._index
        scan = scan_objects(self._objects_dir, self._recovery_verify_max, self._move_aside)
        self.dropped += scan.dropped
        ix.version = max(read_version(self._version_path), scan.version)
        for header, name in scan.found:
            meta = ObjectMeta(
                header.size, header.checksum, header.flags, header.version, header.created,
                header.expires,
            )  # fmt: skip
            stored = Entry(
                meta, File(name, header.data_checksum), charge(header.size), header.job,
                header.key,
            )  # fmt: skip
            self._insert(stored)
            ix.used += stored.charged
        ix.peak = ix.used
        self.recovered = len(scan.found)

    def _raise_version_ceiling(self) -> None:
        """Persist a new ceiling above every version handed out so far (lock held or at
        start): after a crash, versions continue above it, so a reader's pin never matches a
        value it did not read."""
        ceiling = self._index.version + _VERSION_STEP
        write_version(self._version_path, ceiling)
        self._version_ceiling = ceiling
