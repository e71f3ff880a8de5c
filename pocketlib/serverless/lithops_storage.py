"""pocketlib as a Lithops storage backend (``storage='pocket'``).

Lithops finds a storage backend only as the package ``lithops.storage.backends.<name>``, and
its localhost executor copies the installed lithops package for its workers, so the backend is
installed as a two-file shim inside lithops (``pocket lithops install``, or
:func:`install_backend`) that imports the real code from here.

Configuration (the ``pocket`` section of a Lithops config): ``ticket``, a job's ticket (its JSON
or dict; else ``POCKET_TICKET`` in the environment), and ``storage_bucket`` (default
``"pocket"``). A bucket is a key prefix in the job (``<bucket>/<key>``); every call attaches
with the ticket once per process, with no controller round trip.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from ..client.job import Job

__all__ = ["PocketStorageBackend", "install_backend", "load_config"]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")

_SHIM_INIT = '''"""The pocket storage backend: installed by pocketlib (`pocket lithops install`)."""
from pocketlib.serverless.lithops_storage import PocketStorageBackend as StorageBackend

__all__ = ["StorageBackend"]
'''
_SHIM_CONFIG = '''"""The pocket storage backend's configuration: installed by pocketlib."""
from pocketlib.serverless.lithops_storage import load_config

__all__ = ["load_config"]
'''


def install_backend() -> Path:
    """Install the shim into the installed lithops package (idempotent); its directory."""
    try:
        import lithops.storage.backends as backends
    except ImportError:
        raise ConfigError("lithops is not installed: pip install 'pocketlib[lithops]'") from None
    target = Path(next(iter(backends.__path__))) / "pocket"
    target.mkdir(exist_ok=True)
    for name, text in (("__init__.py", _SHIM_INIT), ("config.py", _SHIM_CONFIG)):
        path = target / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return target


def load_config(config_data: dict[str, Any]) -> None:
    """Lithops' hook: defaults of the ``pocket`` section."""
    section = config_data.setdefault("pocket", {})
    section.setdefault("storage_bucket", "pocket")
    if "ticket" not in section and not os.environ.get("POCKET_TICKET"):
        raise ConfigError("the pocket storage backend needs a job's ticket: 'ticket' in the "
                          "pocket section of the Lithops config, or POCKET_TICKET")  # fmt: skip


class PocketStorageBackend:
    """Lithops' storage interface over a pocketlib job."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        ticket = config.get("ticket") or os.environ.get("POCKET_TICKET")
        if not ticket:
            raise ConfigError("the pocket storage backend needs a job's ticket")
        from ..client.client import attached

        self.job = attached(ticket)  # once per process: Lithops builds a backend per call
        self.bucket = str(config.get("storage_bucket", "pocket"))

    # -- buckets ------------------------------------------------------------------------------
    def get_client(self) -> Job:
        return self.job

    def generate_bucket_name(self) -> str:
        return self.bucket

    def create_bucket(self, bucket: str) -> None:
        """Buckets are key prefixes: nothing to create."""

    def head_bucket(self, bucket: str) -> dict[str, Any]:
        return {"ResponseMetadata": {"HTTPStatusCode": 200}}

    # -- objects ------------------------------------------------------------------------------
    def put_object(self, bucket: str, key: str, data: Any) -> None:
        """Store bytes, a str (UTF-8) or what a file-like object reads."""
        if isinstance(data, str):
            data = data.encode()
        elif hasattr(data, "read"):
            with self.job.writer(_key(bucket, key)) as w:  # streamed: larger than memory
                while chunk := data.read(4 << 20):
                    w.write(chunk.encode() if isinstance(chunk, str) else chunk)
            return
        elif not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"cannot store {type(data).__name__}: bytes, str or a file object")
        self.job.put(_key(bucket, key), data)

    def get_object(self, bucket: str, key: str, stream: bool = False,
                   extra_get_args: Mapping[str, Any] | None = None) -> Any:  # fmt: skip
        """The value (a file-like object with ``stream``); ``Range: bytes=L-H`` reads bytes
        L to H inclusive."""
        name = _key(bucket, key)
        try:
            rng = (extra_get_args or {}).get("Range")
            if rng:
                start, end = _parse_range(rng, lambda: self.job.stat(name).size)
                data = self.job.get_range(name, start, end)
            else:
                data = self.job.get(name)
        except NotFoundError:
            raise _no_such_key(bucket, key) from None
        return io.BytesIO(data) if stream else data

    def upload_file(self, file_name: str, bucket: str, key: str | None = None,
                    extra_args: Any = None, config: Any = None) -> bool:  # fmt: skip
        with open(file_name, "rb") as f:
            self.put_object(bucket, key or os.path.basename(file_name), f)
        return True

    def download_file(self, bucket: str, key: str, file_name: str | None = None,
                      extra_args: Any = None, config: Any = None) -> bool:  # fmt: skip
        data = self.get_object(bucket, key)
        path = file_name or key
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return True

    def head_object(self, bucket: str, key: str) -> dict[str, Any]:
        try:
            info = self.job.stat(_key(bucket, key))
        except NotFoundError:
            raise _no_such_key(bucket, key) from None
        return {"content-length": str(info.size), "ETag": f"{info.checksum:016x}",
                "LastModified": info.created}  # fmt: skip

    def delete_object(self, bucket: str, key: str) -> None:
        self.job.delete(_key(bucket, key))

    def delete_objects(self, bucket: str, key_list: list[str]) -> None:
        for key in key_list:
            self.job.delete(_key(bucket, key))

    def list_objects(self, bucket: str, prefix: str | None = None,
                     match_pattern: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
        out = []
        for key in self.list_keys(bucket, prefix):
            if match_pattern is not None and not re.match(match_pattern, key):
                continue
            try:
                size = self.job.stat(_key(bucket, key)).size
            except NotFoundError:
                continue  # deleted since it was listed
            out.append({"Key": key, "Size": size})
        return out

    def list_keys(self, bucket: str, prefix: str | None = None) -> list[str]:
        skip = len(bucket) + 1
        return [k[skip:] for k in self.job.list(_key(bucket, prefix or ""))]


def _key(bucket: str, key: str) -> str:
    return f"{bucket}/{key}"


def _parse_range(rng: str, size: Any) -> tuple[int, int]:
    m = _RANGE.match(rng.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        raise ConfigError(f"unsupported Range {rng!r}: 'bytes=L-H', 'bytes=L-' or 'bytes=-N'")
    if not m.group(1):  # the last N bytes
        total = size()
        return max(0, total - int(m.group(2))), total
    start = int(m.group(1))
    end = int(m.group(2)) + 1 if m.group(2) else size()
    return start, end


def _no_such_key(bucket: str, key: str) -> Exception:
    from lithops.storage.utils import StorageNoSuchKeyError

    return StorageNoSuchKeyError(bucket, key)  # type: ignore[no-any-return]
