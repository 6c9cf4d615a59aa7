"""Tumour biology fields (pO2, clonogen density, texture) and the images that observe them.

* CT (HU, int16): tissue HU values, a tumour texture whose amplitude and grain depend on the latent
  radiosensitivity (plus noise not explained by it), the centre's reconstruction blur, noise and HU offset.
* FDG PET (SUV, float32): tumour uptake linear in log10 clonogen density (after the FDG -> clonogen
  density mapping of Toma-Dasu et al. Acta Oncol 2012;51:222 / Lazzeroni et al., here on a log scale);
  blurred by the centre's PSF, with count noise and the centre's SUV calibration.
* FMISO PET (SUV, float32): tumour-to-muscle ratio ``1 + (TMR_max - 1) K / (K + pO2)`` (a
  Michaelis-Menten-type binding curve, as in Toma-Dasu 2012; parameters are assumptions).
* DOSE (Gy, float32): a conformal-plan model (see :func:`plan_dose`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from radiogenomics.synthetic.anatomy import (
    AIR,
    BONE,
    CORD,
    CSF,
    DISC,
    FAT,
    LABEL_GTV,
    MARROW,
    PAROTID,
    SOFT,
    TUMOUR,
    Anatomy,
    smooth_field,
)
from radiogenomics.synthetic.model import PatientLatent, SynthParameters

#: Mean HU per tissue class (typical CT values; assumption within published ranges)
TISSUE_HU = {AIR: -1000.0, FAT: -95.0, SOFT: 45.0, PAROTID: -5.0, BONE: 750.0, MARROW: 230.0,
             CORD: 35.0, CSF: 12.0, TUMOUR: 60.0, DISC: 85.0}
#: FDG SUV per tissue class (typical 60-min uptake; assumption)
TISSUE_FDG = {AIR: 0.0, FAT: 0.35, SOFT: 0.85, PAROTID: 1.6, BONE: 0.5, MARROW: 1.3, CORD: 1.0, CSF: 0.3,
              TUMOUR: 0.0, DISC: 0.5}
#: FMISO SUV per tissue class relative to the blood/muscle background (2-4 h p.i.; assumption)
TISSUE_FMISO = {AIR: 0.0, FAT: 0.45, SOFT: 1.0, PAROTID: 1.15, BONE: 0.55, MARROW: 0.9, CORD: 0.95, CSF: 0.6,
                TUMOUR: 0.0, DISC: 0.6}


def quantise(values: np.ndarray, step: float) -> np.ndarray:
    """float32 rounded to a power-of-two ``step`` (exact in binary: far smaller .nii.gz, no visible change)."""
    return (np.rint(values / step) * step).astype(np.float32)


def _lookup(tissue: np.ndarray, table: dict[int, float]) -> np.ndarray:
    lut = np.zeros(max(table) + 1, dtype=np.float64)
    for k, v in table.items():
        lut[k] = v
    return lut[tissue]


@dataclass
class TumourFields:
    """Voxel fields inside the GTV (flattened in C order over the GTV voxels)."""

    po2_mmhg: np.ndarray
    log10_density: np.ndarray      # clonogens per cm^3
    clonogens: np.ndarray          # per voxel
    texture: np.ndarray            # unit-sd texture field in the GTV box (full box array)
    texture_amp_hu: float


def tumour_fields(rng: np.random.Generator, anatomy: Anatomy, patient: PatientLatent,
                  params: SynthParameters) -> TumourFields:
    """Draw pO2, clonogen density and CT texture inside the tumour."""
    geo = anatomy.geometry
    box = anatomy.gtv_box
    in_gtv = anatomy.labels[box] == LABEL_GTV
    depth = anatomy.gtv_depth
    # pO2: log-normal around the patient's median, lower in the core (diffusion-limited hypoxia)
    f_po2 = smooth_field(rng, depth.shape, params.po2_correlation_mm, geo.spacing_zyx)
    log_po2 = params.po2_gradient * (depth - 0.6) + params.po2_within_log_sd * f_po2
    vals = log_po2[in_gtv]
    log_po2 = log_po2 - float(np.median(vals)) + math.log(patient.po2_median_patient_mmhg)
    po2 = np.clip(np.exp(log_po2[in_gtv]), *params.po2_range_mmhg)
    # clonogen density: log-normal random field around the patient mean, lower in anoxic regions
    f_rho = smooth_field(rng, depth.shape, params.density_correlation_mm, geo.spacing_zyx)
    log10_rho = patient.log10_clonogen_density + params.log10_density_within_sd * f_rho[in_gtv]
    log10_rho = log10_rho - 0.3 * (po2 < 1.0)
    clonogens = 10.0 ** log10_rho * geo.voxel_volume_cc
    # CT texture: amplitude and grain follow radioresistance (logit RSI z-score) with extra noise
    amp = params.texture_amp_hu * math.exp(params.texture_rsi_coupling * patient.rsi_logit_z
                                           + params.texture_amp_noise * rng.standard_normal())
    amp = min(max(amp, params.texture_amp_range_hu[0]), params.texture_amp_range_hu[1])
    corr = params.texture_correlation_mm * math.exp(params.texture_corr_rsi_coupling * patient.rsi_logit_z
                                                    + 0.15 * rng.standard_normal())
    texture = smooth_field(rng, depth.shape, corr, geo.spacing_zyx)
    return TumourFields(po2_mmhg=po2, log10_density=log10_rho, clonogens=clonogens, texture=texture,
                        texture_amp_hu=amp)


def ct_image(rng: np.random.Generator, anatomy: Anatomy, fields: TumourFields, patient: PatientLatent,
             params: SynthParameters) -> np.ndarray:
    """CT in HU (int16)."""
    geo = anatomy.geometry
    hu = _lookup(anatomy.tissue, TISSUE_HU)
    box = anatomy.gtv_box
    in_gtv = anatomy.labels[box] == LABEL_GTV
    tumour_hu = params.tumour_hu_mean + params.tumour_hu_sd * rng.standard_normal()
    sub = hu[box]
    sub[in_gtv] = tumour_hu + fields.texture_amp_hu * fields.texture[in_gtv]
    hu[box] = sub
    # bone/fat texture outside the tumour (anatomical noise, independent of the latent biology)
    hu += 8.0 * smooth_field(rng, geo.shape, 3.0, geo.spacing_zyx) * anatomy.body
    centre = patient.centre
    sigma = [centre.ct_kernel_sigma_mm / s for s in geo.spacing_zyx]
    hu = ndimage.gaussian_filter(hu, sigma=sigma, mode="nearest", truncate=3.0)
    noise = smooth_field(rng, geo.shape, 0.5 * centre.ct_kernel_sigma_mm, geo.spacing_zyx)
    hu += centre.ct_noise_sd * noise + centre.ct_hu_offset
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def _pet(rng: np.random.Generator, anatomy: Anatomy, activity: np.ndarray, fwhm_mm: float, scale: float,
         noise: float) -> np.ndarray:
    geo = anatomy.geometry
    sigma = [fwhm_mm / 2.3548 / s for s in geo.spacing_zyx]
    img = ndimage.gaussian_filter(activity, sigma=sigma, mode="constant", truncate=3.0)
    white = rng.standard_normal(geo.shape)
    img = img + noise * np.sqrt(np.maximum(img, 0.0)) * ndimage.gaussian_filter(white, sigma=0.6)
    return quantise(np.clip(img * scale, 0.0, None), 1.0 / 1024.0)


def fdg_tumour_suv(fields: TumourFields, params: SynthParameters) -> np.ndarray:
    """Noise-free tumour SUV of each GTV voxel: linear in log10 clonogen density, at least ``fdg_suv_min``."""
    suv = params.fdg_suv_at_mean + params.fdg_suv_per_log10 * (fields.log10_density
                                                               - params.log10_density_mean)
    return np.maximum(suv, params.fdg_suv_min)


def fdg_pet(rng: np.random.Generator, anatomy: Anatomy, fields: TumourFields, patient: PatientLatent,
            params: SynthParameters, tumour_suv: np.ndarray | None = None) -> np.ndarray:
    """FDG PET in SUV: tumour uptake linear in log10 clonogen density (:func:`fdg_tumour_suv`), or ``tumour_suv``
    (the GTV voxels' SUV, e.g. at a mid-treatment timepoint)."""
    act = _lookup(anatomy.tissue, TISSUE_FDG)
    box = anatomy.gtv_box
    in_gtv = anatomy.labels[box] == LABEL_GTV
    sub = act[box]
    sub[in_gtv] = fdg_tumour_suv(fields, params) if tumour_suv is None else tumour_suv
    act[box] = sub
    return _pet(rng, anatomy, act, patient.centre.pet_fwhm_mm, patient.centre.pet_fdg_scale, params.pet_noise)


def fmiso_tmr(po2_mmhg: np.ndarray, tmr_max: float, k_mmhg: float) -> np.ndarray:
    """FMISO tumour-to-muscle ratio from pO2: ``1 + (TMR_max - 1) K / (K + pO2)`` (assumption)."""
    return 1.0 + (tmr_max - 1.0) * k_mmhg / (k_mmhg + po2_mmhg)


def fmiso_pet(rng: np.random.Generator, anatomy: Anatomy, fields: TumourFields, patient: PatientLatent,
              params: SynthParameters) -> np.ndarray:
    """FMISO PET in SUV: tumour uptake follows pO2 through :func:`fmiso_tmr`."""
    background = params.fmiso_background_suv * math.exp(0.08 * rng.standard_normal())
    act = _lookup(anatomy.tissue, TISSUE_FMISO) * background
    box = anatomy.gtv_box
    in_gtv = anatomy.labels[box] == LABEL_GTV
    sub = act[box]
    sub[in_gtv] = background * fmiso_tmr(fields.po2_mmhg, params.fmiso_tmr_max, params.fmiso_k_mmhg)
    act[box] = sub
    return _pet(rng, anatomy, act, patient.centre.pet_fwhm_mm + 1.0, patient.centre.pet_fmiso_scale,
                params.pet_noise * 1.5)


def plan_dose(rng: np.random.Generator, anatomy: Anatomy, patient: PatientLatent,
              params: SynthParameters) -> np.ndarray:
    """Dose grid (Gy) of a simple conformal (IMRT-like) plan.

    Prescription on the PTV (GTV + margin) with +-1.5 % heterogeneity, an elective nodal dose
    (~54 Gy/70 Gy SIB) on levels II-IV, exponential fall-off outside the targets, a low-dose bath in the
    body, and optimiser caps on each parotid (a patient-specific mean-dose objective; the ipsilateral
    gland is sometimes not spared) and on the spinal cord. The PTV always keeps its coverage.
    """
    geo = anatomy.geometry
    rx = patient.total_dose_gy
    gtv = anatomy.labels == LABEL_GTV
    d_gtv = ndimage.distance_transform_edt(~gtv, sampling=geo.spacing_zyx)
    margin = float(rng.uniform(*params.ptv_margin_mm))
    falloff = float(rng.uniform(*params.falloff_mm))
    ptv = (d_gtv <= margin) & (anatomy.cord_distance_mm > 5.0)  # PTV cropped from the cord PRV
    scatter = float(rng.uniform(*params.scatter_fraction))
    scatter_len = float(rng.uniform(*params.scatter_length_mm))

    def falloff_profile(distance: np.ndarray) -> np.ndarray:
        d = np.maximum(distance, 0.0)
        return (1.0 - scatter) * np.exp(-d / falloff) + scatter * np.exp(-d / scatter_len)

    high = rx * falloff_profile(d_gtv - margin)
    elective = params.elective_fraction * rx * falloff_profile(anatomy.nodal_distance_mm)
    dose = np.maximum(high, elective)
    bath = float(rng.uniform(*params.low_dose_bath_gy))
    dose = np.maximum(dose, bath)
    sparing = float(rng.uniform(*params.parotid_cap_gy))  # the plan's parotid objective (both glands)
    for name, dist in anatomy.parotid_distance_mm.items():
        ipsilateral = (name == "parotid_l") == (anatomy.gtv_side > 0)
        cap = sparing + 3.0 * float(rng.standard_normal())
        if ipsilateral and rng.random() > params.p_ipsilateral_parotid_spared:
            continue
        dose = np.minimum(dose, cap + 2.5 * dist)
    dose = np.minimum(dose, params.cord_cap_gy + 3.0 * anatomy.cord_distance_mm)
    sigma = [3.0 / s for s in geo.spacing_zyx]
    dose = ndimage.gaussian_filter(dose, sigma=sigma, mode="nearest", truncate=3.0)
    hetero = 1.0 + 0.012 * smooth_field(rng, geo.shape, 6.0, geo.spacing_zyx)
    dose = np.where(ptv, rx * np.clip(hetero, 0.965, 1.05), dose)
    dose = np.where(anatomy.body, dose, 0.0)
    return quantise(np.clip(dose, 0.0, None), 1.0 / 256.0)
