"""Biological maps from PET: clonogen density from FDG, pO2 from FMISO.

Workflow of Lazzeroni M et al., J Nucl Med 2026 (FDG -> clonogen density, FMISO -> pO2, then TCP-based
dose painting), whose conversions build on Toma-Dasu I et al., Acta Oncol 2012;51:222-230. The exact
published parameter values could not be verified: every parameter is exposed, and **all defaults below are
unverified placeholders** to be replaced by calibrated values. Both conversions are plain functions, so a
user can swap in another model with the same signature.

- FDG: piecewise-linear SUV -> clonogen density, ``rho = rho_min + (rho_max - rho_min) *
  clip((SUV - SUV_low)/(SUV_high - SUV_low), 0, 1)``.
- FMISO: Michaelis-Menten-type uptake model ``U(p) = U_oxic + (U_anoxic - U_oxic) K / (K + p)`` (uptake
  falls from U_anoxic at 0 mmHg to U_oxic at high pO2), inverted to ``p = K (U_anoxic - U)/(U - U_oxic)``,
  capped to [0, po2_max_mmhg].

Inputs may be numpy arrays or SimpleITK images; an image in gives an image out with the same geometry.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk

from radiogenomics.errors import InputError
from radiogenomics.radiobiology._validation import FloatArray, finite, non_negative, positive

#: Defaults - all *unverified* (see module docstring).
DEFAULT_DENSITY_MAX_PER_CC = 1.0e7
DEFAULT_DENSITY_MIN_PER_CC = 1.0e5
DEFAULT_SUV_LOW = 2.5
DEFAULT_FMISO_UPTAKE_OXIC = 1.0
DEFAULT_FMISO_UPTAKE_ANOXIC = 3.0
DEFAULT_FMISO_K_MMHG = 2.5
DEFAULT_PO2_MAX_MMHG = 60.0


def _array(value: Any, name: str) -> tuple[FloatArray, sitk.Image | None]:
    if isinstance(value, sitk.Image):
        return sitk.GetArrayFromImage(value).astype(np.float64), value
    return finite(value, name), None


def _wrap(arr: FloatArray, ref: sitk.Image | None) -> Any:
    if ref is None:
        return arr
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(ref)
    return img


def clonogen_density_from_suv(suv: Any, *, density_max_per_cc: float = DEFAULT_DENSITY_MAX_PER_CC,
                              density_min_per_cc: float = DEFAULT_DENSITY_MIN_PER_CC,
                              suv_low: float = DEFAULT_SUV_LOW, suv_high: float | None = None,
                              mask: Any = None) -> Any:
    """Clonogen density (cells/cc) from FDG SUV, piecewise linear (Lazzeroni 2026; Toma-Dasu 2012 form).

    ``rho = rho_min + (rho_max - rho_min) clip((SUV - SUV_low)/(SUV_high - SUV_low), 0, 1)``;
    ``suv_high`` defaults to the maximum SUV inside ``mask`` (all voxels if None). Defaults *unverified*.
    """
    arr, ref = _array(suv, "suv")
    if (arr < 0).any():
        raise InputError("suv must be >= 0.", fix="pass standardised uptake values.")
    rho_max = float(positive(density_max_per_cc, "density_max_per_cc"))
    rho_min = float(non_negative(density_min_per_cc, "density_min_per_cc"))
    if rho_min > rho_max:
        raise InputError("density_min_per_cc must be <= density_max_per_cc.")
    lo = float(non_negative(suv_low, "suv_low"))
    if suv_high is None:
        sel = np.ones(arr.shape, bool) if mask is None else np.asarray(
            sitk.GetArrayViewFromImage(mask) if isinstance(mask, sitk.Image) else mask).astype(bool)
        if sel.shape != arr.shape or not sel.any():
            raise InputError("mask must have the SUV map's shape and select at least one voxel.")
        hi = float(arr[sel].max())
    else:
        hi = float(positive(suv_high, "suv_high"))
    if hi <= lo:
        frac = (arr >= hi).astype(np.float64)
    else:
        frac = np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    return _wrap(rho_min + (rho_max - rho_min) * frac, ref)


def clonogens_from_density(density_per_cc: Any, voxel_volume_cc: float) -> Any:
    """Clonogen number per voxel: density (cells/cc) x voxel volume (cc)."""
    arr, ref = _array(density_per_cc, "density_per_cc")
    if (arr < 0).any():
        raise InputError("density_per_cc must be >= 0.")
    return _wrap(arr * float(positive(voxel_volume_cc, "voxel_volume_cc")), ref)


def _fmiso_params(uptake_oxic: float, uptake_anoxic: float, k_mmhg: float) -> tuple[float, float, float]:
    u_ox = float(non_negative(uptake_oxic, "uptake_oxic"))
    u_an = float(positive(uptake_anoxic, "uptake_anoxic"))
    if u_an <= u_ox:
        raise InputError("uptake_anoxic must be > uptake_oxic (FMISO is retained in hypoxic cells).")
    return u_ox, u_an, float(positive(k_mmhg, "k_mmhg"))


def fmiso_uptake_from_po2(po2_mmhg: Any, *, uptake_oxic: float = DEFAULT_FMISO_UPTAKE_OXIC,
                          uptake_anoxic: float = DEFAULT_FMISO_UPTAKE_ANOXIC,
                          k_mmhg: float = DEFAULT_FMISO_K_MMHG) -> Any:
    """Forward FMISO model ``U(p) = U_oxic + (U_anoxic - U_oxic) K/(K + p)`` (Toma-Dasu 2012 form).

    Uptake as tissue-to-reference ratio. Defaults *unverified*.
    """
    arr, ref = _array(po2_mmhg, "po2_mmhg")
    p = non_negative(arr, "po2_mmhg")
    u_ox, u_an, k = _fmiso_params(uptake_oxic, uptake_anoxic, k_mmhg)
    return _wrap(u_ox + (u_an - u_ox) * k / (k + p), ref)


def po2_from_fmiso(uptake: Any, *, uptake_oxic: float = DEFAULT_FMISO_UPTAKE_OXIC,
                   uptake_anoxic: float = DEFAULT_FMISO_UPTAKE_ANOXIC, k_mmhg: float = DEFAULT_FMISO_K_MMHG,
                   po2_max_mmhg: float = DEFAULT_PO2_MAX_MMHG) -> Any:
    """pO2 (mmHg) from FMISO uptake: inverse Michaelis-Menten ``p = K (U_anoxic - U)/(U - U_oxic)``.

    Lazzeroni 2026 / Toma-Dasu 2012 form; uptake >= U_anoxic gives 0 mmHg, uptake <= U_oxic gives
    ``po2_max_mmhg`` (well oxygenated). Defaults *unverified*.
    """
    arr, ref = _array(uptake, "uptake")
    if (arr < 0).any():
        raise InputError("uptake must be >= 0.")
    u_ox, u_an, k = _fmiso_params(uptake_oxic, uptake_anoxic, k_mmhg)
    p_max = float(positive(po2_max_mmhg, "po2_max_mmhg"))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k * (u_an - arr) / (arr - u_ox)
    p = np.where(arr <= u_ox, p_max, np.clip(p, 0.0, p_max))
    return _wrap(p, ref)
