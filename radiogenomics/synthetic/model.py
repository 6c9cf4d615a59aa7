"""Latent patient parameters of the synthetic head-and-neck cohort and the population they are drawn from.

Every population value lives in :class:`SynthParameters` with a comment giving its source, or saying
that it is an assumption of this generator (see ``docs/synthetic-cohort.md``). Per-centre nuisance
parameters (scanner offsets, reconstruction kernels, expression batches) are :class:`Centre` objects
drawn once per cohort; per-patient truth is a :class:`PatientLatent` drawn from the patient's own
random stream, so patient *i* is the same whatever the cohort size or the number of workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from radiogenomics.radiobiology import alpha_from_rsi

#: (total dose Gy, fractions, weight): definitive H&N regimens of 66-70 Gy in 30-35 fractions (70 Gy/35 fx
#: is the conventional standard; 69.96 Gy/33 fx = 2.12 Gy is a common simultaneous-integrated-boost
#: schedule; 66 Gy/30 fx = 2.2 Gy; 66 Gy/33 and 68 Gy/34 fx). Weights: assumption of this generator.
DEFAULT_REGIMENS: tuple[tuple[float, int, float], ...] = (
    (70.0, 35, 0.45),
    (66.0, 33, 0.15),
    (69.96, 33, 0.15),
    (66.0, 30, 0.10),
    (68.0, 34, 0.15),
)


@dataclass(frozen=True)
class SynthParameters:
    """Population parameters of the generative model (documented in ``docs/synthetic-cohort.md``)."""

    # --- centres (batch effects) -------------------------------------------------------------
    n_centres: int = 4
    centre_weights: tuple[float, ...] = (0.35, 0.30, 0.20, 0.15)
    ct_hu_offset_sd: float = 12.0          # HU calibration differences between scanners (assumption)
    ct_noise_sd_range: tuple[float, float] = (8.0, 22.0)   # HU, image noise in soft tissue (typical CT)
    ct_kernel_sigma_mm_range: tuple[float, float] = (0.3, 0.9)  # reconstruction-kernel blur (assumption)
    pet_scale_sd: float = 0.08             # SUV calibration differences (log-normal sd; assumption, ~EARL range)
    pet_fwhm_mm_range: tuple[float, float] = (5.0, 8.0)    # PET resolution (clinical PET/CT)
    origin_offset_mm: float = 15.0         # per-centre couch/origin offset (assumption)
    expr_centre_shift_sd: float = 0.30     # global log2 shift per centre (batch)
    expr_centre_gene_sd: float = 0.15      # gene-specific log2 shift per centre (batch)

    # --- clinical covariates (typical H&N SCC cohorts, e.g. oropharynx series) -----------------
    age_mean: float = 61.0
    age_sd: float = 9.0
    p_male: float = 0.78
    p_hpv_pos: float = 0.55
    t_stage_probs: tuple[float, float, float, float] = (0.15, 0.35, 0.30, 0.20)
    #: equivalent-sphere GTV radius (mm) mean per T stage (T1..T4) and its sd (assumption: 3-45 cc)
    gtv_radius_mm: tuple[float, float, float, float] = (9.0, 12.5, 16.0, 20.0)
    gtv_radius_sd_mm: float = 1.8
    regimens: tuple[tuple[float, int, float], ...] = DEFAULT_REGIMENS

    # --- radiosensitivity: logit(RSI) ~ Normal; RSI -> alpha via GARD (Scott 2017) ------------
    rsi_logit_mean: float = -0.30          # median RSI ~0.43 (Eschrich 2009 / Scott 2017 cohorts: ~0.1-0.8)
    rsi_logit_sd: float = 0.55
    rsi_logit_hpv_shift: float = -0.35     # HPV+ more radiosensitive (HPV- gets -0.5 x this; assumption)
    rsi_min: float = 0.08
    rsi_max: float = 0.75                  # < exp(-4 beta) = 0.819 so that alpha > 0
    beta_per_gy2: float = 0.05             # Scott et al. 2017

    # --- hypoxia: GTV pO2 (Nordsmark et al. 2005: median tumour pO2 ~ 5-15 mmHg) -----------------
    po2_median_mmhg: float = 11.0          # population median of the patient's median pO2
    po2_patient_log_sd: float = 0.65       # between-patient sd of ln(median pO2)
    po2_hpv_log_shift: float = 0.25        # HPV+ slightly better oxygenated (assumption)
    po2_gradient: float = 1.6              # ln-pO2 difference rim vs core (assumption: hypoxic core)
    po2_within_log_sd: float = 0.75        # spatial ln-pO2 heterogeneity (smooth random field)
    po2_correlation_mm: float = 3.0
    po2_range_mmhg: tuple[float, float] = (0.2, 90.0)
    hypoxia_threshold_mmhg: float = 10.0

    # --- clonogens: effective density (per cm^3), calibrated to 60-80 % local control ----------
    log10_density_mean: float = 5.9
    log10_density_sd: float = 0.45
    log10_density_within_sd: float = 0.25
    density_correlation_mm: float = 4.0

    # --- imaging links -----------------------------------------------------------------------
    tumour_hu_mean: float = 62.0           # contrast-enhanced SCC ~ 55-75 HU (assumption)
    tumour_hu_sd: float = 6.0
    texture_amp_hu: float = 16.0           # heterogeneity amplitude at the population-mean RSI
    texture_rsi_coupling: float = 0.45     # ln amplitude per sd of logit(RSI): resistant = coarser, more heterogeneous
    texture_amp_noise: float = 0.35        # ln-scale noise not explained by RSI (imperfect signal)
    texture_amp_range_hu: tuple[float, float] = (3.0, 60.0)
    texture_correlation_mm: float = 2.5
    texture_corr_rsi_coupling: float = 0.25
    fdg_suv_at_mean: float = 7.0           # tumour SUV at the population-mean clonogen density
    fdg_suv_per_log10: float = 4.5         # SUV per decade of clonogen density (linear in log density)
    fdg_suv_min: float = 1.8
    fmiso_tmr_max: float = 3.5             # tumour-to-muscle ratio at anoxia (assumption)
    fmiso_k_mmhg: float = 3.0              # half-maximal binding pO2 (assumption, Michaelis-Menten form)
    fmiso_background_suv: float = 1.05
    pet_noise: float = 0.12                # relative noise ~ coefficient * sqrt(SUV)

    # --- plan ------------------------------------------------------------------------------------
    ptv_margin_mm: tuple[float, float] = (7.0, 11.0)   # GTV -> CTV (5 mm) + CTV -> PTV (3-5 mm)
    falloff_mm: tuple[float, float] = (6.0, 12.0)       # steep dose fall-off length outside the PTV
    scatter_fraction: tuple[float, float] = (0.25, 0.40)  # share of the slow (scatter/leakage) component
    scatter_length_mm: tuple[float, float] = (35.0, 60.0)
    elective_fraction: float = 0.77        # elective nodal dose / prescription (54/70 Gy SIB)
    p_unilateral_neck: float = 0.5         # unilateral elective neck, for a lateralised T1-2 tumour
    parotid_cap_gy: tuple[float, float] = (8.0, 50.0)  # optimiser's parotid objective (per plan)
    p_ipsilateral_parotid_spared: float = 0.5
    cord_cap_gy: float = 42.0
    low_dose_bath_gy: tuple[float, float] = (2.0, 7.0)  # minimum dose in the irradiated neck

    # --- toxicity ----------------------------------------------------------------------------
    tox_log_sd: float = 0.22               # ln dose-modifying susceptibility (assumption)
    #: dysphagia grade >= 2: LKB on pharyngeal constrictor mean dose (unverified; TD50/m chosen to give
    #: ~+20 %/10 Gy above 55 Gy as in Levendag et al. Radiother Oncol 2007;85:64, QUANTEC PCM < 50 Gy)
    dysphagia_td50_gy: float = 56.0
    dysphagia_m: float = 0.35
    dysphagia_n: float = 1.0
    #: ordinal grades: P(grade >= g) = LKB(TD50 * factor_g); grade 2 uses the tabulated TD50
    grade_td50_factors: tuple[float, float, float, float] = (0.55, 1.0, 1.35, 1.8)

    # --- mid-treatment imaging (generate_cohort(mid_treatment_fraction=K) only) ---------------------
    #: reoxygenation fraction r by week 2 ~ Beta(a, b): HPV+ mean 0.33, HPV- mean 0.2 (assumption, calibrated so
    #: that about half of the HPV+ patients hypoxic at baseline resolve by fraction 10, as in the FMISO re-scans
    #: of Riaz et al. JNCI 2021 / Lee et al. JCO 2024;42:940 (30 ROC); unverified numbers)
    reoxygenation_beta_hpv_pos: tuple[float, float] = (1.5, 3.0)
    reoxygenation_beta_hpv_neg: tuple[float, float] = (1.0, 4.0)
    reoxygenation_reference_fractions: int = 10   # r is reached after this many fractions (week 2)
    reoxygenation_oxic_po2_mmhg: float = 30.0      # the oxic level voxels move towards (assumption)
    fdg_response_exponent: float = 0.07    # tumour SUV excess x SF^kappa (partial metabolic response; unverified)
    fdg_response_floor_suv: float = 1.5    # residual uptake of the responding tumour bed (inflammation; assumption)
    mtv_threshold_suv: float = 2.5         # metabolically active volume: tumour SUV >= 2.5 (common fixed threshold)

    # --- outcome timing ------------------------------------------------------------------------
    failure_median_months: float = 10.0    # most H&N local failures occur within 2 years
    failure_log_sd: float = 0.55
    accrual_months: float = 48.0
    min_followup_months: float = 12.0
    dropout_rate_per_month: float = 0.004


@dataclass(frozen=True)
class Centre:
    """One acquiring centre: its scanner calibration, image quality and expression batch."""

    name: str
    ct_hu_offset: float
    ct_noise_sd: float
    ct_kernel_sigma_mm: float
    pet_fdg_scale: float
    pet_fmiso_scale: float
    pet_fwhm_mm: float
    origin_offset_mm: tuple[float, float, float]
    expr_shift: float
    expr_gene_shift_seed: int


def _offset(rng: np.random.Generator, half_range: float) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in rng.uniform(-half_range, half_range, 3))
    return (x, y, z)


def draw_centres(rng: np.random.Generator, params: SynthParameters) -> tuple[Centre, ...]:
    """The cohort's centres (drawn once per cohort from the cohort stream)."""
    centres = []
    for k in range(params.n_centres):
        centres.append(Centre(
            name=f"CTR{k + 1:02d}",
            ct_hu_offset=float(rng.normal(0.0, params.ct_hu_offset_sd)),
            ct_noise_sd=float(rng.uniform(*params.ct_noise_sd_range)),
            ct_kernel_sigma_mm=float(rng.uniform(*params.ct_kernel_sigma_mm_range)),
            pet_fdg_scale=float(math.exp(rng.normal(0.0, params.pet_scale_sd))),
            pet_fmiso_scale=float(math.exp(rng.normal(0.0, params.pet_scale_sd))),
            pet_fwhm_mm=float(rng.uniform(*params.pet_fwhm_mm_range)),
            origin_offset_mm=_offset(rng, params.origin_offset_mm),
            expr_shift=float(rng.normal(0.0, params.expr_centre_shift_sd)),
            expr_gene_shift_seed=int(rng.integers(0, 2**31 - 1)),
        ))
    return tuple(centres)


@dataclass
class PatientLatent:
    """Clinical covariates and latent truth of one synthetic patient."""

    index: int
    patient_id: str
    centre: Centre
    age_years: float
    sex: str
    hpv: str
    t_stage: str
    gtv_radius_mm: float
    total_dose_gy: float
    n_fractions: int
    rsi_true: float
    alpha_per_gy: float
    beta_per_gy2: float
    rsi_logit_z: float                     # standardised logit(RSI) (drives CT texture)
    po2_median_patient_mmhg: float         # patient-level pO2 scale (voxel field drawn in imaging)
    log10_clonogen_density: float          # per cm^3, patient mean
    tox_susceptibility: float              # dose-modifying factor (>1: more sensitive)
    extras: dict[str, float] = field(default_factory=dict)


def patient_id_for(index: int, n_patients: int) -> str:
    """``SYN0001``-style pseudonymous IDs (width grows past 9999 patients)."""
    width = max(4, len(str(n_patients)))
    return f"SYN{index + 1:0{width}d}"


def draw_patient(rng: np.random.Generator, index: int, n_patients: int, centres: tuple[Centre, ...],
                 params: SynthParameters) -> PatientLatent:
    """Draw one patient's covariates and latent truth from the patient's own random stream."""
    weights = np.asarray(params.centre_weights[: len(centres)], dtype=float)
    weights = weights / weights.sum()
    centre = centres[int(rng.choice(len(centres), p=weights))]
    age = float(np.clip(rng.normal(params.age_mean, params.age_sd), 30.0, 90.0))
    sex = "M" if rng.random() < params.p_male else "F"
    hpv_pos = bool(rng.random() < params.p_hpv_pos)
    t_idx = int(rng.choice(4, p=np.asarray(params.t_stage_probs) / sum(params.t_stage_probs)))
    radius = float(max(5.0, rng.normal(params.gtv_radius_mm[t_idx], params.gtv_radius_sd_mm)))
    reg_w = np.array([w for _, _, w in params.regimens], dtype=float)
    dose, n_fx, _ = params.regimens[int(rng.choice(len(params.regimens), p=reg_w / reg_w.sum()))]

    logit = rng.normal(params.rsi_logit_mean, params.rsi_logit_sd)
    logit += params.rsi_logit_hpv_shift if hpv_pos else -params.rsi_logit_hpv_shift * 0.5
    rsi = float(np.clip(1.0 / (1.0 + math.exp(-logit)), params.rsi_min, params.rsi_max))
    alpha = float(alpha_from_rsi(rsi, params.beta_per_gy2))
    rsi_z = (math.log(rsi / (1.0 - rsi)) - params.rsi_logit_mean) / params.rsi_logit_sd

    log_po2 = math.log(params.po2_median_mmhg) + rng.normal(0.0, params.po2_patient_log_sd)
    log_po2 += params.po2_hpv_log_shift if hpv_pos else 0.0
    log10_density = float(rng.normal(params.log10_density_mean, params.log10_density_sd))
    tox = float(math.exp(rng.normal(0.0, params.tox_log_sd)))
    return PatientLatent(
        index=index, patient_id=patient_id_for(index, n_patients), centre=centre, age_years=round(age, 1),
        sex=sex, hpv="pos" if hpv_pos else "neg", t_stage=f"T{t_idx + 1}", gtv_radius_mm=radius,
        total_dose_gy=float(dose), n_fractions=int(n_fx), rsi_true=rsi, alpha_per_gy=alpha,
        beta_per_gy2=params.beta_per_gy2, rsi_logit_z=float(rsi_z),
        po2_median_patient_mmhg=float(math.exp(log_po2)), log10_clonogen_density=log10_density,
        tox_susceptibility=tox,
    )
