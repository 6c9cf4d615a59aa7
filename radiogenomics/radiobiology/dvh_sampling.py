"""Dose samples of a structure, the input of its DVH.

Two cases (see ``docs/radiobiology.md``, "DVH"):

* the mask lies on the dose grid (same geometry, or numpy arrays of one shape): each selected dose voxel is
  one sample of its own volume, as before;
* the mask lies on its own grid (typically the 1 mm CT grid under a 2.5-3 mm dose grid): the DVH is computed
  on the structure's grid, the dose interpolated trilinearly at its voxel centres. Voxels on the structure's
  surface are split into ``SUPERSAMPLING``^3 sub-voxels, each with its own interpolated dose, so that the dose
  gradient across the outermost voxel layer is kept. The minimum and maximum dose are taken over the voxel
  centres, the structure's surface half-way between its voxel centres and those of the outside voxels next to
  them (the centres of the exposed voxel faces), and the dose-grid nodes in interior voxels (where a trilinear
  field has its interior extremes); sub-voxel doses beyond that range (outer corners of surface voxels) are
  clipped into it.

Why: DVHs of small structures in steep gradients depend on how the structure is sampled and how the dose is
interpolated (Ebert et al., Phys Med Biol 2010;55:N337-N346, "Comparison of DVH data from multiple
radiotherapy treatment planning systems"; Nelms et al., Med Phys 2015;42:4435-4448, "Methods, software and
datasets to verify DVH calculations against analytical values"). ``tests/test_dvh_accuracy.py`` checks this
module the way Nelms et al. do: linear dose gradients through spheres and cylinders with analytic values.

Trilinear interpolation uses ``scipy.ndimage.map_coordinates(order=1, mode="nearest")`` at the structure's
points; it gives the values of SimpleITK's ``sitkLinear`` resampling (both clamp at the outer half voxel; the
tests check the two agree) but only at the points needed. Structure voxels whose centre lies outside the dose
grid (beyond the outer faces of its voxels) have no dose: up to ``MAX_OUTSIDE_FRACTION`` of the structure they
are left out of the DVH with a warning (``DVH.outside_volume_cc``), more raises :class:`InputError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from radiogenomics.errors import InputError
from radiogenomics.radiobiology._validation import FloatArray, finite

logger = logging.getLogger(__name__)

#: Sub-voxels per axis of each surface voxel of a structure on its own grid.
SUPERSAMPLING = 3
#: Largest fraction of a structure's voxels allowed outside the dose grid (left out of the DVH, with a warning).
MAX_OUTSIDE_FRACTION = 0.01
#: Points interpolated per call (bounds memory on large structures).
_CHUNK_POINTS = 1_000_000
#: Tolerance (in dose-grid voxels) of the inside-the-dose-grid test.
_INSIDE_TOL = 1e-6


@dataclass(frozen=True)
class DoseSamples:
    """Doses (Gy) of a structure's sample points and the volume (cc) each stands for."""

    dose_gy: FloatArray
    volume_cc: FloatArray
    min_dose_gy: float
    max_dose_gy: float
    voxel_volume_cc: float
    n_voxels: int
    interpolated: bool
    outside_volume_cc: float = 0.0


def _checked(values: FloatArray, structure: str) -> FloatArray:
    finite(values, f"dose_gy in {structure}")
    if values.size and values.min() < 0:
        raise InputError(f"dose_gy in {structure} has negative values (min {values.min()}).",
                         fix="check the dose grid units and scaling.")
    return values


def same_grid_samples(dose_arr: FloatArray, sel: np.ndarray, voxel_volume_cc: float,
                      structure: str) -> DoseSamples:
    """One sample per selected dose voxel (mask on the dose grid)."""
    values = _checked(np.asarray(dose_arr[sel], dtype=np.float64), structure)
    if values.size == 0:
        raise InputError(f"mask of {structure} selects no voxel of the dose grid.",
                         fix="check the mask, its label and its alignment with the dose grid.")
    return DoseSamples(dose_gy=values, volume_cc=np.full(values.size, voxel_volume_cc),
                       min_dose_gy=float(values.min()), max_dose_gy=float(values.max()),
                       voxel_volume_cc=voxel_volume_cc, n_voxels=int(values.size), interpolated=False)


def _index_to_index(mask: sitk.Image, dose: sitk.Image) -> tuple[FloatArray, FloatArray]:
    """Affine (A, b) taking a mask continuous index (x, y, z) to the dose continuous index: q = A i + b."""
    dm = np.array(mask.GetDirection(), dtype=np.float64).reshape(3, 3)
    dd = np.array(dose.GetDirection(), dtype=np.float64).reshape(3, 3)
    sm = np.array(mask.GetSpacing(), dtype=np.float64)
    sd = np.array(dose.GetSpacing(), dtype=np.float64)
    to_dose = np.linalg.inv(dd) / sd[:, None]  # physical offset -> dose index
    a = to_dose @ dm @ np.diag(sm)
    b = to_dose @ (np.array(mask.GetOrigin(), dtype=np.float64) - np.array(dose.GetOrigin(), dtype=np.float64))
    return a, b


def _trilinear(dose_arr: FloatArray, q_xyz: FloatArray) -> FloatArray:
    """Dose at dose-grid continuous indices (x, y, z), trilinear, clamped at the grid's outer half voxel."""
    out = np.empty(q_xyz.shape[0], dtype=np.float64)
    for start in range(0, q_xyz.shape[0], _CHUNK_POINTS):
        part = q_xyz[start:start + _CHUNK_POINTS]
        out[start:start + part.shape[0]] = ndimage.map_coordinates(dose_arr, part[:, ::-1].T, order=1,
                                                                   mode="nearest", prefilter=False)
    return out


def _subvoxel_offsets(points_per_axis: int) -> FloatArray:
    """Offsets (voxel units, x/y/z) of the sub-voxel centres of a voxel split ``points_per_axis`` times per axis."""
    axis = (np.arange(points_per_axis) + 0.5) / points_per_axis - 0.5
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)


def _surface_values(dose_arr: FloatArray, q_centres: FloatArray, a: FloatArray,
                    offsets: FloatArray) -> FloatArray:
    """Doses at ``offsets`` around each surface voxel (rows: voxels, columns: offsets), chunked."""
    step = offsets @ a.T  # offsets in dose-index units
    per_chunk = max(1, _CHUNK_POINTS // offsets.shape[0])
    out = np.empty((q_centres.shape[0], offsets.shape[0]), dtype=np.float64)
    for start in range(0, q_centres.shape[0], per_chunk):
        block = q_centres[start:start + per_chunk]
        pts = (block[:, None, :] + step[None, :, :]).reshape(-1, 3)
        out[start:start + block.shape[0]] = _trilinear(dose_arr, pts).reshape(block.shape[0], -1)
    return out


def _exposed_face_values(dose_arr: FloatArray, padded: np.ndarray, idx_crop_zyx: np.ndarray, q: FloatArray,
                         a: FloatArray) -> FloatArray:
    """Doses at the centres of the voxel faces shared with a voxel outside the structure: the structure's surface
    taken half-way between its voxel centres and the outside ones (``padded``: crop with a False border)."""
    values = []
    for axis_zyx in range(3):
        for sign in (-1, 1):
            step_zyx = np.zeros(3, dtype=np.int64)
            step_zyx[axis_zyx] = sign
            neighbour = idx_crop_zyx + 1 + step_zyx
            exposed = ~padded[tuple(neighbour.T)]
            if exposed.any():
                values.append(_trilinear(dose_arr, q[exposed] + 0.5 * (a @ step_zyx[::-1].astype(np.float64))))
    return np.concatenate(values) if values else np.empty(0)


def _nodes_inside(dose_arr: FloatArray, crop: np.ndarray, lo_zyx: np.ndarray, a: FloatArray, b: FloatArray,
                  q_inside: FloatArray) -> FloatArray:
    """Dose values at the dose-grid nodes whose nearest structure voxel belongs to the structure."""
    size_xyz = np.array(dose_arr.shape[::-1])
    first = np.clip(np.floor(q_inside.min(axis=0)), 0, size_xyz - 1).astype(np.int64)
    last = np.clip(np.ceil(q_inside.max(axis=0)), 0, size_xyz - 1).astype(np.int64)
    axes = [np.arange(f, la + 1) for f, la in zip(first, last, strict=True)]
    nodes = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    mask_idx = np.rint((nodes - b) @ np.linalg.inv(a).T).astype(np.int64)[:, ::-1] - lo_zyx  # z, y, x in crop
    ok = np.all((mask_idx >= 0) & (mask_idx < np.array(crop.shape)), axis=1)
    hit = np.zeros(nodes.shape[0], dtype=bool)
    hit[ok] = crop[tuple(mask_idx[ok].T)]
    n = nodes[hit]
    return np.asarray(dose_arr[n[:, 2], n[:, 1], n[:, 0]], dtype=np.float64)


def structure_grid_samples(dose: sitk.Image, dose_arr: FloatArray, mask: sitk.Image, sel: np.ndarray,
                           structure: str, *, max_outside_fraction: float = MAX_OUTSIDE_FRACTION) -> DoseSamples:
    """Samples of a structure on its own grid: trilinear dose at the voxel centres, surface supersampled.

    ``sel``: boolean selection on the mask grid (numpy z, y, x). Raises :class:`InputError` when more than
    ``max_outside_fraction`` of the structure's voxels lie outside the dose grid.
    """
    idx_zyx = np.argwhere(sel)
    if idx_zyx.shape[0] == 0:
        raise InputError(f"mask of {structure} selects no voxel.", fix="check the mask and its label.")
    a, b = _index_to_index(mask, dose)
    q = idx_zyx[:, ::-1].astype(np.float64) @ a.T + b
    size_xyz = np.array(dose.GetSize(), dtype=np.float64)
    inside = np.all((q >= -0.5 - _INSIDE_TOL) & (q <= size_xyz - 0.5 + _INSIDE_TOL), axis=1)
    vv = float(np.prod(mask.GetSpacing())) / 1000.0
    n_out = int((~inside).sum())
    if n_out:
        frac = n_out / inside.size
        msg = (f"{n_out} of the {inside.size} voxels of {structure} ({frac:.2%}, {n_out * vv:.3g} cc) lie "
               "outside the dose grid")
        if frac > max_outside_fraction or n_out == inside.size:
            raise InputError(msg + f"; at most {max_outside_fraction:.2%} may.",
                             fix="extend the dose grid (calculation volume) over the whole structure, or crop "
                                 "the structure to the dose grid.")
        logger.warning("DVH %s: %s; they are left out of the DVH", structure, msg)
    lo = idx_zyx.min(axis=0)
    hi = idx_zyx.max(axis=0) + 1
    crop = sel[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    padded = np.pad(crop, 1, constant_values=False)
    interior = ndimage.binary_erosion(padded, structure=ndimage.generate_binary_structure(3, 1))[1:-1, 1:-1, 1:-1]
    idx_crop = (idx_zyx - lo)[inside]
    on_surface = ~interior[tuple(idx_crop.T)]
    q_in = q[inside]
    centre_values = _trilinear(dose_arr, q_in[~on_surface])
    n_sub = SUPERSAMPLING ** 3
    sub_values = _surface_values(dose_arr, q_in[on_surface], a, _subvoxel_offsets(SUPERSAMPLING)).ravel()
    face_values = _exposed_face_values(dose_arr, padded, idx_crop[on_surface], q_in[on_surface], a)
    node_values = _nodes_inside(dose_arr, interior, lo, a, b, q_in)
    # Dmin/Dmax come from points on or inside the structure's surface: voxel centres, exposed face centres and
    # dose nodes in interior voxels. The outer sub-voxels of a surface voxel reach beyond that surface (by up to
    # 0.58 voxel along a diagonal gradient), so their doses are clipped into [Dmin, Dmax]: the histogram and
    # the extremes then agree.
    surface_centres = _trilinear(dose_arr, q_in[on_surface])
    extremes = _checked(np.concatenate([centre_values, surface_centres, face_values, node_values]), structure)
    sub_values = np.clip(sub_values, extremes.min(), extremes.max())
    values = _checked(np.concatenate([centre_values, sub_values]), structure)
    volume = np.concatenate([np.full(centre_values.size, vv), np.full(sub_values.size, vv / n_sub)])
    return DoseSamples(dose_gy=values, volume_cc=volume, min_dose_gy=float(extremes.min()),
                       max_dose_gy=float(extremes.max()), voxel_volume_cc=vv, n_voxels=int(inside.sum()),
                       interpolated=True, outside_volume_cc=n_out * vv)
