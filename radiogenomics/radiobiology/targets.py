"""Per-patient dose targets: GARD regimen figures, rails, the recommended regimen and toxicity.

Combines :mod:`gard` (Scott et al. Lancet Oncol 2017), :mod:`rails` (QUANTEC limits, site rails) and
:mod:`ntcp` (LKB, Burman 1991) into the dose fields of the prescription record (contract section 2).

Order: the GARD dose at the requested dose per fraction (or the standard regimen's total, for the population
fallback) -> the site rails on the total dose -> the hard OAR limits at the recommended number of fractions
(:mod:`oar_checks`) -> the regimen: a whole number of fractions, and the dose per fraction that makes the
product exact (:func:`whole_fraction_regimen`) -> the soft OAR limits, reported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from radiogenomics.errors import InputError
from radiogenomics.radiobiology._validation import finite, non_negative, positive
from radiogenomics.radiobiology.endpoints import toxicity_record_name
from radiogenomics.radiobiology.gard import PatientLQ, alpha_from_rsi, check_rsi, dose_for_gard_lq, gard_lq
from radiogenomics.radiobiology.ntcp import ntcp_from_dvh, ntcp_parameters
from radiogenomics.radiobiology.oar_checks import (
    EXCEEDED,
    FLAG_OAR_LIMIT_EXCEEDED,
    FLAG_OAR_LIMITED,
    FLAG_OAR_SOFT_LIMIT_EXCEEDED,
    FLAG_OAR_UNCHECKED,
    UNCHECKED,
    OARDose,
    OARTerms,
    conventional_organ_dose,
    oar_terms,
)
from radiogenomics.radiobiology.rails import (
    FLAG_CLIPPED_MAX,
    FLAG_CLIPPED_MIN,
    FLAG_UNRECOGNISED_STRUCTURE,
    Rails,
    SiteRails,
    UnknownStructures,
    apply_rails,
    load_rails,
    resolve_oar_dvhs,
)
from radiogenomics.radiobiology.tissues import TissueTable, load_tissues


@dataclass(frozen=True)
class DoseTargets:
    """The dose fields of one prescription record (names as in contract section 2).

    ``recommended_n_fractions`` x ``recommended_dose_per_fraction_gy`` = ``recommended_total_dose_gy``
    (NaN all three when no safe dose exists). ``dose_for_target_gard_lower_gy`` / ``_upper_gy``: the dose
    for the target GARD at the RSI interval's lower (more radiosensitive) and upper (more radioresistant)
    end, at ``dose_per_fraction_gy``, before the rails; NaN without an interval. ``toxicity`` is keyed by
    explicit endpoint names (:mod:`endpoints`).
    """

    alpha_per_gy: float
    beta_per_gy2: float
    alpha_beta_gy: float
    dose_per_fraction_gy: float
    n_fractions: float
    gard: float
    target_gard: float
    dose_for_target_gard_gy: float
    recommended_total_dose_gy: float
    recommended_n_fractions: float = math.nan
    recommended_dose_per_fraction_gy: float = math.nan
    dose_for_target_gard_lower_gy: float = math.nan
    dose_for_target_gard_upper_gy: float = math.nan
    toxicity: dict[str, float] = field(default_factory=dict)
    oar_checks: list[dict[str, Any]] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def as_record(self) -> dict[str, Any]:
        """The fields as a dict keyed by the contract's column names."""
        return {
            "alpha_per_gy": self.alpha_per_gy, "beta_per_gy2": self.beta_per_gy2,
            "alpha_beta_gy": self.alpha_beta_gy, "dose_per_fraction_gy": self.dose_per_fraction_gy,
            "n_fractions": self.n_fractions, "gard": self.gard, "target_gard": self.target_gard,
            "dose_for_target_gard_gy": self.dose_for_target_gard_gy,
            "dose_for_target_gard_lower_gy": self.dose_for_target_gard_lower_gy,
            "dose_for_target_gard_upper_gy": self.dose_for_target_gard_upper_gy,
            "recommended_total_dose_gy": self.recommended_total_dose_gy,
            "recommended_n_fractions": self.recommended_n_fractions,
            "recommended_dose_per_fraction_gy": self.recommended_dose_per_fraction_gy,
            "toxicity": dict(self.toxicity), "oar_checks": [dict(c) for c in self.oar_checks],
            "flags": list(self.flags),
        }


def whole_fraction_regimen(total_dose_gy: float, dose_per_fraction_gy: float, *, min_dose_per_fraction_gy: float,
                           max_dose_per_fraction_gy: float) -> tuple[float, float]:
    """A whole number of fractions n and the dose per fraction ``total / n`` (their product is the total).

    n is the whole number nearest to ``total / dose_per_fraction_gy`` (the requested dose per fraction kept
    as closely as possible; a tie takes the larger n, i.e. the smaller dose per fraction) among those whose
    ``total / n`` lies in [min, max] dose per fraction of the rails. Returns (NaN, NaN) when the total is
    not finite or positive, or no whole n fits the per-fraction rails.
    """
    d = float(positive(dose_per_fraction_gy, "dose_per_fraction_gy"))
    d_min = float(positive(min_dose_per_fraction_gy, "min_dose_per_fraction_gy"))
    d_max = float(positive(max_dose_per_fraction_gy, "max_dose_per_fraction_gy"))
    if not (math.isfinite(total_dose_gy) and total_dose_gy > 0):
        return math.nan, math.nan
    lowest = max(1, math.ceil(total_dose_gy / d_max - 1e-9))
    highest = math.floor(total_dose_gy / d_min + 1e-9)
    if lowest > highest:
        return math.nan, math.nan
    n = min(max(math.floor(total_dose_gy / d + 0.5), lowest), highest)
    return float(n), total_dose_gy / n


def _dose_at_alpha(alpha: float, beta: float, target: float, d: float, what: str,
                   reasons: list[str]) -> float:
    if not (math.isfinite(alpha) and alpha > 0):
        reasons.append(f"{what}: alpha <= 0 or undefined, no dose reaches the target GARD")
        return math.nan
    return float(dose_for_gard_lq(alpha, target, beta_per_gy2=beta, dose_per_fraction_gy=d))


def interval_doses(lq: PatientLQ, target_gard: float, dose_per_fraction_gy: float, *,
                   rsi_lower: float | None = None, rsi_upper: float | None = None,
                   alpha_interval_per_gy: tuple[float, float] | None = None) -> tuple[float, float, list[str]]:
    """Dose (Gy, at ``dose_per_fraction_gy``) for the target GARD at the two ends of an interval.

    From the RSI interval (Scott 2017: ``alpha = -ln(RSI)/2 - 2 beta``; higher RSI = more radioresistant =
    more dose) or from an alpha interval ``(lowest, highest)``. Returns (dose at the lower RSI / highest
    alpha, dose at the upper RSI / lowest alpha, reasons); an end outside the LQ domain gives NaN with a
    reason; no interval gives (NaN, NaN, []).
    """
    given_rsi = (rsi_lower is not None, rsi_upper is not None)
    if given_rsi[0] != given_rsi[1]:
        raise InputError("give both rsi_lower and rsi_upper, or neither.")
    if any(given_rsi) and alpha_interval_per_gy is not None:
        raise InputError("give an RSI interval or an alpha interval, not both.")
    beta, reasons = lq.beta_per_gy2, []
    if rsi_lower is not None and rsi_upper is not None:
        lo, hi = float(finite(rsi_lower, "rsi_lower")), float(finite(rsi_upper, "rsi_upper"))
        if lo > hi:
            raise InputError(f"rsi_lower = {lo} > rsi_upper = {hi}.", fix="pass the interval's lower end first.")
        if lq.rsi is not None and not lq.flags and not lo - 1e-12 <= lq.rsi <= hi + 1e-12:
            raise InputError(f"rsi = {lq.rsi} lies outside its interval [{lo}, {hi}].",
                             fix="pass the prediction interval of this RSI.")
        ends = []
        for what, rsi in (("rsi_lower", lo), ("rsi_upper", hi)):
            problems = check_rsi(rsi, beta)
            if problems:
                reasons.append(f"{what} = {rsi} is outside the LQ domain ({', '.join(problems)})")
            ends.append(math.nan if problems else float(alpha_from_rsi(rsi, beta)))
        alpha_sensitive, alpha_resistant = ends
    elif alpha_interval_per_gy is not None:
        try:
            a_lo, a_hi = (float(finite(a, "alpha_interval_per_gy")) for a in alpha_interval_per_gy)
        except (TypeError, ValueError) as exc:
            raise InputError("alpha_interval_per_gy must be a (lowest, highest) pair.") from exc
        if a_lo > a_hi:
            raise InputError(f"alpha_interval_per_gy = ({a_lo}, {a_hi}) is not (lowest, highest).")
        alpha_sensitive, alpha_resistant = a_hi, a_lo
    else:
        return math.nan, math.nan, []
    target = float(non_negative(target_gard, "target_gard"))
    d = float(positive(dose_per_fraction_gy, "dose_per_fraction_gy"))
    lower = _dose_at_alpha(alpha_sensitive, beta, target, d, "lower end of the interval", reasons)
    upper = _dose_at_alpha(alpha_resistant, beta, target, d, "upper end of the interval", reasons)
    return lower, upper, reasons


def toxicity_at_dose(oar_dvhs: Mapping[str, Any], reference_prescription_gy: float, prescription_gy: float, *,
                     rails: Rails | None = None, n_fractions: float | None = None,
                     tissues: TissueTable | None = None) -> dict[str, float]:
    """NTCP per endpoint at ``prescription_gy``, each OAR DVH (planned at the reference) scaled with it.

    Endpoints come from the rails' OAR table (e.g. parotid -> xerostomia) and are keyed by their record
    names (``xerostomia_flow_lt25pct_1y``, :mod:`endpoints`); several structures of one endpoint (left/right
    parotid) report the highest NTCP; sides of a ``combine_sides`` organ (lungs) are added first. Names go
    through the alias table; one that matches nothing raises InputError. LKB parameters from
    ntcp_parameters.yaml. With ``n_fractions`` every DVH bin is first converted to the organ dose of the same
    effect under conventional fractionation (:func:`conventional_organ_dose`): the published LKB parameters were
    fitted on plans whose target received about 2 Gy per fraction.
    """
    rails = rails or load_rails()
    tissues = tissues or load_tissues()
    ref = float(positive(reference_prescription_gy, "reference_prescription_gy"))
    scale = float(non_negative(prescription_gy, "prescription_gy")) / ref
    out: dict[str, float] = {}
    for x in resolve_oar_dvhs(oar_dvhs, rails=rails).inputs:
        if x.limit.endpoint is None:
            continue
        p = ntcp_parameters(x.limit.endpoint)
        dose = x.dose_gy * scale
        if n_fractions is not None:
            ab = tissues.lookup(x.name.split("+")[0])[0].alpha_beta_gy
            dose = conventional_organ_dose(dose, float(prescription_gy), float(positive(n_fractions, "n_fractions")),
                                           ab)
        ntcp = ntcp_from_dvh(dose, x.volume, td50_gy=p.td50_gy, m=p.m, n=p.n)
        key = toxicity_record_name(x.limit.endpoint)
        out[key] = max(out.get(key, 0.0), ntcp)
    return out


@dataclass(frozen=True)
class _Regimen:
    """The recommended regimen after the hard OAR limits (:func:`limited_regimen`)."""

    total_dose_gy: float
    n_fractions: float
    dose_per_fraction_gy: float
    limited_by: str | None = None
    exceeded: bool = False


def limited_regimen(total_dose_gy: float, dose_per_fraction_gy: float, site_rails: SiteRails,
                    terms: OARTerms | None, *, lower_limit_gy: float) -> _Regimen:
    """The whole-fraction regimen of ``total_dose_gy`` (already inside the site rails) under the hard OAR limits.

    At n fractions each hard limit allows at most a prescription ``P_max(n)`` (:class:`OARTerms`), nondecreasing
    in n. Starting from the requested total P: n = the whole number of fractions nearest ``P / d``
    (:func:`whole_fraction_regimen`); if ``P > P_max(n)``, P becomes ``P_max(n)`` and n is recomputed. P only
    falls and n is whole, so this ends at the largest P with ``P <= P_max(n(P))``. If that lies below the site's
    minimum (``lower_limit_gy``), the minimum is kept and ``exceeded`` says a hard limit is broken (review
    before planning). NaN regimen when no whole number of fractions fits the per-fraction rails.
    """
    sr = site_rails
    total, limited_by = total_dose_gy, None
    for _ in range(200):
        n, d = whole_fraction_regimen(total, dose_per_fraction_gy,
                                      min_dose_per_fraction_gy=sr.min_dose_per_fraction_gy,
                                      max_dose_per_fraction_gy=sr.max_dose_per_fraction_gy)
        if math.isnan(n) or terms is None:
            return _Regimen(total if not math.isnan(n) else math.nan, n, d, limited_by)
        cap, which = terms.max_prescription_gy(n)
        if total <= cap * (1.0 + 1e-12):
            return _Regimen(total, n, d, limited_by)
        if cap < lower_limit_gy:
            n, d = whole_fraction_regimen(lower_limit_gy, dose_per_fraction_gy,
                                          min_dose_per_fraction_gy=sr.min_dose_per_fraction_gy,
                                          max_dose_per_fraction_gy=sr.max_dose_per_fraction_gy)
            return _Regimen(lower_limit_gy if not math.isnan(n) else math.nan, n, d, None, exceeded=True)
        total, limited_by = cap, which
    raise AssertionError("the OAR-limited regimen did not settle")  # P falls and n is whole: cannot happen


def dose_targets(lq: PatientLQ, *, site: str, target_gard: float, n_fractions: float = 35,
                 dose_per_fraction_gy: float = 2.0, oar_dvhs: Mapping[str, Any] | None = None,
                 reference_prescription_gy: float | None = None, rails: Rails | None = None,
                 rsi_lower: float | None = None, rsi_upper: float | None = None,
                 alpha_interval_per_gy: tuple[float, float] | None = None,
                 unknown_structures: UnknownStructures = "raise", requested_total_dose_gy: float | None = None,
                 tissues: TissueTable | None = None) -> DoseTargets:
    """Dose fields of a prescription record for one patient (Scott 2017; rails; OAR limits; LKB).

    ``gard``: GARD of the regimen ``n_fractions x dose_per_fraction_gy``; ``dose_for_target_gard_gy``: total
    dose at ``dose_per_fraction_gy`` reaching ``target_gard`` (a parameter, never a constant); the
    recommendation starts from that dose, or from ``requested_total_dose_gy`` (the population fallback's
    standard regimen), and passes

    1. the site rails (:func:`apply_rails`: min/max total; ``clipped_max`` / ``clipped_min``);
    2. the hard OAR limits of the patient's dose distribution ``oar_dvhs`` (structure -> DVH, ``(dose, volume)``
       or :class:`OARDose`, planned at ``reference_prescription_gy``), at the recommended number of fractions
       and the organ's alpha/beta (:mod:`oar_checks`, :func:`limited_regimen`): ``oar_limited`` when one lowers
       the dose, ``oar_limit_exceeded`` when even the site minimum breaks one;
    3. a whole number of fractions nearest the requested dose per fraction (:func:`whole_fraction_regimen`);
    4. the soft OAR limits, evaluated and reported (``oar_soft_limit_exceeded``), never acting on the dose.

    ``oar_checks``: every limit at the recommended regimen (contract section 2); no dose distribution:
    ``oar_unchecked``, as when a hard limit cannot be evaluated. OAR names that match no organ raise InputError,
    or with ``unknown_structures="flag"`` add ``unrecognised_structure``. ``toxicity``: LKB NTCP per endpoint
    at the recommended regimen (EQD2 bins) for the OARs given as DVHs. Interval doses from ``rsi_lower`` /
    ``rsi_upper`` or ``alpha_interval_per_gy`` (:func:`interval_doses`).
    """
    rails = rails or load_rails()
    n = float(positive(n_fractions, "n_fractions"))
    d = float(positive(dose_per_fraction_gy, "dose_per_fraction_gy"))
    target = float(non_negative(target_gard, "target_gard"))
    regimen_gard = float(gard_lq(lq.alpha_per_gy, n * d, n, lq.beta_per_gy2))
    needed = float(dose_for_gard_lq(lq.alpha_per_gy, target, beta_per_gy2=lq.beta_per_gy2,
                                    dose_per_fraction_gy=d))
    lower, upper, interval_reasons = interval_doses(lq, target, d, rsi_lower=rsi_lower, rsi_upper=rsi_upper,
                                                    alpha_interval_per_gy=alpha_interval_per_gy)
    start = needed if requested_total_dose_gy is None else float(positive(requested_total_dose_gy,
                                                                          "requested_total_dose_gy"))
    decision = apply_rails(start, site=site, dose_per_fraction_gy=d, rails=rails)
    terms = None
    if oar_dvhs:
        if reference_prescription_gy is None:
            raise InputError("oar_dvhs need reference_prescription_gy (the prescription they were planned at).")
        terms = oar_terms(oar_dvhs, reference_prescription_gy, rails=rails, tissues=tissues)
        if terms.unrecognised and unknown_structures == "raise":
            raise InputError(
                f"OAR structure name(s) {', '.join(repr(n) for n in terms.unrecognised)} match no organ of the "
                "alias table (structure_aliases.yaml) or the rails: their limits cannot be checked.",
                fix="use the TG-263 name (e.g. SpinalCord, Brainstem, Parotid_L), add the name to "
                    "structure_aliases.yaml or a row to the rails file, or pass unknown_structures='flag' to "
                    "continue with the flag unrecognised_structure.")
    reasons = [*lq.reasons, *decision.reasons, *interval_reasons, *(terms.notes if terms else [])]
    flags = [*lq.flags, *decision.flags]
    sr = rails.site(site)
    regimen = limited_regimen(decision.recommended_total_dose_gy, d, sr, terms,
                              lower_limit_gy=decision.lower_limit_gy)
    total, rec_n, rec_d = regimen.total_dose_gy, regimen.n_fractions, regimen.dose_per_fraction_gy
    if math.isnan(rec_n):
        reasons.append(f"no whole number of fractions gives {decision.recommended_total_dose_gy:.2f} Gy within the "
                       f"{site} dose per fraction rails [{sr.min_dose_per_fraction_gy}, "
                       f"{sr.max_dose_per_fraction_gy}] Gy")
        flags += [FLAG_CLIPPED_MAX, FLAG_CLIPPED_MIN]
    else:
        reasons.append(f"regimen: {rec_n:g} x {rec_d:.4f} Gy (whole fractions nearest {d:g} Gy per fraction)")
    checks = terms.checks(total, rec_n, limited_by=regimen.limited_by) if terms and math.isfinite(total) else []
    if regimen.limited_by:
        flags.append(FLAG_OAR_LIMITED)
        reasons.append(f"hard OAR limit {regimen.limited_by}: max prescription {total:.2f} Gy in {rec_n:g} "
                       "fractions")
    if regimen.exceeded or any(c.hard and c.status == EXCEEDED for c in checks):
        flags.append(FLAG_OAR_LIMIT_EXCEEDED)
        reasons.append("a hard OAR limit is exceeded even at the site's minimum dose: review before planning")
    if any(not c.hard and c.status == EXCEEDED for c in checks):
        flags.append(FLAG_OAR_SOFT_LIMIT_EXCEEDED)
    if terms is None or any(c.hard and c.status == UNCHECKED for c in checks):
        flags.append(FLAG_OAR_UNCHECKED)
    if terms is not None and terms.unrecognised:
        flags.append(FLAG_UNRECOGNISED_STRUCTURE)
    toxicity: dict[str, float] = {}
    dvhs = {k: v for k, v in (oar_dvhs or {}).items() if not isinstance(v, OARDose) or v.dose_gy is not None}
    if dvhs and math.isfinite(total) and reference_prescription_gy is not None:
        known = {k: (v.dose_gy, v.volume) if isinstance(v, OARDose) else v for k, v in dvhs.items()
                 if k not in (terms.unrecognised if terms else [])}
        toxicity = toxicity_at_dose(known, reference_prescription_gy, total, rails=rails, n_fractions=rec_n,
                                    tissues=tissues)
    return DoseTargets(
        alpha_per_gy=lq.alpha_per_gy, beta_per_gy2=lq.beta_per_gy2,
        alpha_beta_gy=lq.alpha_beta_gy if lq.beta_per_gy2 > 0 else math.inf,
        dose_per_fraction_gy=d, n_fractions=n, gard=regimen_gard, target_gard=target,
        dose_for_target_gard_gy=needed, recommended_total_dose_gy=total,
        recommended_n_fractions=rec_n, recommended_dose_per_fraction_gy=rec_d,
        dose_for_target_gard_lower_gy=lower, dose_for_target_gard_upper_gy=upper,
        toxicity=toxicity, oar_checks=[c.as_record() for c in checks], flags=list(dict.fromkeys(flags)),
        reasons=reasons)
