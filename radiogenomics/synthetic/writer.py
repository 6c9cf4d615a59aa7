"""Atomic, deterministic writers for the cohort files (NIfTI via SimpleITK, CSV, YAML)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import SimpleITK as sitk
import yaml


class Grid(Protocol):
    """What a writer needs of a grid: (x, y, z) spacing and origin in mm (the model's Geometry, an ImageGrid)."""

    @property
    def spacing(self) -> tuple[float, float, float]: ...

    @property
    def origin(self) -> tuple[float, float, float]: ...

#: gzip level for .nii.gz (speed over size; the gzip header of ITK's writer carries no timestamp)
COMPRESSION_LEVEL = 6


def _tmp_name(path: Path, suffix: str) -> Path:
    return path.with_name(f".tmp-{os.getpid()}-{path.name[: -len(suffix)]}{suffix}")


def write_nifti(array: np.ndarray, geometry: Grid, path: Path) -> None:
    """Write ``array`` (indexed [z, y, x]) as .nii.gz with the grid's spacing/origin, identity direction.

    ITK's gzip stream carries no timestamp (mtime 0), so equal arrays give byte-identical files.
    """
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    tmp = _tmp_name(path, ".nii.gz")
    try:
        sitk.WriteImage(image, str(tmp), True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    tmp = _tmp_name(path, ".csv")
    try:
        frame.to_csv(tmp, index=False, lineterminator="\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_yaml(data: dict[str, Any], path: Path) -> None:
    tmp = _tmp_name(path, ".yaml")
    try:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
