"""Image geometry comparison (size, spacing, origin, direction)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

ORIGIN_TOL_MM = 1e-3
SPACING_REL_TOL = 1e-4
DIRECTION_TOL = 1e-4


def geometry_differences(a: sitk.Image, b: sitk.Image) -> list[str]:
    """Describe how the grids of `a` and `b` differ; empty when they share one geometry."""
    diffs: list[str] = []
    if a.GetDimension() != b.GetDimension():
        return [f"dimension {a.GetDimension()} vs {b.GetDimension()}"]
    if a.GetSize() != b.GetSize():
        diffs.append(f"size {a.GetSize()} vs {b.GetSize()}")
    sa, sb = np.array(a.GetSpacing()), np.array(b.GetSpacing())
    if not np.allclose(sa, sb, rtol=SPACING_REL_TOL, atol=0.0):
        diffs.append(f"spacing {_fmt(sa)} vs {_fmt(sb)} mm")
    oa, ob = np.array(a.GetOrigin()), np.array(b.GetOrigin())
    if not np.allclose(oa, ob, rtol=0.0, atol=ORIGIN_TOL_MM):
        diffs.append(f"origin {_fmt(oa)} vs {_fmt(ob)} mm")
    if not np.allclose(a.GetDirection(), b.GetDirection(), rtol=0.0, atol=DIRECTION_TOL):
        diffs.append("direction cosines differ")
    return diffs


def same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    return not geometry_differences(a, b)


def physical_to_index(image: sitk.Image, points_mm: np.ndarray) -> np.ndarray:
    """Continuous (x, y, z) voxel indices of physical points (N, 3), vectorised."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = np.array(image.GetSpacing())
    origin = np.array(image.GetOrigin())
    matrix = np.linalg.inv(direction @ np.diag(spacing))
    return (np.asarray(points_mm, dtype=float) - origin) @ matrix.T


def voxel_volume_cc(image: sitk.Image) -> float:
    """Volume of one voxel in cubic centimetres (spacing is in mm)."""
    return float(np.prod(image.GetSpacing())) / 1000.0


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
