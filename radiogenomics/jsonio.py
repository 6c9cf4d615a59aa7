"""JSON for the platform's documents: numpy scalars as Python numbers, non-finite floats as null (JSON has no NaN)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and non-finite floats as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_bytes(value: Any) -> bytes:
    """The indented UTF-8 JSON document of ``value`` (:func:`json_safe`; a NaN left over is an error)."""
    return (json.dumps(json_safe(value), indent=1, allow_nan=False) + "\n").encode("utf-8")
