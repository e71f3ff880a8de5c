"""The public surface: what ``import pocketlib`` offers, costs, and raises."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from importlib.metadata import version

import pytest

import pocketlib
from pocketlib import errors


def test_all_names_exist_and_are_sorted() -> None:
    names = pocketlib.__all__
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(pocketlib, name), name


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from pocketlib import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(pocketlib.__all__)


def test_public_names_import_from_a_fresh_interpreter() -> None:
    code = (
        "import pocketlib\n"
        "for name in pocketlib.__all__:\n"
        "    exec(f'from pocketlib import {name}')\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_import_is_light() -> None:
    code = "import json, sys\nimport pocketlib\nprint(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    for heavy in ("numpy", "tqdm", "pocketlib.node.server", "pocketlib.workloads.sort", "pytest"):
        assert heavy not in loaded, f"import pocketlib imports {heavy}"


def test_version() -> None:
    assert pocketlib.__version__ == version("pocketlib")


def _error_classes() -> list[type[BaseException]]:
    return [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__ == errors.__name__
    ]


def test_every_error_is_a_pocket_error() -> None:
    classes = _error_classes()
    assert len(classes) >= 17
    for cls in classes:
        assert issubclass(cls, errors.PocketError), cls
    for name in errors.__all__:
        obj = getattr(errors, name)
        if inspect.isclass(obj):
            assert obj in classes
    # Every error class is also exported from the package root.
    for cls in classes:
        assert getattr(pocketlib, cls.__name__) is cls


def test_status_codes_are_unique_and_nonzero() -> None:
    statuses = [cls.status for cls in _error_classes()]  # type: ignore[attr-defined]
    assert len(set(statuses)) == len(statuses)
    assert 0 not in statuses  # 0 is success on the wire


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_error_for_status_round_trips(cls: type[errors.PocketError]) -> None:
    exc = errors.error_for_status(cls.status, "message")
    assert type(exc) is cls
    assert str(exc) == "message"
    assert errors.status_for_error(exc) == cls.status


def test_unknown_status_and_foreign_errors() -> None:
    assert type(errors.error_for_status(250, "?")) is errors.ServerError
    assert errors.status_for_error(RuntimeError("boom")) == errors.ServerError.status


def test_builtin_bases() -> None:
    assert issubclass(errors.NotFoundError, KeyError)
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.RequestError, ValueError)
    assert issubclass(errors.ConnectError, ConnectionError)
    assert issubclass(errors.PocketTimeoutError, TimeoutError)
    assert issubclass(errors.VersionError, errors.ProtocolError)
    assert issubclass(errors.InvalidKeyError, errors.RequestError)
    assert issubclass(errors.ConflictError, errors.RequestError)
    assert issubclass(errors.UnknownJobError, errors.AccessError)
    assert issubclass(errors.TokenError, errors.AccessError)
    assert str(errors.NotFoundError("plain")) == "plain"  # not KeyError's quoted repr
