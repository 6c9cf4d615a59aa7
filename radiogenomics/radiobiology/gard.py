"""Genomic-adjusted radiation dose (GARD) and per-patient LQ parameters from RSI.

Source: Scott JG et al., "A genome-based model for adjusting radiotherapy dose (GARD)",
Lancet Oncol 2017;18:202-211. RSI is read as the surviving fraction of one 2 Gy fraction:
``ln RSI = -(2 alpha + 4 beta)`` with beta = 0.05 Gy^-2, so ``alpha = -ln(RSI)/2 - 2 beta``;
``GARD = n d (alpha + beta d)``; at d = 2 Gy, ``GARD = -n ln RSI`` whatever beta is.

Domain: RSI must lie in (0, 1) and give alpha > 0, i.e. ``RSI < exp(-4 beta)`` (= exp(-0.2) ~ 0.819 at
beta = 0.05). Outside that domain the formulas raise :class:`InputError` by default (never a silent
negative alpha); ``invalid="nan"`` returns NaN for those entries instead, for bulk screening.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from radiogenomics.errors import InputError
from radiogenomics.radiobiology._validation import (
    FloatArray,
    FloatOrArray,
    finite,
    non_negative,
    out,
    positive,
)

#: Scott et al. 2017: beta fixed at 0.05 Gy^-2 when deriving alpha from RSI.
DEFAULT_BETA_PER_GY2 = 0.05

InvalidPolicy = Literal["raise", "nan"]

# Specific reasons returned by check_rsi (each maps to the contract flag "out_of_distribution").
RSI_NOT_FINITE = "rsi_not_finite"
RSI_OUT_OF_RANGE = "rsi_out_of_range"
RSI_NONPOSITIVE_ALPHA = "rsi_nonpositive_alpha"
FLAG_OUT_OF_DISTRIBUTION = "out_of_distribution"
FLAG_POPULATION_FALLBACK = "population_fallback"


def max_valid_rsi(beta_per_gy2: float = DEFAULT_BETA_PER_GY2) -> float:
    """Largest RSI (exclusive) that still gives alpha > 0: ``exp(-4 beta)`` (exp(-0.2) ~ 0.8187 at 0.05)."""
    return math.exp(-4.0 * beta_per_gy2)


def check_rsi(rsi: float, beta_per_gy2: float = DEFAULT_BETA_PER_GY2) -> list[str]:
    """Domain problems of one RSI value; ``[]`` when it is usable.

    Reasons: ``"rsi_not_finite"``, ``"rsi_out_of_range"`` (not in (0, 1)), ``"rsi_nonpositive_alpha"``
    (RSI >= exp(-4 beta): alpha = -ln(RSI)/2 - 2 beta would be <= 0; Scott et al. 2017). Each maps to the
    contract flag ``"out_of_distribution"``.
    """
    try:
        value = float(rsi)
    except (TypeError, ValueError):
        return [RSI_NOT_FINITE]
    if not math.isfinite(value):
        return [RSI_NOT_FINITE]
    if not 0.0 < value < 1.0:
        return [RSI_OUT_OF_RANGE]
    if value >= max_valid_rsi(beta_per_gy2):
        return [RSI_NONPOSITIVE_ALPHA]
    return []


def _rsi_domain(rsi: Any, beta: FloatArray, invalid: InvalidPolicy) -> tuple[FloatArray, np.ndarray]:
    if invalid not in ("raise", "nan"):
        raise InputError(f"invalid must be 'raise' or 'nan', got {invalid!r}.")
    arr = finite(rsi, "rsi") if invalid == "raise" else np.asarray(rsi, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(arr) | (arr <= 0) | (arr >= 1) | (arr >= np.exp(-4.0 * beta))
    if invalid == "raise" and bad.any():
        value = float(np.broadcast_to(arr, bad.shape)[bad][0])
        if not 0.0 < value < 1.0:
            raise InputError(f"rsi must lie in (0, 1), got {value!r}.",
                             fix="check the expression data; RSI is a surviving fraction at 2 Gy.")
        limit = float(np.broadcast_to(np.exp(-4.0 * beta), bad.shape)[bad][0])
        raise InputError(f"rsi = {value!r} >= exp(-4*beta_per_gy2) = {limit:.4f} gives alpha <= 0.",
                         fix="flag the patient (check_rsi) and use a population alpha, "
                             "or pass invalid='nan'.")
    return arr, bad


def alpha_from_rsi(rsi: Any, beta_per_gy2: Any = DEFAULT_BETA_PER_GY2, *,
                   invalid: InvalidPolicy = "raise") -> FloatOrArray:
    """alpha (Gy^-1) from RSI read as SF2: ``alpha = -ln(RSI)/2 - 2 beta`` (Scott et al. Lancet Oncol 2017).

    RSI outside (0, 1) or >= exp(-4 beta) (alpha <= 0) raises InputError; with ``invalid="nan"`` those
    entries become NaN instead (never a negative alpha).
    """
    beta = non_negative(beta_per_gy2, "beta_per_gy2")
    arr, bad = _rsi_domain(rsi, beta, invalid)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = -np.log(arr) / 2.0 - 2.0 * beta
    alpha = np.where(bad, np.nan, alpha)
    return out(alpha)


def gard_lq(alpha_per_gy: Any, total_dose_gy: Any, n_fractions: Any,
            beta_per_gy2: Any = DEFAULT_BETA_PER_GY2) -> FloatOrArray:
    """GARD from LQ parameters: ``GARD = n d (alpha + beta d) = D (alpha + beta D/n)`` (Scott 2017)."""
    alpha = positive(alpha_per_gy, "alpha_per_gy")
    beta = non_negative(beta_per_gy2, "beta_per_gy2")
    dose = non_negative(total_dose_gy, "total_dose_gy")
    n = positive(n_fractions, "n_fractions")
    return out(dose * (alpha + beta * dose / n))


def gard(rsi: Any, total_dose_gy: Any, n_fractions: Any, beta_per_gy2: Any = DEFAULT_BETA_PER_GY2, *,
         invalid: InvalidPolicy = "raise") -> FloatOrArray:
    """GARD of ``total_dose_gy`` in ``n_fractions`` for a tumour of radiosensitivity ``rsi`` (Scott 2017).

    ``GARD = n d (alpha + beta d)`` with ``alpha = alpha_from_rsi(rsi, beta)``; at d = 2 Gy this equals
    ``-n ln RSI``. Dimensionless.
    """
    beta = non_negative(beta_per_gy2, "beta_per_gy2")
    alpha = np.asarray(alpha_from_rsi(rsi, beta, invalid=invalid))
    dose = non_negative(total_dose_gy, "total_dose_gy")
    n = positive(n_fractions, "n_fractions")
    return out(dose * (alpha + beta * dose / n))


def dose_for_gard_lq(alpha_per_gy: Any, target_gard: Any, *, beta_per_gy2: Any = DEFAULT_BETA_PER_GY2,
                     dose_per_fraction_gy: Any = None, n_fractions: Any = None) -> FloatOrArray:
    """Total dose (Gy) reaching ``target_gard`` from LQ parameters (Scott 2017).

    Exactly one of ``dose_per_fraction_gy`` (``D = GARD_T / (alpha + beta d)``) or ``n_fractions``
    (``beta n d^2 + alpha n d - GARD_T = 0``, positive root, ``D = n d``).
    """
    if (dose_per_fraction_gy is None) == (n_fractions is None):
        raise InputError("give exactly one of dose_per_fraction_gy or n_fractions.",
                         fix="fix either the dose per fraction or the number of fractions.")
    alpha = positive(alpha_per_gy, "alpha_per_gy")
    beta = non_negative(beta_per_gy2, "beta_per_gy2")
    target = non_negative(target_gard, "target_gard")
    if dose_per_fraction_gy is not None:
        d = positive(dose_per_fraction_gy, "dose_per_fraction_gy")
        return out(target / (alpha + beta * d))
    n = positive(n_fractions, "n_fractions")
    # stable positive root of beta n d^2 + alpha n d - G = 0 (also valid at beta = 0)
    d = 2.0 * target / (alpha * n + np.sqrt((alpha * n) ** 2 + 4.0 * beta * n * target))
    return out(n * d)


def dose_for_gard(rsi: Any, target_gard: Any, dose_per_fraction_gy: Any = 2.0,
                  beta_per_gy2: Any = DEFAULT_BETA_PER_GY2, *,
                  invalid: InvalidPolicy = "raise") -> FloatOrArray:
    """Total dose (Gy) at fixed dose per fraction that reaches ``target_gard`` (Scott et al. 2017).

    ``D = GARD_T / (alpha + beta d)``. The target GARD is a parameter (33 is often quoted, *unverified*;
    >= 42 in an HPV+ oropharynx cohort), never a constant. For a fixed number of fractions use
    :func:`dose_for_gard_fixed_n`.
    """
    beta = non_negative(beta_per_gy2, "beta_per_gy2")
    alpha = np.asarray(alpha_from_rsi(rsi, beta, invalid=invalid))
    target = non_negative(target_gard, "target_gard")
    d = positive(dose_per_fraction_gy, "dose_per_fraction_gy")
    return out(target / (alpha + beta * d))


def dose_for_gard_fixed_n(rsi: Any, target_gard: Any, n_fractions: Any,
                          beta_per_gy2: Any = DEFAULT_BETA_PER_GY2, *,
                          invalid: InvalidPolicy = "raise") -> FloatOrArray:
    """Total dose (Gy) in ``n_fractions`` reaching ``target_gard``: root of ``beta n d^2 + alpha n d = G``.

    Scott et al. Lancet Oncol 2017; the dose per fraction is ``result / n_fractions``.
    """
    beta = non_negative(beta_per_gy2, "beta_per_gy2")
    alpha = np.asarray(alpha_from_rsi(rsi, beta, invalid=invalid))
    target = non_negative(target_gard, "target_gard")
    n = positive(n_fractions, "n_fractions")
    with np.errstate(invalid="ignore"):
        d = 2.0 * target / (alpha * n + np.sqrt((alpha * n) ** 2 + 4.0 * beta * n * target))
    return out(n * d)


@dataclass(frozen=True)
class PatientLQ:
    """Per-patient LQ parameters for the prescription record (contract section 2).

    ``flags`` uses the contract vocabulary (``out_of_distribution``, ``population_fallback``);
    ``reasons`` gives the specific domain problems from :func:`check_rsi`.
    """

    alpha_per_gy: float
    beta_per_gy2: float
    rsi: float | None = None
    flags: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def alpha_beta_gy(self) -> float:
        """alpha/beta in Gy (inf when beta = 0)."""
        return self.alpha_per_gy / self.beta_per_gy2 if self.beta_per_gy2 > 0 else math.inf

    def gard(self, total_dose_gy: float, n_fractions: float) -> float:
        """GARD of a regimen for this patient (Scott 2017)."""
        return float(gard_lq(self.alpha_per_gy, total_dose_gy, n_fractions, self.beta_per_gy2))

    def dose_for_gard(self, target_gard: float, *, dose_per_fraction_gy: float | None = None,
                      n_fractions: float | None = None) -> float:
        """Total dose (Gy) reaching ``target_gard`` at fixed d or fixed n (Scott 2017)."""
        return float(dose_for_gard_lq(self.alpha_per_gy, target_gard, beta_per_gy2=self.beta_per_gy2,
                                      dose_per_fraction_gy=dose_per_fraction_gy, n_fractions=n_fractions))


def patient_lq(rsi: float | None = None, *, alpha_per_gy: float | None = None,
               beta_per_gy2: float = DEFAULT_BETA_PER_GY2,
               fallback_alpha_per_gy: float | None = None) -> PatientLQ:
    """Per-patient alpha, beta, alpha/beta from an RSI (Scott 2017) or from a predicted alpha.

    Give exactly one of ``rsi`` or ``alpha_per_gy``. An RSI outside its domain (see :func:`check_rsi`), or a
    predicted alpha that is not > 0, raises InputError unless ``fallback_alpha_per_gy`` (a population
    alpha) is given: then that alpha is used and the record is flagged ``out_of_distribution`` and
    ``population_fallback``.
    """
    if (rsi is None) == (alpha_per_gy is None):
        raise InputError("give exactly one of rsi or alpha_per_gy.")
    beta = float(non_negative(beta_per_gy2, "beta_per_gy2"))
    if fallback_alpha_per_gy is not None:
        fallback = float(positive(fallback_alpha_per_gy, "fallback_alpha_per_gy"))
    if rsi is not None:
        reasons = check_rsi(rsi, beta)
        if not reasons:
            return PatientLQ(alpha_per_gy=float(alpha_from_rsi(rsi, beta)), beta_per_gy2=beta, rsi=float(rsi))
        rsi_value: float | None = float(rsi) if isinstance(rsi, int | float) else None
    else:
        assert alpha_per_gy is not None
        try:
            a = float(alpha_per_gy)
        except (TypeError, ValueError):
            a = math.nan
        if math.isfinite(a) and a > 0:
            return PatientLQ(alpha_per_gy=a, beta_per_gy2=beta)
        reasons = ["alpha_nonpositive" if math.isfinite(a) else "alpha_not_finite"]
        rsi_value = None
    if fallback_alpha_per_gy is None:
        what = f"rsi = {rsi!r}" if rsi is not None else f"alpha_per_gy = {alpha_per_gy!r}"
        raise InputError(f"{what} is outside the LQ domain ({', '.join(reasons)}).",
                         fix="pass fallback_alpha_per_gy (a population alpha) to use a flagged fallback.")
    return PatientLQ(alpha_per_gy=fallback, beta_per_gy2=beta, rsi=rsi_value,
                     flags=[FLAG_OUT_OF_DISTRIBUTION, FLAG_POPULATION_FALLBACK], reasons=reasons)
