"""OAR limits of the rails at a recommended regimen: hard limits lower the tumour dose, soft ones are reported.

Contract section 2, "OAR limits on the recommended dose". The patient's dose distribution is the reference
plan, planned at ``reference_prescription_gy``; a prescription P scales every OAR dose by ``P / reference``
(the plan scaled linearly), so each organ metric keeps its share f of the target dose. The rails' limits
(``data/rails.yaml``, QUANTEC) were derived from conventionally fractionated plans, the target at about 2 Gy
per fraction and the organ at its share of it. At n fractions a limit L becomes the physical organ dose with
the same effect (equal BED at the organ's alpha/beta, Fowler, Br J Radiol 1989;62:679; organ alpha/beta from the
tissue table ``data/tissues.yaml``) as L in the conventional course of the same plan
(:func:`conventional_limit_gy`): unchanged when the target gets 2 Gy per fraction, tighter for
hypofractionation, looser for hyperfractionation. The LKB toxicity of :mod:`targets` uses the same conversion
(:func:`conventional_organ_dose`), so the limits and the NTCP agree. The optimizer's objectives.json keeps the
nominal rail as a ceiling (``min(L, D_n)``, :func:`scaled_limit_gy`): never looser than the rails as written.

Per organ row of the rails, one :class:`LimitTerm` per limit:

* ``max_dose_gy`` -> metric ``max_gy`` (the organ's maximum dose);
* ``max_mean_dose_gy`` -> metric ``mean_gy``;
* ``max_ntcp`` of an LKB endpoint -> metric ``geud_gy``: the limit is the gEUD whose NTCP equals it,
  ``TD50 (1 + m Phi^-1(p))`` with ``a = 1/n`` (Burman et al. IJROBP 1991;21:123), exact for the LKB model
  because gEUD scales linearly with the plan (Niemierko, Med Phys 1997;24:103). It needs the organ's DVH, or
  its mean dose when ``n = 1``; otherwise the term is ``unchecked``.

Converting a mean dose or a gEUD to another fractionation as a whole (not bin by bin) is an approximation,
exact for a uniform organ dose. ``hard`` comes from the rails row (serial organs). Paired organs with a
"spared gland" rule (``spared_one_max_mean_dose_gy``; QUANTEC parotids, Deasy et al. IJROBP 2010;76:S58: both
glands < 25 Gy or one < 20 Gy) meet their mean-dose limit when one gland is spared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from radiogenomics.errors import InputError
from radiogenomics.radiobiology.dvh import DVH
from radiogenomics.radiobiology.lq import isoeffective_total_dose
from radiogenomics.radiobiology.ntcp import geud, geud_for_ntcp, ntcp_parameters
from radiogenomics.radiobiology.rails import OARLimit, Rails, load_rails
from radiogenomics.radiobiology.structures import resolve_structure
from radiogenomics.radiobiology.tissues import TissueTable, load_tissues

#: The rails' OAR limits are conventional doses: 2 Gy per fraction.
RAIL_DOSE_PER_FRACTION_GY = 2.0
#: ``status`` of one check (contract section 2).
OK, LIMITED, EXCEEDED, UNCHECKED = "ok", "limited", "exceeded", "unchecked"
FLAG_OAR_LIMITED = "oar_limited"
FLAG_OAR_LIMIT_EXCEEDED = "oar_limit_exceeded"
FLAG_OAR_SOFT_LIMIT_EXCEEDED = "oar_soft_limit_exceeded"
FLAG_OAR_UNCHECKED = "oar_unchecked"
FLAG_UNRECOGNISED_STRUCTURE = "unrecognised_structure"
#: Relative tolerance of "at the limit" (a hard limit that set the dose is met, not exceeded).
_REL_TOL = 1e-9


#: The conventional target dose per fraction the QUANTEC limits and the published NTCP models refer to.
CONVENTIONAL_DOSE_PER_FRACTION_GY = 2.0


def conventional_organ_dose(dose_gy: Any, prescription_gy: float, n_fractions: float,
                            alpha_beta_gy: float) -> np.ndarray:
    """Organ doses of a regimen (``prescription_gy`` to the target in ``n_fractions``) as the isoeffective organ
    doses under conventional fractionation of the same plan (target at 2 Gy per fraction).

    An organ voxel at total dose D gets ``D / n`` per fraction now; in the conventional course of the same plan
    it would get ``2 f`` per fraction, ``f = D / prescription`` its share of the target dose. Equal BED (Fowler,
    Br J Radiol 1989;62:679) gives ``D_conv = D (a/b + D/n) / (a/b + 2 f)``: unchanged when the target gets
    2 Gy per fraction, higher for hypofractionation. This keeps a limit or an NTCP model derived from
    conventionally fractionated plans (QUANTEC; e.g. Dijkema et al. IJROBP 2010;78:449, physical parotid mean
    dose) valid at other doses per fraction.
    """
    dose = np.asarray(dose_gy, dtype=np.float64)
    share = dose / float(prescription_gy) if prescription_gy > 0 else np.zeros_like(dose)
    return np.asarray(dose * (alpha_beta_gy + dose / n_fractions)
                      / (alpha_beta_gy + CONVENTIONAL_DOSE_PER_FRACTION_GY * share))


def conventional_limit_gy(limit_gy: float, n_fractions: float, alpha_beta_gy: float, share: float) -> float:
    """The physical organ dose in ``n_fractions`` whose :func:`conventional_organ_dose` equals ``limit_gy``, the
    organ at ``share`` of the target dose: the root of ``D (a/b + D/n) = L (a/b + 2 share)``,
    ``D = 2 c / (a/b + sqrt(a/b^2 + 4 c / n))`` with ``c = L (a/b + 2 share)`` (the stable form)."""
    ab = float(alpha_beta_gy)
    c = float(limit_gy) * (ab + CONVENTIONAL_DOSE_PER_FRACTION_GY * float(share))
    return 2.0 * c / (ab + math.sqrt(ab * ab + 4.0 * c / float(n_fractions)))


def scaled_limit_gy(limit_gy: float, n_fractions: float, alpha_beta_gy: float) -> float:
    """A rail limit (Gy in 2 Gy fractions) for ``n_fractions``: ``min(L, D_n)`` with equal BED (Fowler 1989)."""
    iso = float(isoeffective_total_dose(limit_gy, limit_gy / RAIL_DOSE_PER_FRACTION_GY, alpha_beta_gy,
                                        new_n_fractions=n_fractions))
    return min(limit_gy, iso)


@dataclass(frozen=True)
class OARDose:
    """One organ's dose in the patient's reference plan (total physical Gy): its differential DVH bins and/or
    summary metrics.

    ``name``: the structure's name in the patient's data (``Parotid_L``, ``spinal_cord``, ``Lt Parotid``).
    ``volume_cc`` weights the mean when left and right are added (lungs). ``dose_gy`` / ``volume``: the
    differential DVH (bin doses, bin volumes), None when only the metrics are known.
    """

    name: str
    mean_gy: float = math.nan
    max_gy: float = math.nan
    volume_cc: float = math.nan
    dose_gy: np.ndarray | None = field(default=None, repr=False)
    volume: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def of(cls, name: str, value: Any) -> OARDose:
        """An OARDose from a :class:`DVH`, a ``(dose_gy, volume)`` pair of a differential DVH, or an OARDose."""
        if isinstance(value, OARDose):
            return value
        if isinstance(value, DVH):
            return cls(name, value.mean_dose_gy, value.max_dose_gy, float(value.volume_cc.sum()), value.dose_gy,
                       value.volume_cc)
        try:
            dose_in, vol_in = value
        except (TypeError, ValueError) as exc:
            raise InputError(f"OAR dose of {name} must be a DVH, a (dose_gy, volume) pair or an OARDose.") from exc
        dose = np.asarray(dose_in, dtype=np.float64).ravel()
        vol = np.asarray(vol_in, dtype=np.float64).ravel()
        if dose.shape != vol.shape or not (np.isfinite(dose).all() and np.isfinite(vol).all()) \
                or (dose < 0).any() or (vol < 0).any() or vol.sum() <= 0:
            raise InputError(f"OAR DVH {name}: doses and volumes must be finite, non-negative, of one shape, with a "
                             "positive total volume.")
        return cls(name, float((dose * vol).sum() / vol.sum()), float(dose[vol > 0].max()), float(vol.sum()), dose,
                   vol)

    def metric_gy(self, metric: str, a: float | None = None) -> float:
        """The reference plan's ``max_gy``, ``mean_gy`` or ``geud_gy`` (volume parameter ``a``); NaN if unknown."""
        if metric == "max_gy":
            return self.max_gy
        if metric == "mean_gy":
            return self.mean_gy
        if metric == "geud_gy" and a is not None:
            if self.dose_gy is not None and self.volume is not None:
                return float(geud(self.dose_gy, self.volume, a))
            return self.mean_gy if a == 1.0 else math.nan
        raise InputError(f"unknown OAR metric {metric!r}.")


def combined(name: str, parts: list[OARDose]) -> OARDose:
    """Left and right of one organ as one whole-organ dose (QUANTEC lung limits are for both lungs)."""
    dvhs = [p for p in parts if p.dose_gy is not None and p.volume is not None]
    dose = np.concatenate([p.dose_gy for p in dvhs]) if len(dvhs) == len(parts) else None  # type: ignore[misc]
    vol = np.concatenate([p.volume for p in dvhs]) if len(dvhs) == len(parts) else None  # type: ignore[misc]
    volumes = np.array([p.volume_cc for p in parts])
    means = np.array([p.mean_gy for p in parts])
    mean = float((means * volumes).sum() / volumes.sum()) if np.isfinite(volumes).all() and volumes.sum() > 0 \
        else math.nan
    return OARDose(name, mean, float(np.max([p.max_gy for p in parts])), float(volumes.sum()), dose, vol)


@dataclass(frozen=True)
class LimitTerm:
    """One limit of the rails on one of the patient's organs.

    ``rail_gy``: the limit under conventional fractionation; ``value_ref_gy``: the metric in the reference plan
    (NaN: ``unchecked``); ``share``: its share of the reference prescription (kept when the plan is scaled);
    ``spared_gy``: the paired organ's spared-gland mean-dose limit, else None.
    """

    structure: str
    organ: str
    metric: str
    rail_gy: float
    alpha_beta_gy: float
    hard: bool
    source: str
    value_ref_gy: float
    share: float = math.nan
    spared_gy: float | None = None

    @property
    def checked(self) -> bool:
        return math.isfinite(self.value_ref_gy)

    def limit_gy(self, n_fractions: float, rail_gy: float | None = None) -> float:
        """The limit (total physical Gy of this organ) at ``n_fractions`` (:func:`conventional_limit_gy`); an
        unchecked term keeps the rail as written."""
        rail = self.rail_gy if rail_gy is None else rail_gy
        if not math.isfinite(self.share):
            return rail
        return conventional_limit_gy(rail, n_fractions, self.alpha_beta_gy, self.share)

    def value_gy(self, prescription_gy: float, reference_prescription_gy: float) -> float:
        """The metric with the plan scaled to ``prescription_gy``."""
        return self.value_ref_gy * prescription_gy / reference_prescription_gy

    def max_prescription_gy(self, n_fractions: float, reference_prescription_gy: float) -> float:
        """The highest prescription (Gy) in ``n_fractions`` that keeps this limit (inf for a zero dose)."""
        if self.value_ref_gy <= 0:
            return math.inf
        return self.limit_gy(n_fractions) * reference_prescription_gy / self.value_ref_gy


@dataclass(frozen=True)
class OARCheck:
    """One entry of the record's ``oar_checks`` (contract section 2) at the recommended regimen.

    ``limit_gy``: the rails' limit as written (conventional fractionation); ``value_gy``: the organ's metric at the
    recommended regimen expressed on that same basis (:func:`conventional_organ_dose`), so ``value_gy <=
    limit_gy`` is the check; ``dose_gy``: the metric's physical dose at the recommended regimen.
    """

    structure: str
    metric: str
    limit_gy: float
    value_gy: float
    hard: bool
    status: str
    source: str
    dose_gy: float = math.nan
    note: str = ""

    def as_record(self) -> dict[str, Any]:
        """The record's entry: the contract's fields plus ``dose_gy``, the limit's ``source`` and a ``note``."""
        return {"structure": self.structure, "metric": self.metric, "limit_gy": self.limit_gy,
                "value_gy": self.value_gy, "hard": self.hard, "status": self.status, "dose_gy": self.dose_gy,
                "source": self.source, "note": self.note}


@dataclass(frozen=True)
class OARTerms:
    """The limits that apply to one patient's organs (:func:`oar_terms`), with what was left out and why."""

    terms: list[LimitTerm]
    reference_prescription_gy: float
    notes: list[str] = field(default_factory=list)
    unrecognised: list[str] = field(default_factory=list)

    def max_prescription_gy(self, n_fractions: float) -> tuple[float, str | None]:
        """The highest prescription (Gy) in ``n_fractions`` that keeps every checked hard limit, and which term
        sets it (``"<structure>:<metric>"``; None when no hard limit applies)."""
        best, which = math.inf, None
        for t in self.terms:
            if t.hard and t.checked:
                cap = t.max_prescription_gy(n_fractions, self.reference_prescription_gy)
                if cap < best:
                    best, which = cap, f"{t.structure}:{t.metric}"
        return best, which

    def checks(self, prescription_gy: float, n_fractions: float, *, limited_by: str | None = None
               ) -> list[OARCheck]:
        """Every term evaluated at ``prescription_gy`` in ``n_fractions``. ``limited_by``: the hard term that
        set the prescription (status ``limited``)."""
        ref = self.reference_prescription_gy
        doses = {id(t): t.value_gy(prescription_gy, ref) for t in self.terms}
        values = {id(t): float(conventional_organ_dose(doses[id(t)], prescription_gy, n_fractions, t.alpha_beta_gy))
                  for t in self.terms}
        spared = {t.organ for t in self.terms if t.spared_gy is not None and t.metric == "mean_gy" and t.checked
                  and values[id(t)] <= t.spared_gy * (1.0 + _REL_TOL)}
        out: list[OARCheck] = []
        for t in self.terms:
            value = values[id(t)]
            note = ""
            if not t.checked:
                status = UNCHECKED
                note = ("needs the organ's DVH (or its mean dose when the NTCP model's n = 1)"
                        if t.metric == "geud_gy" else f"no {t.metric} of this organ")
            elif value > t.rail_gy * (1.0 + _REL_TOL):
                if t.spared_gy is not None and t.metric == "mean_gy" and t.organ in spared:
                    status, note = OK, f"another gland is spared below {t.spared_gy:g} Gy (paired-organ rule)"
                else:
                    status = EXCEEDED
            elif f"{t.structure}:{t.metric}" == limited_by:
                status = LIMITED
            else:
                status = OK
            out.append(OARCheck(t.structure, t.metric, t.rail_gy, value, t.hard, status, t.source, doses[id(t)],
                                note))
        return out


def oar_terms(oar_doses: Mapping[str, Any], reference_prescription_gy: float, *, rails: Rails | None = None,
              tissues: TissueTable | None = None) -> OARTerms:
    """The rails' limits on the patient's organs (structure name -> :class:`OARDose`, DVH or (dose, volume)).

    Names go through the TG-263 alias table: target volumes and the body outline are left out with a note; a
    recognised organ without a rails row is noted (no limit); a name that matches no organ is listed in
    ``unrecognised`` (flag ``unrecognised_structure``), never dropped silently. Organs with ``combine_sides``
    (lungs) are checked as one organ of their sides unless a whole-organ dose is given.
    """
    rails = rails or load_rails()
    tissues = tissues or load_tissues()
    ref = float(reference_prescription_gy)
    if not (math.isfinite(ref) and ref > 0):
        raise InputError(f"the reference prescription must be a positive dose, got {reference_prescription_gy!r}.",
                         fix="give the prescription the dose distribution was planned at (total_dose_gy)")
    notes: list[str] = []
    unknown: list[str] = []
    organs: list[tuple[OARDose, OARLimit, str | None]] = []
    for name, value in oar_doses.items():
        dose = OARDose.of(str(name), value)
        match = resolve_structure(str(name))
        if match is not None and match.kind != "oar":
            what = "a target volume" if match.kind == "target" else "the body outline"
            notes.append(f"{name} is {what}, not an organ at risk: no OAR limit")
            continue
        limit = rails.oar(str(name))
        if limit is None:
            if match is None:
                unknown.append(str(name))
                notes.append(f"{name} matches no organ of the alias table: its limits are not checked")
            else:
                notes.append(f"{name} ({match.canonical}): no limit in the rails")
            continue
        organs.append((dose, limit, match.side if match is not None else None))
    terms: list[LimitTerm] = []
    for dose, limit in _whole_organs(organs, notes):
        ab = _alpha_beta_gy(dose.name.split("+")[0], tissues, notes)
        common: dict[str, Any] = {"structure": dose.name, "organ": limit.organ, "alpha_beta_gy": ab,
                                  "hard": limit.hard, "source": limit.source}
        if limit.max_dose_gy is not None:
            terms.append(LimitTerm(metric="max_gy", rail_gy=limit.max_dose_gy, value_ref_gy=dose.max_gy, **common))
        if limit.max_mean_dose_gy is not None:
            terms.append(LimitTerm(metric="mean_gy", rail_gy=limit.max_mean_dose_gy, value_ref_gy=dose.mean_gy,
                                   spared_gy=limit.spared_one_max_mean_dose_gy, **common))
        if limit.max_ntcp is not None and limit.endpoint is not None:
            p = ntcp_parameters(limit.endpoint)
            geud_limit = float(geud_for_ntcp(limit.max_ntcp, p.td50_gy, p.m))
            source = (f"{limit.source}; NTCP <= {limit.max_ntcp:g} ({limit.endpoint}) as gEUD, LKB TD50 "
                      f"{p.td50_gy:g} Gy, m {p.m:g}, n {p.n:g}: {p.source}")
            terms.append(replace(LimitTerm(metric="geud_gy", rail_gy=geud_limit,
                                           value_ref_gy=dose.metric_gy("geud_gy", p.a), **common), source=source))
    terms = [replace(t, share=t.value_ref_gy / ref) for t in terms]
    return OARTerms(terms, ref, notes, unknown)


#: alpha/beta of an organ the tissue table does not know (a rails row outside the alias table): the generic
#: late-responding tissue value (Joiner & van der Kogel, Basic Clinical Radiobiology, 4th ed. 2009, ch. 8).
GENERIC_LATE_ALPHA_BETA_GY = 3.0


def _alpha_beta_gy(name: str, tissues: TissueTable, notes: list[str]) -> float:
    try:
        return tissues.lookup(name)[0].alpha_beta_gy
    except InputError:
        notes.append(f"{name}: no tissue row; the generic late-responding alpha/beta "
                     f"{GENERIC_LATE_ALPHA_BETA_GY:g} Gy converts its limits")
        return GENERIC_LATE_ALPHA_BETA_GY


def _whole_organs(organs: list[tuple[OARDose, OARLimit, str | None]], notes: list[str]
                  ) -> list[tuple[OARDose, OARLimit]]:
    """Each organ's dose; the sides of a ``combine_sides`` organ added into one, unless a whole organ is given."""
    out = [(d, lim) for d, lim, _ in organs if not lim.combine_sides]
    grouped: dict[str, list[tuple[OARDose, str | None]]] = {}
    for d, lim, side in organs:
        if lim.combine_sides:
            grouped.setdefault(lim.organ, []).append((d, side))
    limits = {lim.organ: lim for _, lim, _ in organs}
    for organ, parts in grouped.items():
        wholes = [d for d, side in parts if side is None]
        sides = [d for d, side in parts if side is not None]
        if wholes:
            out.extend((d, limits[organ]) for d in wholes)
            notes.extend(f"{d.name}: checked as part of the whole organ {wholes[0].name}" for d in sides)
            continue
        if len(sides) == 1:
            notes.append(f"{sides[0].name}: only one side given; the whole-organ limits apply to it (stricter)")
        out.append((combined("+".join(d.name for d in sides), sides), limits[organ]))
    return out
