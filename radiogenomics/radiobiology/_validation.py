"""Input checks shared by the radiobiology modules.

Every public formula validates its inputs here so that a negative dose, a zero number of fractions or a
non-finite value raises :class:`~radiogenomics.errors.InputError` (a ``ValueError``) naming the argument,
instead of propagating a silent NaN into a prescription.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from radiogenomics.errors import InputError

FloatArray = npt.NDArray[np.float64]
#: What the vectorised formulas return: a Python ``float`` for scalar input, a float64 ndarray otherwise.
#: Typed as ``Any`` so callers can index array results or use scalar results without casts.
FloatOrArray: TypeAlias = Any


def as_float_array(value: Any, name: str) -> FloatArray:
    """Convert ``value`` to a float64 array, raising InputError naming ``name`` if it is not numeric."""
    if value is None:
        raise InputError(f"{name} is missing (None).", fix=f"pass a number or an array for {name}.")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numeric, got {type(value).__name__}.",
                         fix=f"pass a number or a numeric array for {name}.") from exc
    return arr


def _first_bad(arr: FloatArray, bad: npt.NDArray[np.bool_]) -> str:
    if arr.ndim == 0:
        return repr(float(arr))
    idx = np.argwhere(bad)[0]
    return f"{float(arr[tuple(idx)])!r} at index {tuple(int(i) for i in idx)}"


def finite(value: Any, name: str) -> FloatArray:
    """Float array of ``value``; every element must be finite."""
    arr = as_float_array(value, name)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise InputError(f"{name} must be finite, got {_first_bad(arr, bad)}.",
                         fix=f"remove NaN/inf values from {name}.")
    return arr


def non_negative(value: Any, name: str) -> FloatArray:
    """Finite and >= 0 (doses, clonogen numbers, pO2)."""
    arr = finite(value, name)
    bad = arr < 0
    if bad.any():
        raise InputError(f"{name} must be >= 0, got {_first_bad(arr, bad)}.",
                         fix=f"pass non-negative values for {name}.")
    return arr


def positive(value: Any, name: str) -> FloatArray:
    """Finite and > 0 (numbers of fractions, alpha/beta, TD50, m)."""
    arr = finite(value, name)
    bad = arr <= 0
    if bad.any():
        raise InputError(f"{name} must be > 0, got {_first_bad(arr, bad)}.",
                         fix=f"pass strictly positive values for {name}.")
    return arr


def probability_open(value: Any, name: str) -> FloatArray:
    """Finite and strictly inside (0, 1) (target TCP, NTCP limits)."""
    arr = finite(value, name)
    bad = (arr <= 0) | (arr >= 1)
    if bad.any():
        raise InputError(f"{name} must lie strictly between 0 and 1, got {_first_bad(arr, bad)}.",
                         fix=f"pass a probability in (0, 1) for {name}, e.g. 0.95.")
    return arr


def out(arr: FloatArray | np.floating[Any]) -> FloatOrArray:
    """Return a Python float for a 0-d result, the array otherwise."""
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim == 0:
        return float(a)
    return a
