"""Safety rails: dose limits as validated data, applied by one function.

``data/rails.yaml`` holds per-site limits (min/max total dose, min/max dose per fraction, max voxel dose
for dose painting; *unverified institutional defaults*) and OAR limits (NTCP and mean/max dose, QUANTEC:
Marks et al. IJROBP 2010;76:S10 and the organ papers cited per row). :func:`apply_rails` turns a requested
total dose into the recommended one and the contract flags ``clipped_max`` / ``clipped_min``; it never
returns a dose outside the rails.

OAR names go through the TG-263 alias table (:mod:`structures`): ``SpinalCord``, ``spinal cord`` and
``cord`` are one organ. A name that matches neither the table nor the rails raises :class:`InputError`, or,
with ``unknown_structures="flag"``, adds the contract flag ``unrecognised_structure``: it never passes
silently. Target volumes and the body outline passed as OARs are ignored with a reason.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from radiogenomics.errors import InputError
from radiogenomics.radiobiology._data import positive_number, read_yaml_table
from radiogenomics.radiobiology._validation import FloatArray, finite, non_negative, positive
from radiogenomics.radiobiology.dvh import DVH
from radiogenomics.radiobiology.ntcp import max_prescription_for_ntcp, ntcp_parameters
from radiogenomics.radiobiology.structures import (
    StructureMatch,
    load_structure_aliases,
    resolve_structure,
    split_side,
    words,
)

logger = logging.getLogger(__name__)

FLAG_CLIPPED_MAX = "clipped_max"
FLAG_CLIPPED_MIN = "clipped_min"
FLAG_UNRECOGNISED_STRUCTURE = "unrecognised_structure"

#: What to do with an OAR name that matches nothing: raise InputError, or continue with the flag.
UnknownStructures = Literal["raise", "flag"]

_SITE_KEYS = ("min_total_dose_gy", "max_total_dose_gy", "min_dose_per_fraction_gy", "max_dose_per_fraction_gy",
              "max_voxel_dose_gy", "standard_total_dose_gy", "standard_n_fractions", "population_alpha_beta_gy")
_SITE_SOURCES = ("source", "standard_source", "population_source")
_LQ_KEYS = ("min_alpha_per_gy", "max_alpha_per_gy", "min_alpha_beta_gy", "max_alpha_beta_gy")
_OAR_KEYS = ("max_ntcp", "max_mean_dose_gy", "max_dose_gy", "spared_one_max_mean_dose_gy")


@dataclass(frozen=True)
class SiteRails:
    """Dose limits for one treatment site (Gy), its standard regimen and its population alpha/beta.

    ``standard_total_dose_gy`` in ``standard_n_fractions``: the regimen of a record whose inputs give none, and
    of the population fallback (contract section 2); ``population_alpha_beta_gy``: the fallback's alpha/beta
    for a site the model was not trained on. Each with its source.
    """

    site: str
    min_total_dose_gy: float
    max_total_dose_gy: float
    min_dose_per_fraction_gy: float
    max_dose_per_fraction_gy: float
    max_voxel_dose_gy: float
    source: str
    standard_total_dose_gy: float
    standard_n_fractions: int
    population_alpha_beta_gy: float
    standard_source: str
    population_source: str

    @property
    def standard_dose_per_fraction_gy(self) -> float:
        """The standard regimen's dose per fraction."""
        return self.standard_total_dose_gy / self.standard_n_fractions


@dataclass(frozen=True)
class LQPlausible:
    """The documented plausible range of a tumour's alpha (Gy^-1) and alpha/beta (Gy), with its source."""

    min_alpha_per_gy: float
    max_alpha_per_gy: float
    min_alpha_beta_gy: float
    max_alpha_beta_gy: float
    source: str

    def problems(self, alpha_per_gy: float, beta_per_gy2: float) -> list[str]:
        """Why (alpha, beta) is implausible; ``[]`` when both alpha and alpha/beta lie in the range."""
        out: list[str] = []
        if not (math.isfinite(alpha_per_gy) and self.min_alpha_per_gy <= alpha_per_gy <= self.max_alpha_per_gy):
            out.append(f"alpha {alpha_per_gy:.4g} /Gy outside the plausible [{self.min_alpha_per_gy:g}, "
                       f"{self.max_alpha_per_gy:g}] /Gy")
        ratio = alpha_per_gy / beta_per_gy2 if beta_per_gy2 > 0 else math.inf
        if not (math.isfinite(ratio) and self.min_alpha_beta_gy <= ratio <= self.max_alpha_beta_gy):
            out.append(f"alpha/beta {ratio:.4g} Gy outside the plausible [{self.min_alpha_beta_gy:g}, "
                       f"{self.max_alpha_beta_gy:g}] Gy")
        return out


@dataclass(frozen=True)
class OARLimit:
    """Limits for one organ at risk: NTCP of ``endpoint``, mean dose and/or maximum dose.

    ``hard``: a serial organ whose limit lowers the recommended tumour dose; otherwise (a parallel organ) the
    limit is reported, never acted on (contract section 2).
    """

    organ: str
    source: str
    hard: bool = False
    endpoint: str | None = None
    max_ntcp: float | None = None
    max_mean_dose_gy: float | None = None
    max_dose_gy: float | None = None
    #: Paired organ (e.g. parotids): the limits are also met when *one* gland keeps its NTCP/max limits and a
    #: mean dose <= this, whatever the other receives (QUANTEC parotid: both < 25 Gy or one < 20 Gy).
    spared_one_max_mean_dose_gy: float | None = None
    #: Left and right DVHs (``Lung_L``, ``Lung_R``) are added into one whole-organ DVH before the limits
    #: apply (QUANTEC lung limits are for both lungs together); a whole-organ DVH (``Lungs``) takes precedence.
    combine_sides: bool = False


@dataclass(frozen=True)
class Rails:
    """The validated rails table."""

    sites: dict[str, SiteRails]
    oars: dict[str, OARLimit]
    lq: LQPlausible

    def site(self, site: str) -> SiteRails:
        if site not in self.sites:
            raise InputError(f"no rails for site {site!r}.", fix=f"use one of {sorted(self.sites)}.")
        return self.sites[site]

    def oar(self, structure: str) -> OARLimit | None:
        """Limit for a structure name: a key of the table, or the same organ by the alias table
        (``SpinalCord`` -> ``spinal_cord``, ``lt_parotid`` -> ``parotid``); None when no row applies."""
        if structure in self.oars:
            return self.oars[structure]
        key = organ_key(structure)
        if key is None:
            return None
        return next((lim for name, lim in self.oars.items() if organ_key(name) == key), None)


def organ_key(name: str) -> str | None:
    """The organ a structure name denotes: the alias table's organ (``"Parotid_L"`` -> ``"parotid"``), None
    for targets and the body outline, else the name's words without a side word (``"spleen_l"`` -> ``"spleen"``)."""
    match = resolve_structure(name)
    if match is not None:
        return match.organ
    tokens = words(name)
    return "".join(split_side(tokens)[0] if tokens else tokens) or None


def _number(row: Mapping[str, Any], key: str, where: str, what: str, *, prob: bool = False) -> float:
    return positive_number(row, key, where=where, what=f"rails {what}", probability=prob)


def _source(row: Mapping[str, Any], where: str, what: str, key: str = "source") -> str:
    src = row.get(key)
    if not isinstance(src, str) or not src.strip():
        raise InputError(f"rails {what} has no {key}.", file=where, fix=f"every row needs a {key}.")
    return src


def parse_rails(doc: Any, where: str = "rails.yaml") -> Rails:
    """Validate a rails document (the parsed YAML) and build :class:`Rails`. Unknown keys are errors."""
    if not isinstance(doc, dict) or not isinstance(doc.get("sites"), dict) or not doc["sites"]:
        raise InputError("rails need a non-empty 'sites' mapping.", file=where)
    sites: dict[str, SiteRails] = {}
    for name, row in doc["sites"].items():
        what = f"sites.{name}"
        if not isinstance(row, dict):
            raise InputError(f"rails {what} must be a mapping.", file=where)
        unknown = set(row) - set(_SITE_KEYS) - set(_SITE_SOURCES)
        if unknown:
            raise InputError(f"rails {what} has unknown keys {sorted(unknown)}.", file=where)
        vals: dict[str, Any] = {k: _number(row, k, where, what) for k in _SITE_KEYS}
        if vals["min_total_dose_gy"] > vals["max_total_dose_gy"]:
            raise InputError(f"rails {what}: min_total_dose_gy > max_total_dose_gy.", file=where)
        if vals["min_dose_per_fraction_gy"] > vals["max_dose_per_fraction_gy"]:
            raise InputError(f"rails {what}: min_dose_per_fraction_gy > max_dose_per_fraction_gy.", file=where)
        if vals["max_voxel_dose_gy"] < vals["max_total_dose_gy"]:
            raise InputError(f"rails {what}: max_voxel_dose_gy < max_total_dose_gy.", file=where)
        _check_standard_regimen(vals, where, what)
        vals["standard_n_fractions"] = int(vals["standard_n_fractions"])
        sources: dict[str, Any] = {k: _source(row, where, what, k) for k in _SITE_SOURCES}
        sites[str(name)] = SiteRails(site=str(name), **sources, **vals)
    oars: dict[str, OARLimit] = {}
    for name, row in (doc.get("oars") or {}).items():
        what = f"oars.{name}"
        if not isinstance(row, dict):
            raise InputError(f"rails {what} must be a mapping.", file=where)
        unknown = set(row) - set(_OAR_KEYS) - {"source", "endpoint", "combine_sides", "hard"}
        if unknown:
            raise InputError(f"rails {what} has unknown keys {sorted(unknown)}.", file=where)
        combine = row.get("combine_sides", False)
        if not isinstance(combine, bool):
            raise InputError(f"rails {what}.combine_sides must be true or false.", file=where)
        if not isinstance(row.get("hard"), bool):
            raise InputError(f"rails {what}.hard must be true (a serial organ: the limit lowers the tumour dose) "
                             "or false (a parallel organ: the limit is reported).", file=where,
                             fix="say for every OAR row whether its limit is hard.")
        limits = {k: (_number(row, k, where, what, prob=k == "max_ntcp") if k in row else None) for k in _OAR_KEYS}
        if all(v is None for v in limits.values()):
            raise InputError(f"rails {what} sets no limit.", file=where)
        endpoint = row.get("endpoint")
        if limits["max_ntcp"] is not None:
            if not isinstance(endpoint, str):
                raise InputError(f"rails {what}.max_ntcp needs an NTCP endpoint.", file=where)
            ntcp_parameters(endpoint)  # must exist in the NTCP table
        if organ_key(str(name)) not in load_structure_aliases().organs:
            logger.warning("rails %s: not an organ of the alias table; it matches only its own name", what)
        oars[str(name)] = OARLimit(organ=str(name), source=_source(row, where, what), hard=row["hard"],
                                   endpoint=endpoint if isinstance(endpoint, str) else None,
                                   combine_sides=combine, **limits)
    return Rails(sites=sites, oars=oars, lq=_parse_lq(doc.get("lq_plausible"), where))


def _check_standard_regimen(vals: Mapping[str, float], where: str, what: str) -> None:
    """The standard regimen is a whole number of fractions inside the site's own rails."""
    n, total = vals["standard_n_fractions"], vals["standard_total_dose_gy"]
    if n != round(n):
        raise InputError(f"rails {what}.standard_n_fractions must be a whole number, got {n!r}.", file=where)
    if not vals["min_total_dose_gy"] <= total <= vals["max_total_dose_gy"] or not (
            vals["min_dose_per_fraction_gy"] - 1e-9 <= total / n <= vals["max_dose_per_fraction_gy"] + 1e-9):
        raise InputError(f"rails {what}: the standard regimen {total:g} Gy in {n:g} fractions is outside the "
                         "site's own rails.", file=where)


def _parse_lq(row: Any, where: str) -> LQPlausible:
    if not isinstance(row, dict):
        raise InputError("rails need an 'lq_plausible' mapping (the plausible range of tumour LQ parameters).",
                         file=where)
    unknown = set(row) - set(_LQ_KEYS) - {"source"}
    if unknown:
        raise InputError(f"rails lq_plausible has unknown keys {sorted(unknown)}.", file=where)
    vals = {k: _number(row, k, where, "lq_plausible") for k in _LQ_KEYS}
    if vals["min_alpha_per_gy"] >= vals["max_alpha_per_gy"] or vals["min_alpha_beta_gy"] >= vals["max_alpha_beta_gy"]:
        raise InputError("rails lq_plausible: each minimum must be below its maximum.", file=where)
    return LQPlausible(source=_source(row, where, "lq_plausible"), **vals)


def load_rails(path: str | Path | None = None) -> Rails:
    """Load and validate the rails (default: the packaged ``data/rails.yaml``).

    The packaged table is parsed once per process (every prescription needs it); each call gets its own
    ``sites`` and ``oars`` mappings (the rows are frozen), so a caller that edits its copy changes no other's.
    A ``path`` is read on every call.
    """
    if path is None:
        rails = _packaged_rails()
        return Rails(sites=dict(rails.sites), oars=dict(rails.oars), lq=rails.lq)
    doc, where = read_yaml_table("rails.yaml", path, "rails file")
    return parse_rails(doc, where)


@lru_cache(maxsize=1)
def _packaged_rails() -> Rails:
    doc, where = read_yaml_table("rails.yaml", None, "rails file")
    return parse_rails(doc, where)


@dataclass(frozen=True)
class RailsDecision:
    """Outcome of :func:`apply_rails`.

    ``recommended_total_dose_gy`` lies in [``lower_limit_gy``, ``upper_limit_gy``]; when those conflict
    (an OAR limit below the site minimum) there is no safe dose: ``feasible`` is False, the recommendation
    is NaN and both clip flags are set. ``flags`` uses the contract vocabulary; ``reasons`` explains them;
    ``oar_max_prescription_gy`` gives the highest prescription each OAR limit allows;
    ``unrecognised_structures`` the OAR names that matched nothing (flag ``unrecognised_structure``).
    """

    requested_total_dose_gy: float
    recommended_total_dose_gy: float
    lower_limit_gy: float
    upper_limit_gy: float
    feasible: bool
    flags: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    oar_max_prescription_gy: dict[str, float] = field(default_factory=dict)
    unrecognised_structures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class OARInput:
    """One OAR DVH the limits apply to: the caller's name (``+``-joined when sides were added), its limit."""

    name: str
    limit: OARLimit
    dose_gy: FloatArray
    volume: FloatArray
    mean_dose_gy: float
    max_dose_gy: float
    side: str | None = None


@dataclass(frozen=True)
class ResolvedOARs:
    """OAR DVHs sorted by :func:`resolve_oar_dvhs`: the ones with limits, notes, and unmatched names."""

    inputs: list[OARInput]
    notes: list[str]
    unrecognised: list[str]

    @property
    def flags(self) -> list[str]:
        return [FLAG_UNRECOGNISED_STRUCTURE] if self.unrecognised else []


def _dvh_arrays(value: DVH | tuple[Any, Any], name: str) -> tuple[FloatArray, FloatArray, float, float]:
    if isinstance(value, DVH):
        return value.dose_gy, value.volume_cc, value.mean_dose_gy, value.max_dose_gy
    try:
        dose_in, vol_in = value
    except (TypeError, ValueError) as exc:
        raise InputError(f"OAR DVH {name} must be a DVH or a (dose_gy, volume) pair.") from exc
    dose = non_negative(dose_in, f"{name} dose_gy")
    vol = non_negative(vol_in, f"{name} volume")
    if dose.shape != vol.shape or vol.sum() <= 0:
        raise InputError(f"OAR DVH {name}: dose and volume must have one shape and a positive total volume.")
    occupied = vol > 0
    return dose, vol, float((dose * vol).sum() / vol.sum()), float(dose[occupied].max())


def _not_an_oar(name: str, match: StructureMatch) -> str:
    what = "a target volume" if match.kind == "target" else "the body outline (External)"
    return f"{name} is {what}, not an organ at risk: ignored by the OAR limits"


def resolve_oar_dvhs(oar_dvhs: Mapping[str, DVH | tuple[Any, Any]], *, rails: Rails,
                     unknown_structures: UnknownStructures = "raise") -> ResolvedOARs:
    """Sort OAR DVHs (structure name -> DVH or (dose_gy, volume)) for the limits.

    Names go through the TG-263 alias table and the rails' own keys. Target volumes (GTV/CTV/ITV/PTV...) and
    the body outline are ignored with a note; a recognised organ without a row in the rails is noted (an
    explicit decision of the rails file); a name that matches nothing raises InputError, or with
    ``unknown_structures="flag"`` is listed in ``unrecognised`` (flag ``unrecognised_structure``). Organs with
    ``combine_sides`` get one DVH of their left and right parts unless a whole-organ DVH is given.
    """
    if unknown_structures not in ("raise", "flag"):
        raise InputError(f"unknown_structures must be 'raise' or 'flag', got {unknown_structures!r}.")
    notes: list[str] = []
    unknown: list[str] = []
    limited: list[OARInput] = []
    for name, value in oar_dvhs.items():
        dose, vol, mean, dmax = _dvh_arrays(value, name)
        match = resolve_structure(name)
        if match is not None and match.kind != "oar":
            notes.append(_not_an_oar(name, match))
            continue
        lim = rails.oar(name)
        if lim is not None:
            limited.append(OARInput(name, lim, dose, vol, mean, dmax, match.side if match else None))
        elif match is None:
            unknown.append(name)
        else:
            notes.append(f"{name} ({match.canonical}): recognised organ with no limit in the rails")
    if unknown and unknown_structures == "raise":
        raise InputError(
            f"OAR structure name(s) {', '.join(repr(n) for n in unknown)} match no organ of the alias table "
            "(structure_aliases.yaml) or the rails: their limits cannot be checked.",
            fix="use the TG-263 name (e.g. SpinalCord, Brainstem, Parotid_L), add the name to "
                "structure_aliases.yaml or a row to the rails file, or pass unknown_structures='flag' to "
                "continue with the flag unrecognised_structure.")
    for name in unknown:
        notes.append(f"unrecognised structure {name}: no OAR limit checked ({FLAG_UNRECOGNISED_STRUCTURE})")
        logger.warning("rails: structure %s matches no organ; flagged %s", name, FLAG_UNRECOGNISED_STRUCTURE)
    return ResolvedOARs(_combine_sides(limited, notes), notes, unknown)


def _combine_sides(limited: list[OARInput], notes: list[str]) -> list[OARInput]:
    """One whole-organ DVH per ``combine_sides`` organ: the whole DVH if given, else the sides added."""
    out = [x for x in limited if not x.limit.combine_sides]
    by_organ: dict[str, list[OARInput]] = {}
    for x in limited:
        if x.limit.combine_sides:
            by_organ.setdefault(x.limit.organ, []).append(x)
    for group in by_organ.values():
        wholes = [x for x in group if x.side is None]
        sides = [x for x in group if x.side is not None]
        if wholes:
            out.extend(wholes)
            notes.extend(f"{x.name}: not checked on its own, the whole-organ DVH {wholes[0].name} is used"
                         for x in sides)
            continue
        if len(sides) == 1:
            notes.append(f"{sides[0].name}: only one side given; the whole-organ limits apply to it (stricter)")
        volume = [float(x.volume.sum()) for x in sides]
        out.append(OARInput(
            "+".join(x.name for x in sides), sides[0].limit,
            np.concatenate([x.dose_gy for x in sides]), np.concatenate([x.volume for x in sides]),
            sum(x.mean_dose_gy * v for x, v in zip(sides, volume, strict=True)) / sum(volume),
            max(x.max_dose_gy for x in sides)))
    return out


def _limits_of(inputs: list[OARInput], ref: float, n_fractions: float | None,
               eqd2_alpha_beta_gy: float | None) -> dict[str, float]:
    limits: dict[str, float] = {}
    eqd2 = eqd2_alpha_beta_gy is not None
    paired: dict[str, list[tuple[str, dict[str, float], float]]] = {}
    for x in inputs:
        lim, name, mean, dmax = x.limit, x.name, x.mean_dose_gy, x.max_dose_gy
        own: dict[str, float] = {}
        if lim.max_ntcp is not None and lim.endpoint is not None:
            p = ntcp_parameters(lim.endpoint)
            own[f"{name}:ntcp"] = max_prescription_for_ntcp(
                x.dose_gy, x.volume, ref, lim.max_ntcp, td50_gy=p.td50_gy, m=p.m, n=p.n,
                n_fractions=n_fractions if eqd2 else None, alpha_beta_gy=eqd2_alpha_beta_gy)
        if lim.max_mean_dose_gy is not None:
            own[f"{name}:mean_dose"] = ref * lim.max_mean_dose_gy / mean if mean > 0 else math.inf
        if lim.max_dose_gy is not None:
            own[f"{name}:max_dose"] = ref * lim.max_dose_gy / dmax if dmax > 0 else math.inf
        if lim.spared_one_max_mean_dose_gy is not None:
            spared = ref * lim.spared_one_max_mean_dose_gy / mean if mean > 0 else math.inf
            paired.setdefault(lim.organ, []).append((name, own, spared))
        else:
            limits.update(own)
    for organ, glands in paired.items():
        limits[f"{organ}:paired"] = paired_organ_max_prescription(glands)
    return limits


def oar_max_prescriptions(oar_dvhs: Mapping[str, DVH | tuple[Any, Any]], reference_prescription_gy: float, *,
                          rails: Rails, n_fractions: float | None = None, eqd2_alpha_beta_gy: float | None = None,
                          unknown_structures: UnknownStructures = "raise",
                          ) -> tuple[dict[str, float], list[str], list[str]]:
    """Highest prescription (Gy) each OAR limit allows, the OAR DVHs scaling with the prescription.

    Names are resolved by :func:`resolve_oar_dvhs` (alias table; unknown names raise, or are flagged with
    ``unknown_structures="flag"``). NTCP limits use LKB (:func:`max_prescription_for_ntcp`); mean and max dose
    limits scale linearly. With ``n_fractions`` and ``eqd2_alpha_beta_gy`` the NTCP is computed on EQD2 bins
    (Fowler 1989). Paired organs with ``spared_one_max_mean_dose_gy`` give one ``<organ>:paired`` entry
    (:func:`paired_organ_max_prescription`). Returns (structure-limit -> Gy, notes, contract flags).
    """
    ref = float(positive(reference_prescription_gy, "reference_prescription_gy"))
    if eqd2_alpha_beta_gy is not None and n_fractions is None:
        raise InputError("eqd2_alpha_beta_gy needs n_fractions.")
    resolved = resolve_oar_dvhs(oar_dvhs, rails=rails, unknown_structures=unknown_structures)
    return _limits_of(resolved.inputs, ref, n_fractions, eqd2_alpha_beta_gy), resolved.notes, resolved.flags


def paired_organ_max_prescription(glands: list[tuple[str, dict[str, float], float]]) -> float:
    """Highest prescription (Gy) a paired organ allows under the QUANTEC either/or rule.

    Either every gland meets its own limits, or at least one gland meets its NTCP/max limits and the
    stricter 'spared' mean dose (Deasy et al., IJROBP 2010;76:S58: severe xerostomia is usually avoided
    when one parotid gets a mean < 20 Gy or both get < 25 Gy). ``glands``: (name, own limits, spared
    mean-dose limit), all in Gy of prescription.
    """
    all_meet = min((min(own.values(), default=math.inf) for _, own, _ in glands), default=math.inf)
    one_spared = max(min([v for k, v in own.items() if not k.endswith(":mean_dose")] + [spared])
                     for _, own, spared in glands)
    return max(all_meet, one_spared)


def apply_rails(total_dose_gy: float, *, site: str, n_fractions: float | None = None,
                dose_per_fraction_gy: float | None = None,
                oar_dvhs: Mapping[str, DVH | tuple[Any, Any]] | None = None,
                reference_prescription_gy: float | None = None, eqd2_alpha_beta_gy: float | None = None,
                rails: Rails | None = None, unknown_structures: UnknownStructures = "raise") -> RailsDecision:
    """Clip a requested total dose (Gy) into the rails; return it with the contract flags.

    Limits: the site's min/max total dose; with ``n_fractions``, ``n * [min, max] dose per fraction``;
    ``dose_per_fraction_gy`` outside the site's range is an error (the regimen itself is unsafe); OAR
    limits from ``oar_dvhs`` (structure -> DVH planned at ``reference_prescription_gy``) lower the maximum.
    Above the maximum -> the maximum and ``clipped_max``; below the minimum -> the minimum and
    ``clipped_min``. An OAR name that matches nothing raises InputError, or with
    ``unknown_structures="flag"`` adds ``unrecognised_structure`` (see :func:`resolve_oar_dvhs`).
    """
    rails = rails or load_rails()
    sr = rails.site(site)
    requested = float(finite(total_dose_gy, "total_dose_gy"))
    if requested < 0:
        raise InputError(f"total_dose_gy must be >= 0, got {requested}.")
    lower, upper = sr.min_total_dose_gy, sr.max_total_dose_gy
    reasons: list[str] = []
    if n_fractions is not None and dose_per_fraction_gy is not None:
        raise InputError("give at most one of n_fractions or dose_per_fraction_gy.")
    if n_fractions is not None:
        n = float(positive(n_fractions, "n_fractions"))
        if n * sr.max_dose_per_fraction_gy < upper:
            upper = n * sr.max_dose_per_fraction_gy
            reasons.append(f"max dose per fraction {sr.max_dose_per_fraction_gy} Gy x {n:g} fractions")
        if n * sr.min_dose_per_fraction_gy > lower:
            lower = n * sr.min_dose_per_fraction_gy
            reasons.append(f"min dose per fraction {sr.min_dose_per_fraction_gy} Gy x {n:g} fractions")
    if dose_per_fraction_gy is not None:
        d = float(positive(dose_per_fraction_gy, "dose_per_fraction_gy"))
        if not sr.min_dose_per_fraction_gy <= d <= sr.max_dose_per_fraction_gy:
            raise InputError(f"dose_per_fraction_gy = {d} is outside the {site} rails "
                             f"[{sr.min_dose_per_fraction_gy}, {sr.max_dose_per_fraction_gy}] Gy.",
                             fix="choose a regimen within the rails.")
    oar_limits: dict[str, float] = {}
    resolved = ResolvedOARs([], [], [])
    if oar_dvhs:
        if reference_prescription_gy is None:
            raise InputError("oar_dvhs need reference_prescription_gy (the prescription they were planned at).")
        ref = float(positive(reference_prescription_gy, "reference_prescription_gy"))
        if eqd2_alpha_beta_gy is not None and n_fractions is None:
            raise InputError("eqd2_alpha_beta_gy needs n_fractions.")
        resolved = resolve_oar_dvhs(oar_dvhs, rails=rails, unknown_structures=unknown_structures)
        oar_limits = _limits_of(resolved.inputs, ref, n_fractions, eqd2_alpha_beta_gy)
        reasons.extend(resolved.notes)
        if oar_limits:
            which = min(oar_limits, key=lambda k: oar_limits[k])
            if oar_limits[which] < upper:
                upper = oar_limits[which]
                reasons.append(f"OAR limit {which}: max prescription {upper:.2f} Gy")
    if upper < lower:
        reasons.append(f"no safe dose: upper limit {upper:.2f} Gy < lower limit {lower:.2f} Gy")
        logger.warning("rails (%s): %s", site, reasons[-1])
        return RailsDecision(requested, math.nan, lower, upper, False,
                             [FLAG_CLIPPED_MAX, FLAG_CLIPPED_MIN, *resolved.flags], reasons, oar_limits,
                             resolved.unrecognised)
    flags: list[str] = []
    recommended = requested
    if requested > upper:
        recommended = upper
        flags.append(FLAG_CLIPPED_MAX)
        reasons.append(f"requested {requested:.2f} Gy > max {upper:.2f} Gy")
    elif requested < lower:
        recommended = lower
        flags.append(FLAG_CLIPPED_MIN)
        reasons.append(f"requested {requested:.2f} Gy < min {lower:.2f} Gy")
    return RailsDecision(requested, recommended, lower, upper, True, [*flags, *resolved.flags], reasons,
                         oar_limits, resolved.unrecognised)


def clip_voxel_doses(dose_gy: Any, *, site: str, rails: Rails | None = None) -> tuple[FloatArray, list[str]]:
    """Clip a voxel dose map to [0, max_voxel_dose_gy] of ``site``; flags ``clipped_max`` if anything moved."""
    rails = rails or load_rails()
    sr = rails.site(site)
    dose = non_negative(dose_gy, "dose_gy")
    clipped = np.minimum(dose, sr.max_voxel_dose_gy)
    flags = [FLAG_CLIPPED_MAX] if (dose > sr.max_voxel_dose_gy).any() else []
    return clipped, flags
