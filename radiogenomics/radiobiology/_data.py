"""Reading the package's YAML tables (``data/*.yaml``) or a user's file of the same form."""

from __future__ import annotations

import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from radiogenomics.errors import InputError


def read_yaml_table(packaged: str, path: str | Path | None, what: str) -> tuple[Any, str]:
    """The parsed YAML of ``path``, or of the packaged ``data/<packaged>`` when None, and its name for messages.

    An unreadable file or invalid YAML raises InputError naming the file (``what``: e.g. "rails file").
    """
    if path is None:
        text = resources.files("radiogenomics.radiobiology").joinpath(f"data/{packaged}").read_text()
        where = packaged
    else:
        where = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise InputError(f"cannot read {what}: {exc}.", file=where) from exc
    try:
        return yaml.safe_load(text), where
    except yaml.YAMLError as exc:
        raise InputError(f"{what} is not valid YAML: {exc}.", file=where) from exc


def positive_number(row: Mapping[str, Any], key: str, *, where: str, what: str, probability: bool = False) -> float:
    """``row[key]`` of a data table as a finite positive float (< 1 with ``probability``); InputError naming the
    table's file, the row (``what``) and the key otherwise. Booleans are not numbers."""
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{what}.{key} must be a positive number, got {value!r}.", file=where)
    if probability and value >= 1:
        raise InputError(f"{what}.{key} must be a probability < 1, got {value!r}.", file=where)
    return float(value)
