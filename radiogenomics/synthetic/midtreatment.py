"""Mid-treatment imaging of a synthetic patient: reoxygenation and metabolic response after K fractions.

Only with ``generate_cohort(..., mid_treatment_fraction=K)`` (``synth --mid-treatment-fraction K``). Everything
here draws from the patient's own *eighth* SeedSequence child, spawned after the seven streams of the baseline
model, so the baseline patient (tables, images, truth, outcomes) is the same with or without the option.

* **Reoxygenation.** The patient's reoxygenation fraction by week 2 (10 fractions), ``r ~ Beta(a, b)`` with
  HPV-dependent shape (:class:`~radiogenomics.synthetic.model.SynthParameters`), is reached at fraction K as
  ``r_K = 1 - (1 - r)^(K/10)`` (a constant reoxygenation rate; assumption). Every GTV voxel below the oxic level
  ``p_ox`` moves that fraction of the way towards it on the log scale, ``ln p_mid = ln p + r_K (ln p_ox - ln p)``;
  oxic voxels keep their pO2. FMISO is then regenerated from the new pO2 with the baseline forward model
  (:func:`radiogenomics.synthetic.imaging.fmiso_pet`).
* **Metabolic response.** Each voxel's clonogens surviving the K delivered fractions of the plan under the
  patient's true LQ with the oxygen effect (``alpha OMF``, ``beta OMF^2``; the OMF averaged over the baseline and
  mid-treatment pO2, i.e. linear reoxygenation over the K fractions):
  ``SF_i = exp(-K (alpha OMF_i d_i + beta OMF_i^2 d_i^2))``, ``d_i`` the voxel's planned dose per fraction. FDG
  falls far less than the clonogens (doomed cells keep metabolising, inflammation adds uptake): the tumour SUV
  above a residual floor is scaled by ``SF_i^kappa`` (``kappa`` 0.07: SF 1e-3 after 10 x 2 Gy keeps about 60 % of
  the excess uptake, a mean GTV SUV fall of about 30 %, as reported at week 2-3; unverified). Voxels falling below
  the MTV threshold leave the metabolically active volume.

Documented in docs/synthetic-cohort.md, "Mid-treatment imaging".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from radiogenomics.radiobiology import omf_from_po2
from radiogenomics.synthetic.imaging import TumourFields, fdg_tumour_suv, fmiso_tmr
from radiogenomics.synthetic.model import PatientLatent, SynthParameters

#: truth.csv columns added by the mid-treatment option (after the baseline columns).
MID_TRUTH_COLUMNS = (
    "mid_fraction", "reoxygenation_fraction", "reoxygenation_fraction_mid", "hypoxic_fraction_baseline",
    "hypoxic_fraction_mid", "mean_po2_baseline_mmhg", "mean_po2_mid_mmhg", "surviving_fraction_mid",
    "alpha_eff_baseline_per_gy", "alpha_eff_mid_per_gy", "tcp_remaining_true", "fmiso_tmr_mean_baseline",
    "fmiso_tmr_mean_mid", "fdg_suv_mean_baseline", "fdg_suv_mean_mid", "mtv_baseline_cc", "mtv_mid_cc",
)


@dataclass(frozen=True)
class MidTreatment:
    """One patient's state after ``fraction`` delivered fractions (voxel arrays over the GTV, C order)."""

    fraction: int
    fields: TumourFields               # the baseline fields with the mid-treatment pO2
    fdg_tumour_suv: np.ndarray         # noise-free tumour SUV at the mid timepoint
    truth: dict[str, float]


def draw_reoxygenation(rng: np.random.Generator, patient: PatientLatent, params: SynthParameters) -> float:
    """The patient's reoxygenation fraction by week 2 (``reoxygenation_reference_fractions`` fractions)."""
    a, b = params.reoxygenation_beta_hpv_pos if patient.hpv == "pos" else params.reoxygenation_beta_hpv_neg
    return float(rng.beta(a, b))


def reoxygenation_at(r: float, fraction: int, params: SynthParameters) -> float:
    """``r_K = 1 - (1 - r)^(K / K_ref)``: the fraction reached after ``fraction`` fractions."""
    return 1.0 - (1.0 - r) ** (fraction / params.reoxygenation_reference_fractions)


def reoxygenate(po2_mmhg: np.ndarray, r_k: float, params: SynthParameters) -> np.ndarray:
    """Voxels below the oxic level move ``r_k`` of the way towards it on the log scale; the others stay."""
    p_ox = params.reoxygenation_oxic_po2_mmhg
    low = po2_mmhg < p_ox
    log_p = np.log(po2_mmhg)
    moved = np.exp(log_p + r_k * (math.log(p_ox) - log_p))
    return np.where(low, moved, po2_mmhg)


def simulate_mid_treatment(rng: np.random.Generator, fraction: int, fields: TumourFields, gtv_dose_gy: np.ndarray,
                           patient: PatientLatent, params: SynthParameters, voxel_volume_cc: float) -> MidTreatment:
    """The patient after ``fraction`` of its ``n_fractions`` planned fractions (``gtv_dose_gy``: the planned total
    dose of each GTV voxel). Draws only the reoxygenation fraction from ``rng``."""
    n = patient.n_fractions
    if not 1 <= fraction < n:
        raise ValueError(f"mid-treatment fraction {fraction} must be in 1..{n - 1} for a {n}-fraction course")
    r = draw_reoxygenation(rng, patient, params)
    r_k = reoxygenation_at(r, fraction, params)
    po2 = fields.po2_mmhg
    po2_mid = reoxygenate(po2, r_k, params)
    omf_base = np.asarray(omf_from_po2(po2), dtype=np.float64)
    omf_mid = np.asarray(omf_from_po2(po2_mid), dtype=np.float64)
    omf_during = 0.5 * (omf_base + omf_mid)
    alpha, beta = patient.alpha_per_gy, patient.beta_per_gy2
    d = gtv_dose_gy.astype(np.float64) / n
    log_sf = -fraction * (alpha * omf_during * d + beta * omf_during ** 2 * d ** 2)
    sf = np.exp(log_sf)
    clonogens = fields.clonogens.astype(np.float64)
    survivors = clonogens * sf
    n0, n_mid = float(clonogens.sum()), float(survivors.sum())
    remaining = n - fraction
    log_remaining = -remaining * (alpha * omf_mid * d + beta * omf_mid ** 2 * d ** 2)
    tcp_remaining = math.exp(-float((survivors * np.exp(log_remaining)).sum()))

    suv_base = fdg_tumour_suv(fields, params)
    floor = params.fdg_response_floor_suv
    suv_mid = floor + (suv_base - floor) * sf ** params.fdg_response_exponent
    threshold = params.mtv_threshold_suv
    tmr_base = fmiso_tmr(po2, params.fmiso_tmr_max, params.fmiso_k_mmhg)
    tmr_mid = fmiso_tmr(po2_mid, params.fmiso_tmr_max, params.fmiso_k_mmhg)
    hypoxic = params.hypoxia_threshold_mmhg
    truth: dict[str, Any] = {
        "mid_fraction": int(fraction), "reoxygenation_fraction": r, "reoxygenation_fraction_mid": r_k,
        "hypoxic_fraction_baseline": float(np.mean(po2 < hypoxic)),
        "hypoxic_fraction_mid": float(np.mean(po2_mid < hypoxic)),
        "mean_po2_baseline_mmhg": float(np.mean(po2)), "mean_po2_mid_mmhg": float(np.mean(po2_mid)),
        "surviving_fraction_mid": n_mid / n0 if n0 > 0 else 1.0,
        "alpha_eff_baseline_per_gy": float((clonogens * alpha * omf_base).sum() / n0) if n0 > 0 else alpha,
        "alpha_eff_mid_per_gy": float((survivors * alpha * omf_mid).sum() / n_mid) if n_mid > 0 else alpha,
        "tcp_remaining_true": tcp_remaining,
        "fmiso_tmr_mean_baseline": float(np.mean(tmr_base)), "fmiso_tmr_mean_mid": float(np.mean(tmr_mid)),
        "fdg_suv_mean_baseline": float(np.mean(suv_base)), "fdg_suv_mean_mid": float(np.mean(suv_mid)),
        "mtv_baseline_cc": float(np.count_nonzero(suv_base >= threshold)) * voxel_volume_cc,
        "mtv_mid_cc": float(np.count_nonzero(suv_mid >= threshold)) * voxel_volume_cc,
    }
    return MidTreatment(fraction=fraction, fields=replace(fields, po2_mmhg=po2_mid), fdg_tumour_suv=suv_mid,
                        truth=truth)
