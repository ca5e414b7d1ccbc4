"""Which twin runs the per-frame loops: the compiled ``_speedups`` or the pure-Python ``_fallback``.

Every import site takes ``encode_common``, ``Postings``, ``frame_ok``, ``chunk_rows`` and the limits from here, as
msgpack does with ``MSGPACK_PUREPYTHON``. ``MASKSTORE_PUREPYTHON=1`` picks the Python twin. A
missing build, or one made from an older ``_speedups.pyx`` than the one beside it, also gives the
Python twin, with a ``SpeedupsWarning`` that says how to rebuild: the Python twin is the reference
(CI runs the core tests on it), so falling back costs speed, never correctness, while a stale build
could disagree with the Python rules it copies and must not run; raising instead would make
``import maskstore`` fail, so even the CLI could not print its one-line error.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import warnings
from pathlib import Path
from types import ModuleType

from . import _fallback
from ._fallback import MAX_DEPTH, MAX_FRAME_PIXELS, MAX_SIDE, frame_problem  # noqa: F401 (re-exported)

PUREPYTHON_ENV = "MASKSTORE_PUREPYTHON"
REBUILD_HINT = (f"rebuild it with `pip install -e .` in the source tree (a C compiler is needed), or set "
                f"{PUREPYTHON_ENV}=1 to use the pure-Python path on purpose")


class SpeedupsWarning(RuntimeWarning):
    """maskstore runs its pure-Python path because the compiled one is missing or stale."""


def purepython_requested() -> bool:
    return os.environ.get(PUREPYTHON_ENV, "") not in ("", "0")


def compiled() -> ModuleType:
    """The compiled module, or ImportError saying why it cannot be used and how to fix that."""
    try:
        _speedups = importlib.import_module(f"{__package__}._speedups")
    except ModuleNotFoundError:
        raise ImportError(f"maskstore's compiled module _speedups is not built; {REBUILD_HINT}") from None
    except ImportError as exc:  # built, but for another Python or against other libraries
        raise ImportError(f"maskstore's compiled module _speedups cannot be loaded ({exc}); {REBUILD_HINT}") from None
    source = Path(__file__).with_name("_speedups.pyx")
    if source.is_file() and hashlib.sha256(source.read_bytes()).hexdigest() != _speedups.SOURCE_SHA256:
        raise ImportError(f"maskstore's compiled module {Path(_speedups.__file__).name} was built from an older "
                          f"{source.name} than the one in {source.parent}; {REBUILD_HINT}")
    return _speedups


def _choose() -> ModuleType:
    if purepython_requested():
        return _fallback
    try:
        return compiled()
    except ImportError as exc:
        warnings.warn(f"{exc}. Using the pure-Python path meanwhile (slower).", SpeedupsWarning, stacklevel=3)
        return _fallback


implementation = _choose()
IMPLEMENTATION = "compiled" if implementation is not _fallback else "python"
encode_common = implementation.encode_common
Postings = implementation.Postings
frame_ok = implementation.frame_ok
chunk_rows = implementation.chunk_rows
