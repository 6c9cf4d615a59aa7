"""Dose-volume histograms from a dose grid and ROI masks.

Works with SimpleITK images (dose: float, Gy; mask: UInt8 0/1 or a label map) and with plain numpy arrays
plus the voxel volume in cc. A mask on a different grid with the same orientation is resampled onto the
dose grid with nearest-neighbour interpolation (logged as a warning); a mask with another orientation, or a
numpy mask of another shape, is an error.

Conventions (ICRU 83 / AAPM TG-53 practice): differential DVH bins of width ``bin_width_gy`` starting at
0 Gy, volume in cc at the bin centre; cumulative DVH = volume receiving at least the bin's lower edge.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from radiogenomics.errors import InputError
from radiogenomics.radiobiology._validation import FloatArray, finite, positive
from radiogenomics.radiobiology.ntcp import geud, lkb_ntcp, ntcp_parameters

logger = logging.getLogger(__name__)

DEFAULT_BIN_WIDTH_GY = 0.1


@dataclass(frozen=True)
class DVH:
    """Differential DVH of one structure; cumulative views are derived.

    ``dose_gy``: bin centres (Gy); ``volume_cc``: differential volume per bin (cc); ``bin_width_gy``;
    ``mean_dose_gy``/``min_dose_gy``/``max_dose_gy``: exact values from the voxels; ``resampled``: the mask
    had to be resampled onto the dose grid.
    """

    structure: str
    dose_gy: FloatArray
    volume_cc: FloatArray
    bin_width_gy: float
    voxel_volume_cc: float
    mean_dose_gy: float
    min_dose_gy: float
    max_dose_gy: float
    n_voxels: int
    resampled: bool = False

    @property
    def total_volume_cc(self) -> float:
        return float(self.volume_cc.sum())

    @property
    def bin_edges_gy(self) -> FloatArray:
        return np.arange(self.dose_gy.size + 1, dtype=np.float64) * self.bin_width_gy

    @property
    def relative_volume(self) -> FloatArray:
        """Differential volume as fractions of the structure (sum 1)."""
        total = self.total_volume_cc
        return self.volume_cc / total if total > 0 else np.zeros_like(self.volume_cc)

    @property
    def cumulative_dose_gy(self) -> FloatArray:
        """Lower bin edges (Gy) at which :attr:`cumulative_cc` is given."""
        return self.bin_edges_gy[:-1]

    @property
    def cumulative_cc(self) -> FloatArray:
        """Volume (cc) receiving at least :attr:`cumulative_dose_gy`."""
        return np.cumsum(self.volume_cc[::-1])[::-1]

    def volume_at_least(self, dose_gy: float) -> float:
        """V_D in cc: volume receiving >= ``dose_gy`` (bin resolution)."""
        d = float(finite(dose_gy, "dose_gy"))
        return float(self.volume_cc[self.bin_edges_gy[:-1] >= d - 1e-12].sum())

    def geud(self, a: float) -> float:
        """gEUD (Gy) of this DVH (Niemierko 1997), from the bin centres."""
        return float(geud(self.dose_gy, self.volume_cc, a))

    def ntcp(self, endpoint: str) -> float:
        """LKB NTCP with the tabulated parameters of ``endpoint`` (Burman 1991 et al.)."""
        p = ntcp_parameters(endpoint)
        return float(lkb_ntcp(self.geud(p.a), p.td50_gy, p.m))

    def scaled(self, factor: float) -> DVH:
        """The DVH after multiplying every dose by ``factor`` (prescription scaling); rebinned to the same
        bin width."""
        f = float(positive(factor, "factor"))
        n_edges = int(np.ceil(self.dose_gy.max() * f / self.bin_width_gy)) + 2
        edges = np.arange(n_edges, dtype=np.float64) * self.bin_width_gy
        hist, _ = np.histogram(self.dose_gy * f, bins=edges, weights=self.volume_cc)
        return replace(self, dose_gy=edges[:-1] + 0.5 * self.bin_width_gy, volume_cc=hist.astype(np.float64),
                       mean_dose_gy=self.mean_dose_gy * f, min_dose_gy=self.min_dose_gy * f,
                       max_dose_gy=self.max_dose_gy * f)

    def to_frame(self, patient_id: str | None = None) -> pd.DataFrame:
        """Rows in the cohort ``dvh.csv`` format: patient_id, structure, dose_gy, volume_cc (non-empty bins)."""
        keep = self.volume_cc > 0
        return pd.DataFrame({"patient_id": patient_id, "structure": self.structure,
                             "dose_gy": self.dose_gy[keep], "volume_cc": self.volume_cc[keep]})


def _same_geometry(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol))


def _mask_array(mask: Any, dose: Any, label: int | None, structure: str) -> tuple[np.ndarray, bool]:
    """Boolean mask on the dose grid (numpy z, y, x order) and whether it was resampled."""
    resampled = False
    if isinstance(mask, sitk.Image):
        if not isinstance(dose, sitk.Image):
            raise InputError(f"mask of {structure} is a SimpleITK image but the dose is an array.",
                             fix="pass both as SimpleITK images, or both as numpy arrays.")
        if mask.GetDimension() != dose.GetDimension():
            raise InputError(f"mask of {structure} has dimension {mask.GetDimension()}, dose has "
                             f"{dose.GetDimension()}.")
        if not _same_geometry(mask, dose):
            if not np.allclose(mask.GetDirection(), dose.GetDirection(), atol=1e-4):
                raise InputError(f"mask of {structure} has another orientation than the dose grid.",
                                 fix="resample the mask onto the dose grid explicitly.")
            logger.warning("DVH %s: mask grid differs from the dose grid (size %s vs %s, spacing %s vs %s); "
                           "resampling the mask onto the dose grid with nearest neighbour",
                           structure, mask.GetSize(), dose.GetSize(), mask.GetSpacing(), dose.GetSpacing())
            mask = sitk.Resample(mask, dose, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                 mask.GetPixelID())
            resampled = True
        arr = sitk.GetArrayViewFromImage(mask)
    else:
        arr = np.asarray(mask)
        shape = sitk.GetArrayViewFromImage(dose).shape if isinstance(dose, sitk.Image) else np.shape(dose)
        if arr.shape != tuple(shape):
            raise InputError(f"mask of {structure} has shape {arr.shape}, the dose grid {tuple(shape)}.",
                             fix="pass masks on the dose grid, or SimpleITK images to resample them.")
    sel = arr != 0 if label is None else arr == label
    return np.asarray(sel, dtype=bool), resampled


def compute_dvh(dose: sitk.Image | np.ndarray, mask: sitk.Image | np.ndarray, *,
                voxel_volume_cc: float | None = None, bin_width_gy: float = DEFAULT_BIN_WIDTH_GY,
                structure: str = "roi", label: int | None = None) -> DVH:
    """Differential (and cumulative) DVH of ``mask`` in ``dose`` (Gy), volumes in cc.

    ``dose``: SimpleITK image (float, Gy; voxel volume from its spacing in mm) or numpy array (then
    ``voxel_volume_cc`` is required). ``mask``: UInt8 0/1 image or array (``label`` selects one value of a
    label map; default: any non-zero voxel). An image mask on another grid with the same orientation is
    resampled with nearest neighbour (warning logged, ``DVH.resampled`` set).
    """
    width = float(positive(bin_width_gy, "bin_width_gy"))
    if isinstance(dose, sitk.Image):
        spacing_mm = np.array(dose.GetSpacing(), dtype=np.float64)
        vv = float(np.prod(spacing_mm)) / 1000.0
        if voxel_volume_cc is not None and not np.isclose(vv, voxel_volume_cc, rtol=1e-6):
            raise InputError(f"voxel_volume_cc = {voxel_volume_cc} contradicts the dose image spacing "
                             f"({vv} cc).", fix="leave voxel_volume_cc unset for SimpleITK images.")
        dose_arr = sitk.GetArrayFromImage(dose).astype(np.float64, copy=False)
    else:
        if voxel_volume_cc is None:
            raise InputError("voxel_volume_cc is required for a numpy dose grid.",
                             fix="pass voxel_volume_cc (voxel volume in cc = product of spacings in mm / 1000).")
        vv = float(positive(voxel_volume_cc, "voxel_volume_cc"))
        dose_arr = np.asarray(dose, dtype=np.float64)
    sel, resampled = _mask_array(mask, dose, label, structure)
    values = dose_arr[sel]
    if values.size == 0:
        raise InputError(f"mask of {structure} selects no voxel of the dose grid.",
                         fix="check the mask, its label and its alignment with the dose grid.")
    finite(values, f"dose_gy in {structure}")
    if (values < 0).any():
        raise InputError(f"dose_gy in {structure} has negative values (min {values.min()}).",
                         fix="check the dose grid units and scaling.")
    n_bins = int(np.floor(values.max() / width)) + 1
    idx = np.minimum((values / width).astype(np.int64), n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins).astype(np.float64)
    centres = (np.arange(n_bins, dtype=np.float64) + 0.5) * width
    return DVH(structure=structure, dose_gy=centres, volume_cc=counts * vv, bin_width_gy=width,
               voxel_volume_cc=vv, mean_dose_gy=float(values.mean()), min_dose_gy=float(values.min()),
               max_dose_gy=float(values.max()), n_voxels=int(values.size), resampled=resampled)


def compute_dvhs(dose: sitk.Image | np.ndarray, masks: Mapping[str, sitk.Image | np.ndarray], *,
                 voxel_volume_cc: float | None = None,
                 bin_width_gy: float = DEFAULT_BIN_WIDTH_GY) -> dict[str, DVH]:
    """DVHs of several structures (name -> mask) on one dose grid."""
    return {name: compute_dvh(dose, m, voxel_volume_cc=voxel_volume_cc, bin_width_gy=bin_width_gy,
                              structure=name) for name, m in masks.items()}


def dvh_from_table(table: pd.DataFrame, structure: str, patient_id: str | None = None,
                   bin_width_gy: float | None = None) -> DVH:
    """A :class:`DVH` from rows of the cohort ``dvh.csv`` (differential bins, dose at the bin centre)."""
    rows = table[table["structure"] == structure]
    if patient_id is not None:
        rows = rows[rows["patient_id"].astype(str) == str(patient_id)]
    if rows.empty:
        raise InputError(f"no DVH rows for structure {structure!r}"
                         + (f" of patient {patient_id}" if patient_id else "") + ".")
    dose = finite(rows["dose_gy"].to_numpy(), "dose_gy")
    vol = finite(rows["volume_cc"].to_numpy(), "volume_cc")
    if (dose < 0).any() or (vol < 0).any():
        raise InputError(f"DVH of {structure} has negative dose or volume.")
    order = np.argsort(dose)
    dose, vol = dose[order], vol[order]
    width = float(bin_width_gy) if bin_width_gy else (float(np.min(np.diff(dose))) if dose.size > 1 else 0.0)
    total = float(vol.sum())
    if total <= 0:
        raise InputError(f"DVH of {structure} has zero volume.")
    return DVH(structure=structure, dose_gy=dose, volume_cc=vol, bin_width_gy=width or 1.0,
               voxel_volume_cc=float("nan"), mean_dose_gy=float((dose * vol).sum() / total),
               min_dose_gy=float(dose[vol > 0].min()), max_dose_gy=float(dose[vol > 0].max()),
               n_voxels=0)
