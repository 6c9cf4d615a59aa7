"""Comparing records (and other JSON-like values) that two different code paths computed.

Two paths to the same figure (a batch of three patients and a batch of one, the JSON-row and the DataFrame
path, compiled and plain pipelines, a recomputation in the test) may differ in the last bits of a float: which
BLAS kernel a matrix product runs depends on the CPU (``OPENBLAS_CORETYPE``), the array's shape and its memory
layout. Such results are compared with :func:`assert_records_close`: text (identifiers, hashes, flags, URIs),
booleans, ``None`` and integers exactly, floats to a stated relative tolerance, recursively through dicts and
lists. Where one deterministic path runs twice (a cache, a seed, a pickle round trip, identical bytes) tests
keep comparing exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

#: Relative tolerance for floats from different code paths: far above last-bit differences (~1e-16), far below
#: any difference that means something.
REL = 1e-9
#: Absolute tolerance, for values at or near zero.
ABS = 1e-12


def assert_records_close(actual: Any, expected: Any, *, rel: float = REL, abs_tol: float = ABS,
                         ignore: Iterable[str] = ("created_at",)) -> None:
    """``actual`` equals ``expected``: floats to ``rel`` (or ``abs_tol``), NaN equal to NaN, everything else
    exactly; dict keys named in ``ignore`` (at any depth) are left out. Lists of records work too."""
    problems: list[str] = []
    _compare(actual, expected, "", rel, abs_tol, frozenset(ignore), problems)
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise AssertionError(f"records differ (floats to rel={rel:g}, abs={abs_tol:g}):\n  {shown}{more}")


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | np.bool_)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not _is_bool(value)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float | np.floating)


def _compare(a: Any, b: Any, where: str, rel: float, abs_tol: float, ignore: frozenset[str],
             problems: list[str]) -> None:
    here = where or "<top>"
    if isinstance(a, np.ndarray) and a.ndim > 0:
        a = a.tolist()
    if isinstance(b, np.ndarray) and b.ndim > 0:
        b = b.tolist()
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        keys_a = {k for k in a if k not in ignore}
        keys_b = {k for k in b if k not in ignore}
        if keys_a != keys_b:
            problems.append(f"{here}: keys only in actual {sorted(map(str, keys_a - keys_b))}, "
                            f"only in expected {sorted(map(str, keys_b - keys_a))}")
        for key in a:
            if key in keys_b and key in keys_a:
                _compare(a[key], b[key], f"{where}.{key}" if where else str(key), rel, abs_tol, ignore, problems)
        return
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            problems.append(f"{here}: {len(a)} items, expected {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _compare(x, y, f"{where}[{i}]", rel, abs_tol, ignore, problems)
        return
    if _is_bool(a) or _is_bool(b):
        if not (_is_bool(a) and _is_bool(b) and bool(a) == bool(b)):
            problems.append(f"{here}: {a!r} != {b!r}")
        return
    if _is_number(a) and _is_number(b):
        if _is_int(a) and _is_int(b):
            if int(a) != int(b):
                problems.append(f"{here}: {a!r} != {b!r}")
            return
        x, y = float(a), float(b)
        if math.isnan(x) or math.isnan(y):
            if not (math.isnan(x) and math.isnan(y)):
                problems.append(f"{here}: {a!r} != {b!r}")
            return
        if not math.isclose(x, y, rel_tol=rel, abs_tol=abs_tol):
            problems.append(f"{here}: {x!r} != {y!r} (relative difference {abs(x - y) / max(abs(x), abs(y)):.3g})")
        return
    if type(a) is not type(b) and not (isinstance(a, str) and isinstance(b, str)):
        problems.append(f"{here}: {a!r} ({type(a).__name__}) != {b!r} ({type(b).__name__})")
        return
    if a != b:
        problems.append(f"{here}: {a!r} != {b!r}")
