"""``objectives.json`` (format ``radiogenomics-objectives/1``, contract section 7) from a prescription record.

What a plan optimizer reads for one patient. ``name`` is each structure's name in the patient's own files (an
RTSTRUCT's ROIName such as ``GTV-1`` or ``Lt Lung``), ``tg263_name`` its role (contract section 7); with the
patient's structures (:class:`~radiogenomics.cohort.roles.Resolved`, from the cohort) only structures the patient
has are listed, and ``structure_source`` says where the list came from (``patient``, ``given``, ``site_template``):

- the **target** (the patient's structure of role ``target_name``, default ``GTV``, else the patient's first
  target volume; targets are recognised by role and RTROIInterpretedType, never taken for OARs) with the
  patient's alpha/beta from the record and
  - ``target_effect``: the LQ effect per fraction ``alpha d + beta d^2`` at the record's recommended dose per
    fraction d (Fowler, Br J Radiol 1989;62:679); with a dose-prescription map, ``dose_map`` (``file``: the map
    beside the objectives; dose painting by numbers) leads, ``target_effect`` drops to priority 1 and the other
    target objectives follow the map's range;
  - ``min_dvh``: D95 >= 95 % of the recommended total dose, and ``max_dose``: at most 107 % of it (capped by the
    site's ``max_voxel_dose_gy`` rail) - the ICRU 50/62 homogeneity convention, dose within +7 % / -5 % of the
    prescription (ICRU Reports 50, 1993, and 62, 1999);
- every **organ at risk** with the tissue table's alpha/beta (:mod:`.tissues`) and one objective per limit of
  the safety rails (:mod:`radiogenomics.radiobiology.rails`, QUANTEC): ``max_dose_gy`` -> ``max_dose``,
  ``max_mean_dose_gy`` -> ``mean_dose``, an NTCP limit -> ``geud`` at the gEUD whose LKB NTCP equals it
  (``TD50 (1 + m Phi^-1(p))``, ``a = 1/n``; Burman et al. IJROBP 1991;21:123). The rails are conventional
  (2 Gy per fraction) doses: for the recommended number of fractions n a limit L becomes
  ``min(L, D_n)``, D_n the total in n fractions with the same BED as L in 2 Gy fractions at the organ's
  alpha/beta (Fowler 1989) - so no objective is ever looser than the rail. An OAR without a rail limit is
  listed with its alpha/beta, no objective and a note. An OAR name that is not an organ raises InputError.

An **adapted course** (contract section 8; ``delivered``: :class:`DeliveredDose`) gets objectives for the
remaining fractions only: the record's remaining regimen; each OAR limit becomes what the delivered fractions left
of it, ``B = L - EQD2_delivered`` (EQD2 adds, Withers 1983; for the maximum and gEUD this is conservative,
Minkowski's inequality: the whole course's max/gEUD is at most the sum of the parts'), converted to the remaining
fractions as above; the target's hotspot cap is the site's ``max_voxel_dose_gy`` minus the target dose delivered;
``adaptive`` says what was delivered.

The record's flags are copied into ``flags`` (population fallback, out of distribution ... still get
objectives); ``notes`` explains what was left out. :func:`validate_objectives` checks a document against the
JSON Schema ``planning/data/objectives.schema.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from radiogenomics.cohort.roles import Resolved, role_key
from radiogenomics.errors import InputError
from radiogenomics.radiobiology.ntcp import geud_for_ntcp, ntcp_parameters
from radiogenomics.radiobiology.oar_checks import scaled_limit_gy
from radiogenomics.radiobiology.rails import OARLimit, Rails, load_rails
from radiogenomics.radiobiology.structures import resolve_structure
from radiogenomics.radiobiology.tissues import Tissue, TissueTable, load_tissues

FORMAT = "radiogenomics-objectives/1"
SCHEMA_RESOURCE = "data/objectives.schema.json"
#: D95 >= 95 % and Dmax <= 107 % of the prescription (ICRU Reports 50 and 62: +7 % / -5 %).
COVERAGE_VOLUME_PCT = 95.0
COVERAGE_DOSE_FRACTION = 0.95
HOTSPOT_DOSE_FRACTION = 1.07
#: Relative weights for the optimizer (the contract's example values; an optimizer may rescale them).
PRIORITY = {"target_effect": 1000.0, "target_effect_with_map": 1.0, "min_dvh": 500.0, "target_max_dose": 300.0,
            "max_dose": 800.0, "mean_dose": 400.0, "geud": 400.0}
CONVENTIONS = {
    "doses": "total physical dose in Gy over the course, unless a name says per fraction",
    "target_effect": "LQ effect per fraction alpha*d + beta*d^2 at the recommended dose per fraction "
                     "(Fowler, Br J Radiol 1989;62:679)",
    "min_dvh": "at least volume_pct % of the structure receives >= dose_gy; target: D95 >= 95 % of the "
               "recommended total (ICRU 50/62)",
    "max_dose": "no voxel above dose_gy; target: 107 % of the recommended total, capped by the site's max voxel "
                "dose rail (ICRU 50/62)",
    "oar_limits": "QUANTEC rails in 2 Gy fractions, converted to the recommended number of fractions at the "
                  "organ's alpha/beta (equal BED) and never above the rail (min of both)",
    "geud": "NTCP limit of the rails as gEUD = TD50 (1 + m Phi^-1(p)), a = 1/n (LKB, Burman 1991)",
}


@dataclass(frozen=True)
class DeliveredDose:
    """What an adapted course has delivered (contract section 8): objectives then cover the remaining fractions.

    ``target_dose_gy``: the target's delivered total (Gy); ``oar_eqd2_gy``: per structure
    (:func:`~radiogenomics.features.naming.structure_slug` of its name: left and right apart) the delivered EQD2
    (Gy) of each limit kind (``max_dose``, ``mean_dose``, ``geud``), from the organ's planned dose scaled to the
    delivered fractions; a structure or kind not listed is taken as having received ``pro_rata`` of its limit (the
    delivered share of the course, the plan's own pace), said in its notes.
    """

    timepoint: str
    n_fractions: int
    target_dose_gy: float
    pro_rata: float
    oar_eqd2_gy: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    summary: Mapping[str, Any] = field(default_factory=dict)


#: A limit the delivered fractions have used up leaves this much (the schema's doses are > 0): nothing more.
SPENT_LIMIT_GY = 0.01


def _number(record: Mapping[str, Any], key: str) -> float:
    value = record.get(key)
    pid = str(record.get("patient_id") or "") or None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InputError(f"the record's {key} is {value!r}: no objectives without a finite positive value",
                         patient_id=pid, fix="the rails found no safe dose (see the record's flags) or the record "
                                             "is incomplete; check the regimen and the rails")
    return float(value)


def _oar_objectives(limit: OARLimit, n_fractions: float, tissue: Tissue, structure_key: str | None = None,
                    delivered: DeliveredDose | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Objectives for one OAR from its rails row, and notes (what the objectives cannot express). With
    ``delivered``: the limit left after the delivered fractions (module docstring)."""
    objectives: list[dict[str, Any]] = []
    notes: list[str] = []
    given = (delivered.oar_eqd2_gy.get(structure_key or "") or {}) if delivered is not None else {}

    def add(kind: str, rail_gy: float, **extra: Any) -> None:
        budget, spent = rail_gy, {}
        if delivered is not None:
            used = given.get(kind)
            if used is None:
                used = delivered.pro_rata * rail_gy
                notes.append(f"{kind}: the delivered dose is unknown (no DVH); taken as {delivered.pro_rata:.0%} of "
                             "the limit, the delivered share of the course")
            budget = rail_gy - float(used)
            spent = {"delivered_eqd2_gy": float(used), "remaining_rail_eqd2_gy": max(budget, 0.0)}
            if budget <= SPENT_LIMIT_GY:
                notes.append(f"{kind}: the delivered fractions used up the limit ({float(used):.4g} of "
                             f"{rail_gy:.4g} Gy EQD2): no more dose ({SPENT_LIMIT_GY} Gy)")
        dose = SPENT_LIMIT_GY if budget <= SPENT_LIMIT_GY else max(
            scaled_limit_gy(budget, n_fractions, tissue.alpha_beta_gy), SPENT_LIMIT_GY)
        objectives.append({"type": kind, "dose_gy": dose, **extra, "priority": PRIORITY[kind],
                           "rail_dose_gy": rail_gy, **spent, "source": limit.source})

    if limit.max_dose_gy is not None:
        add("max_dose", limit.max_dose_gy)
    if limit.max_mean_dose_gy is not None:
        add("mean_dose", limit.max_mean_dose_gy)
    if limit.max_ntcp is not None and limit.endpoint is not None:
        params = ntcp_parameters(limit.endpoint)
        add("geud", float(geud_for_ntcp(limit.max_ntcp, params.td50_gy, params.m)), a=params.a)
        objectives[-1]["source"] = (f"{limit.source}; NTCP <= {limit.max_ntcp:g} ({limit.endpoint}) as gEUD, "
                                    f"LKB TD50 {params.td50_gy:g} Gy, m {params.m:g}, n {params.n:g}: {params.source}")
    if limit.spared_one_max_mean_dose_gy is not None:
        notes.append(f"the rails also accept one gland with a mean dose <= {limit.spared_one_max_mean_dose_gy:g} Gy "
                     "instead; each gland here gets the stricter limit")
    if limit.combine_sides:
        notes.append("the rails' limits are for both sides together; applied to this structure alone (stricter)")
    return objectives, notes


def _oar_structure(name: str, n_fractions: float, rails: Rails, tissues: TissueTable,
                   patient_id: str | None, role: str | None = None, interpreted_type: str = "",
                   delivered: DeliveredDose | None = None) -> dict[str, Any]:
    """One OAR entry; ``name`` as the patient's files spell it, ``role`` its TG-263 role (default: ``name``)."""
    role = role or name
    try:
        tissue, match = tissues.lookup(role)
    except InputError as exc:
        shown = exc.reason if role == name else f"{exc.reason} (structure {name!r})"
        raise InputError(shown, patient_id=patient_id, file=exc.file, fix=exc.fix) from exc
    entry: dict[str, Any] = {"name": name, "role": "oar", "tg263_name": match.canonical,
                             "alpha_per_gy": tissue.alpha_per_gy, "beta_per_gy2": tissue.beta_per_gy2,
                             "alpha_beta_gy": tissue.alpha_beta_gy,
                             "source": f"alpha/beta: {tissue.source}"
                                       f"{'' if tissue.verified else ' (unverified)'}; alpha: {tissue.alpha_source}"}
    if interpreted_type:
        entry["rt_roi_interpreted_type"] = interpreted_type
    limit = rails.oar(role)
    if limit is None:
        entry["objectives"] = []
        entry["notes"] = [f"{match.canonical}: no limit in the safety rails, so no objective (alpha/beta given for "
                          "the optimizer's biological evaluation)"]
        return entry
    from radiogenomics.features.naming import structure_slug

    objectives, notes = _oar_objectives(limit, n_fractions, tissue, structure_slug(role), delivered)
    entry["objectives"] = objectives
    if notes:
        entry["notes"] = notes
    return entry


def _target_structure(record: Mapping[str, Any], target: Resolved, site: str | None, rails: Rails,
                      total_gy: float, d_gy: float, dose_map: Mapping[str, Any] | None = None,
                      delivered_gy: float = 0.0) -> dict[str, Any]:
    alpha = _number(record, "alpha_per_gy")
    beta = record.get("beta_per_gy2")
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not math.isfinite(beta) or beta < 0:
        raise InputError(f"the record's beta_per_gy2 is {beta!r}", patient_id=str(record.get("patient_id")),
                         fix="give a record of contract section 2")
    hotspot = HOTSPOT_DOSE_FRACTION * total_gy
    hotspot_source = "ICRU 50/62: at most 107 % of the prescription"
    hotspot_priority = PRIORITY["target_max_dose"]
    coverage = COVERAGE_DOSE_FRACTION * total_gy
    coverage_source = "ICRU 50/62: D95 >= 95 % of the prescription"
    if dose_map is not None:  # the map's own range: no cap below its maximum, no coverage above its minimum
        hotspot = HOTSPOT_DOSE_FRACTION * float(dose_map["max_gy"])
        hotspot_source = "ICRU 50/62: at most 107 % of the dose-prescription map's maximum"
        coverage = COVERAGE_DOSE_FRACTION * float(dose_map["min_gy"])
        coverage_source = "ICRU 50/62: D95 >= 95 % of the dose-prescription map's minimum"
    if site is not None:
        cap = rails.site(site).max_voxel_dose_gy - delivered_gy
        if cap < hotspot:
            hotspot, hotspot_source = cap, f"site {site} max_voxel_dose_gy rail ({rails.site(site).source})" + (
                f" less the {delivered_gy:.4g} Gy delivered" if delivered_gy else "")
            hotspot_priority = PRIORITY["max_dose"]  # a hard rail: as strong as a serial organ's limit
    effect: dict[str, Any] = {
        "type": "target_effect", "effect_per_fraction": alpha * d_gy + float(beta) * d_gy**2,
        "priority": PRIORITY["target_effect"],
        "source": f"alpha*d + beta*d^2 at d = {d_gy:.4g} Gy (Fowler 1989), patient alpha/beta from the model"}
    leading = [effect]
    if dose_map is not None:  # the map leads; the uniform effect stays, at a priority that cannot compete
        effect["priority"] = PRIORITY["target_effect_with_map"]
        effect["source"] += "; with dose painting the dose_map objective leads (this one only at priority 1)"
        leading.append({"type": "dose_map", "file": str(dose_map["file"]), "priority": PRIORITY["target_effect"],
                        "source": "dose painting by numbers: each target voxel's total dose follows the TCP-optimal "
                                  "dose-prescription map (Bentzen 2005; Brahme & Agren 1987), mean = the "
                                  "recommended total dose"})
    objectives = [
        *leading,
        {"type": "min_dvh", "dose_gy": coverage, "volume_pct": COVERAGE_VOLUME_PCT,
         "priority": PRIORITY["min_dvh"], "source": coverage_source},
        {"type": "max_dose", "dose_gy": hotspot, "priority": hotspot_priority, "source": hotspot_source},
    ]
    entry: dict[str, Any] = {"name": target.structure, "role": "target", "tg263_name": _tg263(target.role),
                             "alpha_per_gy": alpha, "beta_per_gy2": float(beta),
                             "alpha_beta_gy": alpha / float(beta) if beta > 0 else math.inf,
                             "source": "the patient's predicted LQ parameters (prescription record)"}
    if target.interpreted_type:
        entry["rt_roi_interpreted_type"] = target.interpreted_type
    entry["objectives"] = objectives
    return entry


def _tg263(role: str) -> str:
    match = resolve_structure(role)
    return match.canonical if match is not None else role


def _pick_target(structures: Sequence[Resolved], target_name: str) -> tuple[Resolved | None, list[str]]:
    """The patient's structure of role ``target_name``, else its first target volume (notes say so), else None."""
    targets = [s for s in structures if s.kind == "target"]
    wanted = role_key(target_name)
    named = [s for s in targets if role_key(s.role) == wanted]
    if named:
        return named[0], []
    if targets:
        chosen = targets[0]
        return chosen, [f"the patient has no structure of role {target_name}: the target is {chosen.structure} "
                        f"(role {chosen.role})"]
    return None, [f"the patient's structures include no target volume: the target is named by its role "
                  f"{target_name}"]


def build_objectives(record: Mapping[str, Any], *, site: str | None = None, oars: Sequence[str] | None = None,
                     target_name: str = "GTV", rails: Rails | None = None, tissues: TissueTable | None = None,
                     structures: Sequence[Resolved] | None = None,
                     dose_map: Mapping[str, Any] | None = None,
                     delivered: DeliveredDose | None = None) -> dict[str, Any]:
    """The ``radiogenomics-objectives/1`` document of one prescription record (see the module docstring).

    ``dose_map`` ({``file``, ``min_gy``, ``max_gy``}: the voxel dose-prescription map beside the objectives file):
    the target's ``dose_map`` objective leads (dose painting by numbers; ``target_effect`` stays at priority 1) and
    the target's other objectives follow the map's range (coverage at 95 % of its minimum, hotspot at 107 % of its
    maximum, never above the site's ``max_voxel_dose_gy``).

    ``structures``: the patient's own structures (role, name in the patient's files, RTROIInterpretedType; e.g.
    :meth:`radiogenomics.cohort.Cohort.resolve_structure` of each images.csv row): the target is the one of role
    ``target_name`` (else the first target volume), the OARs are the organs among them; targets (by role or
    RTROIInterpretedType) and the body outline are never OARs, and nothing the patient does not have is listed.
    ``oars``: OAR structure names as the patient's structure set spells them (TG-263 or an alias); they replace
    the OARs of ``structures``. Without either, the site's template list of the tissue table (none without a
    site; ``notes`` says it is a template). ``site`` also caps the target hotspot by its ``max_voxel_dose_gy``
    rail. ``delivered``: an adapted course; the record's ``recommended_*`` must then be the remaining fractions'
    (:func:`radiogenomics.planning.remaining.remaining_view`) and the limits are what is left (module docstring).
    InputError for a record without a safe dose, an unknown OAR name, or a target name that names an organ.
    """
    rails = rails or load_rails()
    tissues = tissues or load_tissues()
    pid = str(record.get("patient_id") or "")
    if not pid:
        raise InputError("the record has no patient_id", fix="give a record of contract section 2")
    match = resolve_structure(target_name)
    if match is not None and match.kind != "target":
        raise InputError(f"target_name {target_name!r} is not a target volume ({match.canonical})", patient_id=pid,
                         fix="name the target GTV, CTV or PTV (with any suffix)")
    total = _number(record, "recommended_total_dose_gy")
    n = _number(record, "recommended_n_fractions")
    d = _number(record, "recommended_dose_per_fraction_gy")
    if site is not None:
        rails.site(site)  # unknown site: InputError naming the known ones
    notes: list[str] = []
    target = Resolved(role=target_name, structure=target_name, how="")
    oar_list: list[Resolved] = []
    if structures is not None:
        source = "patient"
        picked, target_notes = _pick_target(structures, target_name)
        notes.extend(target_notes)
        target = picked or target
        oar_list = [s for s in structures if s.kind not in ("target", "external")]
        if oars is None and not oar_list:
            notes.append("the patient's structures include no organ at risk")
    if oars is not None:
        source = "given" if structures is None else source
        oar_list = [Resolved(role=name, structure=name, how="") for name in oars]
    elif structures is None:
        source = "site_template" if site is not None else "none"
        oar_list = [Resolved(role=name, structure=name, how="")
                    for name in (tissues.site_oars.get(site, []) if site is not None else [])]
        if oar_list:
            notes.append(f"the OAR list is the {site} site's template (tissues.yaml site_oars), not the patient's "
                         "structures: give the cohort for the patient's own")
        else:
            notes.append("no organs at risk: give the site or the OAR names")
    seen = {target.structure}
    entries = [_target_structure(record, target, site, rails, total, d, dose_map,
                                 delivered.target_dose_gy if delivered is not None else 0.0)]
    if dose_map is not None:
        notes.append(f"dose painting by numbers: the target's dose_map objective ({dose_map['file']}) leads; the "
                     "uniform target_effect stays at priority 1")
    for oar in oar_list:
        if oar.structure in seen:
            continue
        seen.add(oar.structure)
        entries.append(_oar_structure(oar.structure, n, rails, tissues, pid, role=oar.role,
                                      interpreted_type=oar.interpreted_type, delivered=delivered))
    alpha_beta = entries[0]["alpha_beta_gy"]
    if not math.isfinite(alpha_beta):
        del entries[0]["alpha_beta_gy"]
    flags = [str(f) for f in record.get("flags") or []]
    if flags:
        notes.append(f"the record is flagged {', '.join(flags)}: review before planning")
    extra: dict[str, Any] = {}
    if delivered is not None:
        extra["adaptive"] = {"timepoint": delivered.timepoint, "delivered_n_fractions": delivered.n_fractions,
                             "delivered_dose_gy": delivered.target_dose_gy, **dict(delivered.summary)}
        notes.append(f"adapted course at {delivered.timepoint}: these objectives are for the remaining "
                     f"{int(round(n))} fraction(s) after {delivered.n_fractions} delivered "
                     f"({delivered.target_dose_gy:.4g} Gy); OAR limits are what the delivered fractions left (EQD2)")
    return {"format": FORMAT, "patient_id": pid, "model_uri": str(record.get("model_uri") or ""),
            "model_version": str(record.get("model_version") or ""),
            "input_sha256": str(record.get("input_sha256") or ""), "n_fractions": int(round(n)),
            "dose_per_fraction_gy": d, "total_dose_gy": total, "site": site, "flags": flags, "notes": notes,
            "conventions": dict(CONVENTIONS), "structure_source": source, "structures": entries, **extra}


@lru_cache(maxsize=1)
def objectives_schema() -> dict[str, Any]:
    """The JSON Schema of ``radiogenomics-objectives/1`` (``planning/data/objectives.schema.json``)."""
    return dict(json.loads(resources.files("radiogenomics.planning").joinpath(SCHEMA_RESOURCE).read_text()))


def validate_objectives(doc: Any) -> None:
    """Check a document against the ``radiogenomics-objectives/1`` JSON Schema; InputError naming the field.

    Also checks what a schema cannot: structure names are unique and exactly one structure is the target.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(objectives_schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    pid = doc.get("patient_id") if isinstance(doc, dict) else None
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(document)"
        raise InputError(f"objectives.json is not {FORMAT}: {where}: {first.message}"
                         f"{f' (+{len(errors) - 1} more)' if len(errors) > 1 else ''}",
                         patient_id=str(pid) if pid else None, fix="write it with build_objectives()")
    names = [s["name"] for s in doc["structures"]]
    if len(set(names)) != len(names):
        raise InputError(f"objectives.json: structure names repeat ({names})", patient_id=str(pid))
    if sum(s["role"] == "target" for s in doc["structures"]) != 1:
        raise InputError("objectives.json: exactly one structure must have role 'target'", patient_id=str(pid))
