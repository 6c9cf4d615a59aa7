"""Dose-volume histograms from a dose grid and ROI masks, and from dvh.csv tables.

Works with SimpleITK images (dose: float, Gy; mask: UInt8 0/1 or a label map) and with plain numpy arrays
plus the voxel volume in cc. A mask on the dose grid selects dose voxels; a mask on its own grid (any
orientation) gets the dose interpolated trilinearly onto it, its surface voxels supersampled
(:mod:`radiogenomics.radiobiology.dvh_sampling`, where the method and its sources are described).

Conventions (ICRU 83 / AAPM TG-53 practice): differential DVH bins ``[k w, (k+1) w)`` from 0 Gy, volume in
cc, ``dose_gy`` the bin centre. Every :class:`DVH` carries explicit bins (lower edge and width per bin), so a
DVH read from a table, scaled, or with gaps keeps its exact bins. Cumulative values (``V_D``, ``D_x``) assume
the dose is spread uniformly inside each bin (linear between bin edges; exact at the edges).
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
from radiogenomics.radiobiology.dvh_sampling import (
    MAX_OUTSIDE_FRACTION,
    DoseSamples,
    same_grid_samples,
    structure_grid_samples,
)
from radiogenomics.radiobiology.ntcp import geud, lkb_ntcp, ntcp_parameters

logger = logging.getLogger(__name__)

DEFAULT_BIN_WIDTH_GY = 0.1
#: Optional dvh.csv column: width (Gy) of each row's bin, written by :meth:`DVH.to_frame`.
BIN_WIDTH_COLUMN = "bin_width_gy"
#: Significant digits kept of a bin width inferred from the spacing of bin centres (drops float noise).
_WIDTH_DIGITS = 9
#: Largest subdivision of the smallest centre spacing tried when inferring a bin width.
_MAX_SUBDIVISION = 1000
#: Tolerance (in bin widths) of a centre on the bin grid anchored at 0 Gy.
_ANCHOR_TOL = 1e-3
#: Relative tolerance of bin-edge checks.
_EDGE_RTOL = 1e-9


@dataclass(frozen=True)
class DVH:
    """Differential DVH of one structure; cumulative views are derived.

    ``dose_gy``: bin centres (Gy, ascending); ``volume_cc``: differential volume per bin (cc);
    ``bin_width_gy``: the nominal (smallest) bin width; ``bin_lower_gy``/``bin_widths_gy``: each bin's lower
    edge and width (default: bins of ``bin_width_gy`` centred on ``dose_gy``); bins do not overlap and may
    leave gaps. ``mean_dose_gy``/``min_dose_gy``/``max_dose_gy``: from the dose samples, not the bins;
    ``resampled``: the dose was interpolated onto the structure's own grid; ``outside_volume_cc``: structure
    volume outside the dose grid, left out of the DVH.
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
    bin_lower_gy: FloatArray | None = None
    bin_widths_gy: FloatArray | None = None
    outside_volume_cc: float = 0.0

    def __post_init__(self) -> None:
        dose = finite(np.asarray(self.dose_gy, dtype=np.float64).ravel(), f"dose_gy of the DVH of {self.structure}")
        vol = finite(np.asarray(self.volume_cc, dtype=np.float64).ravel(),
                     f"volume_cc of the DVH of {self.structure}")
        if dose.shape != vol.shape or dose.size == 0:
            raise InputError(f"DVH of {self.structure}: dose_gy and volume_cc need one value per bin "
                             f"(got {dose.size} and {vol.size}).")
        if self.bin_lower_gy is None:
            widths = np.full(dose.size, float(self.bin_width_gy))
            lower = dose - 0.5 * widths
        else:
            lower = finite(np.asarray(self.bin_lower_gy, dtype=np.float64).ravel(), "bin_lower_gy")
            widths = (np.full(dose.size, float(self.bin_width_gy)) if self.bin_widths_gy is None
                      else finite(np.asarray(self.bin_widths_gy, dtype=np.float64).ravel(), "bin_widths_gy"))
        _check_bins(self.structure, dose, vol, lower, widths)
        for name, value in (("dose_gy", dose), ("volume_cc", vol), ("bin_lower_gy", lower),
                            ("bin_widths_gy", widths)):
            object.__setattr__(self, name, value)

    @property
    def total_volume_cc(self) -> float:
        return float(self.volume_cc.sum())

    @property
    def bin_upper_gy(self) -> FloatArray:
        """Upper edge (Gy) of every bin."""
        return self._lower + self._widths

    @property
    def _lower(self) -> FloatArray:
        assert self.bin_lower_gy is not None  # set in __post_init__
        return self.bin_lower_gy

    @property
    def _widths(self) -> FloatArray:
        assert self.bin_widths_gy is not None  # set in __post_init__
        return self.bin_widths_gy

    @property
    def relative_volume(self) -> FloatArray:
        """Differential volume as fractions of the structure (sum 1)."""
        total = self.total_volume_cc
        return self.volume_cc / total if total > 0 else np.zeros_like(self.volume_cc)

    @property
    def cumulative_dose_gy(self) -> FloatArray:
        """Lower bin edges (Gy) at which :attr:`cumulative_cc` is given."""
        return self._lower

    @property
    def cumulative_cc(self) -> FloatArray:
        """Volume (cc) receiving at least :attr:`cumulative_dose_gy`."""
        return np.cumsum(self.volume_cc[::-1])[::-1]

    def volume_at_least(self, dose_gy: float) -> float:
        """V_D in cc: volume receiving >= ``dose_gy`` (uniform dose inside each bin; exact at bin edges)."""
        d = float(finite(dose_gy, "dose_gy"))
        lower, widths = self._lower, self._widths
        safe = np.where(widths > 0, widths, 1.0)
        frac = np.where(widths > 0, np.clip((lower + widths - d) / safe, 0.0, 1.0), lower >= d)
        return float((self.volume_cc * frac).sum())

    def volume_at_least_pct(self, dose_gy: float) -> float:
        """V_D in percent of the structure volume."""
        return 100.0 * self.volume_at_least(dose_gy) / self.total_volume_cc

    def dose_at_volume(self, volume_pct: float) -> float:
        """D_x (Gy): the minimum dose to the hottest ``volume_pct`` % of the structure, i.e. the highest dose
        D with V_D >= x % (uniform dose inside each bin)."""
        x = float(finite(volume_pct, "volume_pct"))
        if not 0.0 < x <= 100.0:
            raise InputError(f"volume_pct must be in (0, 100], got {x}.")
        target = x / 100.0 * self.total_volume_cc
        above = self.cumulative_cc  # volume at or above each bin's lower edge
        below_next = above - self.volume_cc  # volume above each bin's upper edge
        xs = np.column_stack([self._lower, self.bin_upper_gy]).ravel()
        ys = np.column_stack([above, below_next]).ravel()
        tol = _EDGE_RTOL * self.total_volume_cc
        k = int(np.flatnonzero(ys >= target - tol)[-1])
        if k == ys.size - 1 or ys[k + 1] >= ys[k]:
            return float(xs[k])
        return float(xs[k] + (ys[k] - target) / (ys[k] - ys[k + 1]) * (xs[k + 1] - xs[k]))

    def geud(self, a: float) -> float:
        """gEUD (Gy) of this DVH (Niemierko 1997), from the bin centres."""
        return float(geud(self.dose_gy, self.volume_cc, a))

    def ntcp(self, endpoint: str) -> float:
        """LKB NTCP with the tabulated parameters of ``endpoint`` (Burman 1991 et al.)."""
        p = ntcp_parameters(endpoint)
        return float(lkb_ntcp(self.geud(p.a), p.td50_gy, p.m))

    def scaled(self, factor: float) -> DVH:
        """The DVH after multiplying every dose by ``factor`` (prescription scaling): bin edges, widths and
        centres scale with it, volumes stay, so gEUD scales exactly by ``factor``."""
        f = float(positive(factor, "factor"))
        return replace(self, dose_gy=self.dose_gy * f, bin_width_gy=self.bin_width_gy * f,
                       bin_lower_gy=self._lower * f, bin_widths_gy=self._widths * f,
                       mean_dose_gy=self.mean_dose_gy * f, min_dose_gy=self.min_dose_gy * f,
                       max_dose_gy=self.max_dose_gy * f)

    def to_frame(self, patient_id: str | None = None) -> pd.DataFrame:
        """Rows in the cohort ``dvh.csv`` format (patient_id, structure, dose_gy at the bin centre, volume_cc;
        non-empty bins) plus the optional ``bin_width_gy`` column, so :func:`dvh_from_table` restores the bins."""
        keep = self.volume_cc > 0
        return pd.DataFrame({"patient_id": patient_id, "structure": self.structure,
                             "dose_gy": self.dose_gy[keep], "volume_cc": self.volume_cc[keep],
                             BIN_WIDTH_COLUMN: self._widths[keep]})


def _check_bins(structure: str, dose: FloatArray, vol: FloatArray, lower: FloatArray, widths: FloatArray) -> None:
    """Bins must be ascending, non-overlapping, with non-negative widths and volumes, centred on ``dose``."""
    if lower.shape != dose.shape or widths.shape != dose.shape:
        raise InputError(f"DVH of {structure}: bin_lower_gy and bin_widths_gy need one value per bin.")
    tol = _EDGE_RTOL * max(1.0, float(np.abs(dose).max()))
    if (vol < 0).any() or (widths < 0).any():
        raise InputError(f"DVH of {structure} has a negative volume or bin width.")
    if np.any(np.abs(lower + 0.5 * widths - dose) > tol):
        raise InputError(f"DVH of {structure}: dose_gy must be the bin centres (lower edge + width / 2).")
    if np.any(lower[1:] < lower[:-1] + widths[:-1] - tol):
        raise InputError(f"DVH of {structure}: bins overlap or are not in ascending dose order.",
                         fix="give one row per bin, sorted by dose, with widths no larger than the spacing.")


def _histogram(samples: DoseSamples, width: float) -> tuple[FloatArray, FloatArray]:
    """Bins ``[k w, (k+1) w)`` from 0 Gy: (centres, volume per bin). Samples within 1e-9 bin of an edge count
    into the upper bin (float noise)."""
    n_bins = int(np.floor(samples.dose_gy.max() / width + 1e-9)) + 1
    idx = np.minimum(np.floor(samples.dose_gy / width + 1e-9).astype(np.int64), n_bins - 1)
    volume = np.bincount(idx, weights=samples.volume_cc, minlength=n_bins).astype(np.float64)
    return (np.arange(n_bins, dtype=np.float64) + 0.5) * width, volume


def _samples(dose: sitk.Image | np.ndarray, mask: sitk.Image | np.ndarray, voxel_volume_cc: float | None,
             label: int | None, structure: str, max_outside_fraction: float) -> DoseSamples:
    """The structure's dose samples: dose voxels (mask on the dose grid) or the mask grid (trilinear)."""
    if isinstance(dose, sitk.Image):
        vv = float(np.prod(np.array(dose.GetSpacing(), dtype=np.float64))) / 1000.0
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
    if isinstance(mask, sitk.Image):
        if not isinstance(dose, sitk.Image):
            raise InputError(f"mask of {structure} is a SimpleITK image but the dose is an array.",
                             fix="pass both as SimpleITK images, or both as numpy arrays.")
        if mask.GetDimension() != dose.GetDimension():
            raise InputError(f"mask of {structure} has dimension {mask.GetDimension()}, dose has "
                             f"{dose.GetDimension()}.")
        sel = _selection(sitk.GetArrayViewFromImage(mask), label)
        if _same_geometry(mask, dose):
            return same_grid_samples(dose_arr, sel, vv, structure)
        if mask.GetDimension() != 3:
            raise InputError(f"mask of {structure} is {mask.GetDimension()}-D on another grid than the dose.",
                             fix="pass 3-D images, or a mask on the dose grid.")
        logger.debug("DVH %s: mask grid (size %s, spacing %s) differs from the dose grid (size %s, spacing %s); "
                     "interpolating the dose onto the mask grid", structure, mask.GetSize(), mask.GetSpacing(),
                     dose.GetSize(), dose.GetSpacing())
        return structure_grid_samples(dose, dose_arr, mask, sel, structure, max_outside_fraction=max_outside_fraction)
    arr = np.asarray(mask)
    if arr.shape != dose_arr.shape:
        raise InputError(f"mask of {structure} has shape {arr.shape}, the dose grid {dose_arr.shape}.",
                         fix="pass masks on the dose grid, or SimpleITK images (a mask on its own grid gets the "
                             "dose interpolated onto it).")
    return same_grid_samples(dose_arr, _selection(arr, label), vv, structure)


def _selection(arr: np.ndarray, label: int | None) -> np.ndarray:
    return np.asarray(arr != 0 if label is None else arr == label, dtype=bool)


def _same_geometry(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol))


def compute_dvh(dose: sitk.Image | np.ndarray, mask: sitk.Image | np.ndarray, *,
                voxel_volume_cc: float | None = None, bin_width_gy: float = DEFAULT_BIN_WIDTH_GY,
                structure: str = "roi", label: int | None = None,
                max_outside_fraction: float = MAX_OUTSIDE_FRACTION) -> DVH:
    """Differential (and cumulative) DVH of ``mask`` in ``dose`` (Gy), volumes in cc.

    ``dose``: SimpleITK image (float, Gy; voxel volume from its spacing in mm) or numpy array (then
    ``voxel_volume_cc`` is required and the mask must be an array of the same shape). ``mask``: UInt8 0/1
    image or array (``label`` selects one value of a label map; default: any non-zero voxel). A mask image on
    another grid keeps its grid: the dose is interpolated trilinearly onto it, surface voxels supersampled
    (``DVH.resampled``); more than ``max_outside_fraction`` of its voxels outside the dose grid raises.
    """
    width = float(positive(bin_width_gy, "bin_width_gy"))
    samples = _samples(dose, mask, voxel_volume_cc, label, structure, float(max_outside_fraction))
    centres, volume = _histogram(samples, width)
    mean = float((samples.dose_gy * samples.volume_cc).sum() / samples.volume_cc.sum())
    return DVH(structure=structure, dose_gy=centres, volume_cc=volume, bin_width_gy=width,
               voxel_volume_cc=samples.voxel_volume_cc, mean_dose_gy=mean, min_dose_gy=samples.min_dose_gy,
               max_dose_gy=samples.max_dose_gy, n_voxels=samples.n_voxels, resampled=samples.interpolated,
               outside_volume_cc=samples.outside_volume_cc)


def compute_dvhs(dose: sitk.Image | np.ndarray, masks: Mapping[str, sitk.Image | np.ndarray], *,
                 voxel_volume_cc: float | None = None,
                 bin_width_gy: float = DEFAULT_BIN_WIDTH_GY) -> dict[str, DVH]:
    """DVHs of several structures (name -> mask) on one dose grid."""
    return {name: compute_dvh(dose, m, voxel_volume_cc=voxel_volume_cc, bin_width_gy=bin_width_gy,
                              structure=name) for name, m in masks.items()}


def infer_bin_width_gy(centres_gy: Any) -> float:
    """Bin width (Gy) of a table of bin centres that may list only the non-empty bins.

    Rule: with ``s`` the smallest spacing between distinct centres, the widest ``w = s / m`` (m = 1, 2, ...,
    ``_MAX_SUBDIVISION``) for which every centre sits at ``(k + 1/2) w`` (bins ``[k w, (k+1) w)`` from 0 Gy, the
    convention of :func:`compute_dvh` and of the synthetic generator; within ``_ANCHOR_TOL`` of a bin width);
    if there is none (irregular or shifted bins), ``s`` itself, each bin centred on its dose. Widths are rounded
    to 9 significant digits. One centre: 0 (a point dose).
    """
    c = np.unique(np.asarray(centres_gy, dtype=np.float64))
    if c.size < 2:
        return 0.0
    s = float(np.diff(c).min())
    for m in range(1, _MAX_SUBDIVISION + 1):
        q = 2.0 * c * m / s  # odd integers when the centres are (k + 1/2) (s / m)
        nearest = np.rint(q)
        if np.all(np.abs(q - nearest) <= 2.0 * _ANCHOR_TOL) and np.all(nearest % 2 == 1):
            return float(f"{s / m:.{_WIDTH_DIGITS}g}")
    return float(f"{s:.{_WIDTH_DIGITS}g}")


def dvh_from_table(table: pd.DataFrame, structure: str, patient_id: str | None = None,
                   bin_width_gy: float | None = None) -> DVH:
    """A :class:`DVH` from rows of the cohort ``dvh.csv`` (differential bins, dose at the bin centre).

    Each row is a bin centred on its ``dose_gy``. Its width: the row's ``bin_width_gy`` column when the table
    has one (written by :meth:`DVH.to_frame`; irregular bins allowed), else ``bin_width_gy``, else inferred
    from the structure's centres (:func:`infer_bin_width_gy`). Rows may list only the non-empty bins; a single
    row without a width is a point dose.
    """
    rows = table[table["structure"] == structure]
    if patient_id is not None:
        rows = rows[rows["patient_id"].astype(str) == str(patient_id)]
    where = f"structure {structure!r}" + (f" of patient {patient_id}" if patient_id else "")
    pid = None if patient_id is None else str(patient_id)
    if rows.empty:
        raise InputError(f"no DVH rows for {where}.", patient_id=pid)
    dose = finite(rows["dose_gy"].to_numpy(dtype=np.float64), "dose_gy")
    vol = finite(rows["volume_cc"].to_numpy(dtype=np.float64), "volume_cc")
    if (dose < 0).any() or (vol < 0).any():
        raise InputError(f"DVH of {where} has negative dose or volume.", patient_id=pid)
    order = np.argsort(dose, kind="stable")
    dose, vol = dose[order], vol[order]
    if np.any(np.diff(dose) == 0):
        raise InputError(f"DVH of {where} lists dose {dose[:-1][np.diff(dose) == 0][0]} Gy twice.", patient_id=pid,
                         fix="give one row per bin (pass patient_id when the table holds several patients).")
    if BIN_WIDTH_COLUMN in rows.columns and rows[BIN_WIDTH_COLUMN].notna().all():
        widths = finite(rows[BIN_WIDTH_COLUMN].to_numpy(dtype=np.float64), BIN_WIDTH_COLUMN)[order]
    else:
        w = float(positive(bin_width_gy, "bin_width_gy")) if bin_width_gy is not None else infer_bin_width_gy(dose)
        widths = np.full(dose.size, w)
    total = float(vol.sum())
    if total <= 0:
        raise InputError(f"DVH of {where} has zero volume.", patient_id=pid)
    occupied = vol > 0
    try:
        return DVH(structure=structure, dose_gy=dose, volume_cc=vol, bin_width_gy=float(widths.min()),
                   voxel_volume_cc=float("nan"), mean_dose_gy=float((dose * vol).sum() / total),
                   min_dose_gy=float(dose[occupied].min()), max_dose_gy=float(dose[occupied].max()),
                   n_voxels=0, bin_lower_gy=dose - 0.5 * widths, bin_widths_gy=widths)
    except InputError as exc:
        raise InputError(exc.reason, patient_id=pid, fix=exc.fix) from exc
