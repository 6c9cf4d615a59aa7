"""The safety gate (contract section 2): what every prescription record passes, whatever produced it.

:func:`gate_record` turns one patient's RSI estimate, site, regimen and dose distribution into the record's
radiobiology and dose fields, and fails closed:

* **population fallback** (``population_fallback`` plus the reason's flag) when the inputs lie outside what the
  model was trained on: no usable features (``missing_genomics`` + ``missing_imaging``); a site not in training
  (``site_not_in_training``); an imaging RSI from an imaging pattern the model was not calibrated on, e.g. a
  modality combination no training patient had or the tumour's own item missing, without a calibrated
  image-free path (``missing_imaging``); imaging or clinical values outside the training domain, or an RSI the
  model had to clip (``out_of_distribution``); an RSI outside the LQ domain (``out_of_distribution``); LQ
  parameters outside the documented plausible range of the rails (``implausible_parameter``). The fallback uses
  the site's population alpha/beta (the training population's RSI for a trained site, else the rails'
  population alpha/beta of the site) and the regimen in force (the patient's own, the request's, or the site's
  standard), never a personalised dose. A measured RSI is kept when only the imaging or clinical values are
  unusual (flagged ``out_of_distribution``); a site not in training or an implausible value still falls back.
* **OAR limits on the recommended dose** (:func:`radiogenomics.radiobiology.dose_targets`): hard limits lower it
  (``oar_limited`` / ``oar_limit_exceeded``), soft ones are reported (``oar_soft_limit_exceeded``), no dose
  distribution is ``oar_unchecked``.
* **Honest intervals**: an end of the RSI interval that the model clipped, or whose alpha is outside the
  plausible range, gives no dose (NaN), flagged ``implausible_parameter`` (an LQ parameter of the interval is
  implausible; the point estimate is kept when it is plausible): never a 9.55 Gy "lower dose".

:func:`check_record` re-checks a record read back (the hand-off): a known site, n x d = total, the site's rails.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from radiogenomics.errors import InputError
from radiogenomics.models.inputs import finite_number
from radiogenomics.radiobiology import PatientLQ, Rails, alpha_from_rsi, check_rsi, dose_targets, patient_lq
from radiogenomics.radiobiology.gard import FLAG_OUT_OF_DISTRIBUTION, FLAG_POPULATION_FALLBACK

FLAG_MISSING_GENOMICS = "missing_genomics"
FLAG_MISSING_IMAGING = "missing_imaging"
FLAG_SITE_NOT_IN_TRAINING = "site_not_in_training"
FLAG_IMPLAUSIBLE_PARAMETER = "implausible_parameter"
FLAG_REGIMEN_OUTSIDE_TRAINING = "regimen_outside_training"
FLAG_TOXICITY_UNAVAILABLE = "toxicity_unavailable"
#: ``rsi_source`` of a fallback record.
SOURCE_POPULATION = "population"
SOURCE_MEASURED = "measured"
#: Every flag a record may carry, in the contract's order (the contract's vocabulary, closed).
FLAGS: tuple[str, ...] = (
    "out_of_distribution", "clipped_max", "clipped_min", "population_fallback", "missing_genomics",
    "missing_imaging", "unrecognised_structure", "site_not_in_training", "implausible_parameter", "oar_limited",
    "oar_limit_exceeded", "oar_soft_limit_exceeded", "oar_unchecked", "regimen_outside_training",
    "toxicity_unavailable", "deescalated", "escalated", "adaptation_fallback")
#: Relative tolerance of n x d = total in a record read back (JSON round trips keep 15+ digits).
_PRODUCT_REL_TOL = 1e-6


@dataclass(frozen=True)
class RSIEstimate:
    """One patient's RSI from the model, before the gate.

    ``source``: ``measured``, ``fused``, ``predicted`` or ``predicted_without_images``. ``imaging_outside``:
    the imaging is outside the applicability domain or the model clipped the RSI; ``uncalibrated_imaging``: an
    imaging pattern without calibrated intervals (see the module docstring); ``missing_imaging``: some imaging
    the model uses is missing (flagged); ``no_usable_inputs``: nothing the model could use was given.
    """

    rsi: float
    lower: float
    upper: float
    source: str
    imaging_outside: bool = False
    uncalibrated_imaging: bool = False
    missing_imaging: bool = False
    no_usable_inputs: bool = False
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Population:
    """The fallback's RSI (interval NaN when unknown) and LQ parameters for one site, and where they come from."""

    rsi: float
    lower: float
    upper: float
    alpha_per_gy: float
    beta_per_gy2: float
    source: str


def site_population(site: str, trained: Mapping[str, tuple[float, float, float]], rails: Rails,
                    beta_per_gy2: float) -> Population:
    """The population of ``site``: the training cohort's RSI (median, 5th-95th percentiles) when the model was
    trained on the site, else the rails' population alpha/beta of the site with Scott's beta
    (``alpha = alpha/beta x beta``, RSI = SF2 = ``exp(-2 alpha - 4 beta)``, no interval)."""
    if site in trained:
        rsi, low, high = trained[site]
        return Population(rsi, low, high, float(alpha_from_rsi(rsi, beta_per_gy2)), beta_per_gy2,
                          "the training cohort's RSI")
    sr = rails.site(site)
    alpha = sr.population_alpha_beta_gy * beta_per_gy2
    return Population(math.exp(-2.0 * alpha - 4.0 * beta_per_gy2), math.nan, math.nan, alpha, beta_per_gy2,
                      f"the rails' population alpha/beta of {site} ({sr.population_source})")


@dataclass(frozen=True)
class GateResult:
    """The record's radiobiology and dose fields (contract names), its flags, and the reasons (for logs)."""

    fields: dict[str, Any]
    flags: list[str]
    reasons: list[str]
    fallback: bool


def _fallback_reasons(estimate: RSIEstimate, site: str, site_in_training: bool, clinical_outside: Sequence[str],
                      beta_per_gy2: float) -> tuple[list[str], list[str], list[str]]:
    """(flags, reasons for the fallback, other reasons)."""
    flags: list[str] = []
    fallback: list[str] = []
    notes: list[str] = list(estimate.reasons)
    imaging_rsi = estimate.source != SOURCE_MEASURED
    if not site_in_training:
        flags.append(FLAG_SITE_NOT_IN_TRAINING)
        fallback.append(f"site {site} was not in the model's training data")
    if estimate.no_usable_inputs:
        flags += [FLAG_MISSING_GENOMICS, FLAG_MISSING_IMAGING]
        fallback.append("no usable input: no measured RSI and no feature the model uses")
    outside = estimate.imaging_outside or bool(clinical_outside)
    if outside:
        flags.append(FLAG_OUT_OF_DISTRIBUTION)
        (fallback if imaging_rsi else notes).append(
            "outside the training domain: " + "; ".join([*(["imaging"] if estimate.imaging_outside else []),
                                                         *clinical_outside]))
    if imaging_rsi and estimate.uncalibrated_imaging:
        flags.append(FLAG_MISSING_IMAGING)
        fallback.append("imaging pattern without a calibrated prediction")
    if imaging_rsi:
        flags.append(FLAG_MISSING_GENOMICS)
    if estimate.missing_imaging:
        flags.append(FLAG_MISSING_IMAGING)
    problems = check_rsi(estimate.rsi, beta_per_gy2)
    if problems:
        flags.append(FLAG_OUT_OF_DISTRIBUTION)
        fallback.append(f"RSI {estimate.rsi:.4g} outside the LQ domain ({', '.join(problems)})")
    return flags, fallback, notes


def gate_record(*, patient_id: str, site: str, site_in_training: bool, clinical_outside: Sequence[str],
                estimate: RSIEstimate, regimen: Mapping[str, Any], population: Population,
                oar_doses: Mapping[str, Any] | None, reference_prescription_gy: float | None, rails: Rails,
                clip: tuple[float, float] = (0.0, 1.0)) -> GateResult:
    """One patient through the gate (see the module docstring). ``regimen``: ``n_fractions``,
    ``dose_per_fraction_gy``, ``target_gard`` and ``regimen_source`` (:mod:`radiogenomics.models.regimen`);
    ``clip``: the RSI model's clipping range (an interval end there was clipped)."""
    beta = population.beta_per_gy2
    flags, fallback, reasons = _fallback_reasons(estimate, site, site_in_training, clinical_outside, beta)
    rsi, lower, upper, source = estimate.rsi, estimate.lower, estimate.upper, estimate.source
    lq: PatientLQ | None = None
    if not fallback:
        lq = patient_lq(rsi, beta_per_gy2=beta)
        implausible = rails.lq.problems(lq.alpha_per_gy, lq.beta_per_gy2)
        if implausible:
            flags.append(FLAG_IMPLAUSIBLE_PARAMETER)
            fallback.append(f"RSI {rsi:.4g}: {'; '.join(implausible)} ({rails.lq.source})")
    if fallback:
        flags.append(FLAG_POPULATION_FALLBACK)
        reasons.append(f"population fallback ({population.source}): {'; '.join(fallback)}")
        rsi, lower, upper, source = population.rsi, population.lower, population.upper, SOURCE_POPULATION
        lq = patient_lq(alpha_per_gy=population.alpha_per_gy, beta_per_gy2=beta)
    assert lq is not None
    n, d = float(regimen["n_fractions"]), float(regimen["dose_per_fraction_gy"])
    sr = rails.site(site)
    if not sr.min_dose_per_fraction_gy <= d <= sr.max_dose_per_fraction_gy:
        raise InputError(f"dose_per_fraction_gy = {d:.4g} Gy of the {regimen['regimen_source']} regimen ({n:g} x "
                         f"{d:.4g} Gy) is outside the {site} rails [{sr.min_dose_per_fraction_gy}, "
                         f"{sr.max_dose_per_fraction_gy}] Gy per fraction",
                         patient_id=patient_id,
                         fix="give an explicit regimen within the rails (CLI --n-fractions/--dose-per-fraction-gy, "
                             "the request's regimen)")
    ends = _usable_interval(lower, upper, clip, rails, beta)
    if (math.isfinite(lower) and math.isnan(ends[0])) or (math.isfinite(upper) and math.isnan(ends[1])):
        flags.append(FLAG_IMPLAUSIBLE_PARAMETER)
        reasons.append(f"RSI interval [{lower:.4g}, {upper:.4g}]: an end was clipped or is implausible; no dose "
                       "is given for it")
    targets = dose_targets(
        lq, site=site, target_gard=float(regimen["target_gard"]), n_fractions=n, dose_per_fraction_gy=d,
        oar_dvhs=oar_doses if oar_doses and reference_prescription_gy else None,
        reference_prescription_gy=reference_prescription_gy, rails=rails, unknown_structures="flag",
        requested_total_dose_gy=n * d if fallback else None)
    record = targets.as_record()
    record["dose_for_target_gard_lower_gy"], record["dose_for_target_gard_upper_gy"] = (
        _interval_dose(lq, ends[0], float(regimen["target_gard"]), d),
        _interval_dose(lq, ends[1], float(regimen["target_gard"]), d))
    record.pop("toxicity")
    all_flags = [*flags, *record.pop("flags")]
    fields = {"rsi": float(rsi), "rsi_lower": float(lower), "rsi_upper": float(upper), **record, "site": site,
              "regimen_source": str(regimen["regimen_source"]), "rsi_source": source}
    return GateResult(fields, ordered_flags(all_flags), [*reasons, *targets.reasons], bool(fallback))


def _usable_interval(lower: float, upper: float, clip: tuple[float, float], rails: Rails,
                     beta: float) -> tuple[float, float]:
    """The interval's ends that give a dose: NaN for an end the model clipped, outside the LQ domain, or with an
    implausible alpha."""
    out = []
    for value in (lower, upper):
        usable = math.isfinite(value) and clip[0] < value < clip[1] and not check_rsi(value, beta)
        if usable:
            alpha = float(alpha_from_rsi(value, beta))
            usable = not rails.lq.problems(alpha, beta)
        out.append(value if usable else math.nan)
    return out[0], out[1]


def _interval_dose(lq: PatientLQ, rsi: float, target_gard: float, dose_per_fraction_gy: float) -> float:
    """Dose (Gy) for the target GARD at ``rsi`` with the record's beta (Scott 2017); NaN for a NaN end."""
    if math.isnan(rsi):
        return math.nan
    end = patient_lq(rsi, beta_per_gy2=lq.beta_per_gy2)
    return float(end.dose_for_gard(target_gard, dose_per_fraction_gy=dose_per_fraction_gy))


def ordered_flags(flags: Sequence[str]) -> list[str]:
    """Flags without repeats, in the vocabulary's order (unknown ones last, as given)."""
    unique = list(dict.fromkeys(flags))
    rank = {f: i for i, f in enumerate(FLAGS)}
    return sorted(unique, key=lambda f: rank.get(f, len(FLAGS)))


def check_record(record: Mapping[str, Any], rails: Rails) -> None:
    """Re-check a record read back (contract section 2: the hand-off re-runs the gate's invariants).

    The site is known to the rails; the recommended regimen is a whole number of fractions whose product is
    the recommended total; the total and the dose per fraction lie within the site's rails; flags are of the
    vocabulary. A record without a recommended dose (NaN: no safe dose) passes: nothing will be planned from it.
    InputError naming the patient and the field otherwise.
    """
    pid = str(record.get("patient_id") or "") or None
    site = record.get("site")
    if not isinstance(site, str) or not site:
        raise InputError("the record has no site: the rails it passed cannot be checked", patient_id=pid,
                         fix="predict it again with a model that writes the site (contract section 2)")
    sr = rails.site(site)
    unknown = [f for f in record.get("flags") or [] if f not in FLAGS]
    if unknown:
        raise InputError(f"the record has unknown flags {unknown}", patient_id=pid,
                         fix="use records written by radiogenomics (contract section 2 flags)")
    total = finite_number(record.get("recommended_total_dose_gy"))
    n = finite_number(record.get("recommended_n_fractions"))
    d = finite_number(record.get("recommended_dose_per_fraction_gy"))
    if total is None and n is None and d is None:
        return
    if total is None or n is None or d is None:
        raise InputError("the record's recommended regimen is incomplete (total, n_fractions, dose per fraction)",
                         patient_id=pid, fix="predict it again")
    if n != round(n) or n < 1:
        raise InputError(f"recommended_n_fractions = {n!r} is not a whole number of fractions", patient_id=pid)
    if not math.isclose(n * d, total, rel_tol=_PRODUCT_REL_TOL):
        raise InputError(f"recommended_n_fractions x recommended_dose_per_fraction_gy = {n * d:.6g} Gy is not the "
                         f"recommended total {total:.6g} Gy", patient_id=pid, fix="predict it again")
    tol = 1e-6
    if not sr.min_total_dose_gy - tol <= total <= sr.max_total_dose_gy + tol:
        raise InputError(f"recommended_total_dose_gy = {total:.4g} Gy is outside the {site} rails "
                         f"[{sr.min_total_dose_gy}, {sr.max_total_dose_gy}] Gy", patient_id=pid)
    if not sr.min_dose_per_fraction_gy - tol <= d <= sr.max_dose_per_fraction_gy + tol:
        raise InputError(f"recommended_dose_per_fraction_gy = {d:.4g} Gy is outside the {site} rails "
                         f"[{sr.min_dose_per_fraction_gy}, {sr.max_dose_per_fraction_gy}] Gy", patient_id=pid)
