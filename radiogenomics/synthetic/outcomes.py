"""Outcomes drawn from the latent truth: local control (voxel Poisson TCP with hypoxia) and toxicity (LKB).

* TCP: :func:`radiogenomics.radiobiology.tcp_poisson` over the GTV voxels, with the planned voxel doses,
  the voxel clonogen numbers and pO2 (oxygen effect of Alper & Howard-Flanders; Webb & Nahum 1993).
  Local failure happens with probability ``1 - TCP``; its time is log-normal (median ~10 months: most
  H&N local failures occur within two years). Censoring: administrative (uniform accrual over 4 years,
  analysis 12 months after the last patient) plus a small loss-to-follow-up hazard.
* NTCP: :func:`radiogenomics.radiobiology.lkb_ntcp` on the mean dose (n = 1) of both parotids
  (xerostomia; Dijkema 2010 / QUANTEC parameters from :func:`load_ntcp_parameters`) and of the pharyngeal
  constrictors (dysphagia; unverified parameters, see :class:`SynthParameters`). The patient's
  susceptibility multiplies the dose (a dose-modifying factor). Grades are ordinal: one uniform draw is
  compared with the LKB probabilities at scaled TD50s, so P(grade >= 2) equals the NTCP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from radiogenomics.radiobiology import geud, lkb_ntcp, load_ntcp_parameters, tcp_poisson
from radiogenomics.synthetic.model import PatientLatent, SynthParameters

#: worst possible CTCAE v5 grade of each endpoint (xerostomia stops at 3)
MAX_GRADE = {"xerostomia": 3, "dysphagia": 4}


@dataclass(frozen=True)
class LocalControl:
    tcp: float
    failure: bool          # would fail (uncensored truth)
    lc_months: float
    lc_event: int


def tumour_control(dose_gy: np.ndarray, clonogens: np.ndarray, po2_mmhg: np.ndarray,
                   patient: PatientLatent) -> float:
    """Voxel Poisson TCP with hypoxia (Webb & Nahum 1993) of the planned dose."""
    return float(tcp_poisson(dose_gy, clonogens, patient.alpha_per_gy, patient.beta_per_gy2,
                             patient.n_fractions, po2_mmhg=po2_mmhg))


def local_control(rng: np.random.Generator, tcp: float, params: SynthParameters) -> LocalControl:
    """Draw failure (probability 1 - TCP), its time and the censoring time."""
    u_fail, u_time, u_fu, u_drop = rng.random(4)
    failure = bool(u_fail > tcp)
    admin = params.min_followup_months + params.accrual_months * u_fu
    dropout = -math.log(max(1.0 - u_drop, 1e-12)) / params.dropout_rate_per_month
    censor = max(min(admin, dropout), 1.0)
    z = math.sqrt(2.0) * _erfinv(2.0 * u_time - 1.0)
    t_fail = max(2.0, params.failure_median_months * math.exp(params.failure_log_sd * z))
    if failure and t_fail <= censor:
        return LocalControl(tcp=tcp, failure=True, lc_months=round(t_fail, 2), lc_event=1)
    return LocalControl(tcp=tcp, failure=failure, lc_months=round(censor, 2), lc_event=0)


def _erfinv(y: float) -> float:
    from scipy.special import erfinv

    return float(erfinv(min(max(y, -0.999999), 0.999999)))


def xerostomia_parameters() -> tuple[float, float, float]:
    """(TD50, m, n) of the tabulated xerostomia endpoint (Dijkema 2010; QUANTEC)."""
    row = load_ntcp_parameters()["xerostomia"]
    return float(row["td50_gy"]), float(row["m"]), float(row["n"])


def organ_geud(dose_gy: np.ndarray, voxel_volume_cc: float, n: float) -> float:
    """gEUD (a = 1/n) of the voxels of an organ (each voxel a DVH bin)."""
    if dose_gy.size == 0:
        return 0.0
    return float(geud(dose_gy.astype(np.float64), np.full(dose_gy.size, voxel_volume_cc), 1.0 / n))


def ntcp(geud_gy: float, susceptibility: float, td50_gy: float, m: float) -> float:
    """LKB NTCP of the susceptibility-scaled gEUD."""
    return float(lkb_ntcp(susceptibility * geud_gy, td50_gy, m))


def toxicity_grade(rng: np.random.Generator, geud_gy: float, susceptibility: float, td50_gy: float, m: float,
                   endpoint: str, params: SynthParameters) -> int:
    """Worst CTCAE grade: ``#{g : u < NTCP(TD50 * f_g)}`` with f_2 = 1 (so P(grade >= 2) = NTCP)."""
    u = float(rng.random())
    grade = 0
    for factor in params.grade_td50_factors:
        if u < ntcp(geud_gy, susceptibility, td50_gy * factor, m):
            grade += 1
    return min(grade, MAX_GRADE[endpoint])
