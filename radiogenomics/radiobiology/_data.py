"""Reading the package's YAML tables (``data/*.yaml``) or a user's file of the same form."""

from __future__ import annotations

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
