"""Structure roles: which structure of a mask file an images.csv row means (contract section 1).

``roi`` in images.csv is the structure's *role*, a TG-263 name in any case or spacing (``GTV``, ``Parotid_L``);
features are keyed by it. The optional ``structure`` column is the name inside the mask file when it differs
(``GTV-1``). Without it, a role is resolved in an RTSTRUCT by, in this order:

1. the exact name (``GTV`` -> ``GTV``; then ignoring case, when that is unique);
2. ``structure_aliases:`` of cohort.yaml (role -> list of names);
3. the shipped TG-263 alias table, ``radiobiology/data/structure_aliases.yaml`` (``Parotid_L`` -> ``Parotid L``,
   ``SpinalCord`` -> ``cord``, ``External`` -> ``BODY``);
4. for a target role (GTV, CTV, PTV, ITV): the one ROI whose RTROIInterpretedType is that type or whose name
   starts with it (``GTV-1``, ``GTVp``, ``GTV_70`` for GTV).

The first step that finds exactly one structure wins; a step that finds several is an error
(``ambiguous_structure``), and so is finding none (``missing_structure``); both list the ROIs the file holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from radiogenomics.errors import InputError

YAML_KEY = "structure_aliases"
#: Target types a role can name (DICOM RTROIInterpretedType defines GTV, CTV and PTV; ITV is the ICRU 62 name).
TARGET_TYPES = ("GTV", "CTV", "PTV", "ITV")
#: RTROIInterpretedType values that make a structure a target volume, whatever its name.
TARGET_INTERPRETED_TYPES = frozenset({"GTV", "CTV", "PTV", "ITV"})
EXTERNAL_INTERPRETED_TYPE = "EXTERNAL"

StructureKind = Literal["target", "oar", "external", "unknown"]

HOW_STRUCTURE = "structure column"
HOW_EXACT = "exact name"
HOW_COHORT_ALIAS = "cohort.yaml structure_aliases"
HOW_TG263 = "TG-263 alias table"
HOW_INTERPRETED = "target type (RTROIInterpretedType)"
HOW_PREFIX = "target type (name prefix)"
HOW_LABEL = "label value"
HOW_LABEL_NAME = "label name"

_SPLIT = re.compile(r"[\s_\-.]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


class StructureError(InputError):
    """A role that resolves to no structure (``missing_structure``) or to several (``ambiguous_structure``)."""

    def __init__(self, code: str, message: str, **where: Any) -> None:
        super().__init__(message, **where)
        self.code = code


@dataclass(frozen=True)
class RoiInfo:
    """One structure of an RTSTRUCT: its ROINumber, ROIName and RTROIInterpretedType (upper case, may be '')."""

    number: int
    name: str
    interpreted_type: str = ""

    def describe(self) -> str:
        """The name, with the interpreted type when it tells what the name does not (``Tumor Bed (CTV)``)."""
        kind = self.interpreted_type
        telling = kind in TARGET_INTERPRETED_TYPES or kind == EXTERNAL_INTERPRETED_TYPE
        return f"{self.name} ({kind})" if telling and not self.name.strip().upper().startswith(kind) else self.name


@dataclass(frozen=True)
class Resolved:
    """What a role resolved to: the structure's name in the mask file, how it was found, its interpreted type."""

    role: str
    structure: str
    how: str
    interpreted_type: str = ""
    number: int | None = None

    @property
    def kind(self) -> StructureKind:
        return structure_kind(self.role, self.interpreted_type)

    def to_dict(self) -> dict[str, object]:
        return {"role": self.role, "structure": self.structure, "how": self.how,
                "interpreted_type": self.interpreted_type, "kind": self.kind}


def role_key(name: str) -> str:
    """A role's comparison key: lower-case words joined (``Parotid_L`` = ``parotid l`` = ``ParotidL``)."""
    words = _SPLIT.split(_CAMEL.sub(" ", str(name).strip()))
    return "".join(w.lower() for w in words if w)


def target_type(role: str) -> str | None:
    """``GTV``/``CTV``/``PTV``/``ITV`` when the role is exactly a target type (any case or spacing), else None."""
    key = role_key(role).upper()
    return key if key in TARGET_TYPES else None


def structure_kind(role: str, interpreted_type: str = "") -> StructureKind:
    """``target`` for a target role (GTV, PTV70, CTV_High ...) or a GTV/CTV/PTV RTROIInterpretedType (never an
    organ at risk, whatever its name), ``external`` for the body outline, ``oar`` for an organ of the TG-263 alias
    table, else ``unknown``."""
    kind = str(interpreted_type).strip().upper()
    if kind in TARGET_INTERPRETED_TYPES:
        return "target"
    from radiogenomics.radiobiology.structures import resolve_structure

    match = resolve_structure(role)
    if match is not None and match.kind == "target":
        return "target"
    if kind == EXTERNAL_INTERPRETED_TYPE or (match is not None and match.kind == "external"):
        return "external"
    return "oar" if match is not None else "unknown"


def parse_structure_aliases(value: Any) -> dict[str, tuple[str, ...]]:
    """cohort.yaml ``structure_aliases`` (role -> list of names in the patients' files) -> ``{role: names}``.

    InputError naming the key for a value that is not a mapping, a role that is not a non-empty name, names that
    are not a list of non-empty strings, a role given twice (in any case or spacing), or a name two roles claim.
    """
    where = "cohort.yaml: structure_aliases"
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where} must be a mapping of role -> list of structure names, got "
                         f"{type(value).__name__}", fix=f"write e.g. '{YAML_KEY}: {{GTV: [GTV-1, GTVp]}}'")
    out: dict[str, tuple[str, ...]] = {}
    keys: dict[str, str] = {}
    owners: dict[str, str] = {}
    for role, names in value.items():
        if not isinstance(role, str) or not role.strip():
            raise InputError(f"{where}: the key {role!r} is not a role name",
                             fix="use TG-263 role names as keys (GTV, CTV, Parotid_L, ...)")
        if isinstance(names, str) or not isinstance(names, list) or not names or not all(
                isinstance(n, str) and n.strip() for n in names):
            raise InputError(f"{where}.{role} must be a non-empty list of structure names, got {names!r}",
                             fix=f"write e.g. '{YAML_KEY}: {{{role}: [name in the RTSTRUCT, ...]}}'")
        key = role_key(role)
        if key in keys:
            raise InputError(f"{where}: roles {keys[key]!r} and {role!r} are the same role",
                             fix="give each role once")
        keys[key] = role
        for name in names:
            folded = name.strip().casefold()
            if folded in owners and owners[folded] != role:
                raise InputError(f"{where}: the name {name!r} is listed for {owners[folded]!r} and {role!r}",
                                 fix="give each structure name to one role")
            owners[folded] = role
        out[role.strip()] = tuple(dict.fromkeys(n.strip() for n in names))
    return out


def aliases_for(aliases: Mapping[str, Sequence[str]], role: str) -> tuple[str, ...]:
    """The cohort.yaml names of ``role`` (matched by :func:`role_key`); () when the role has none."""
    key = role_key(role)
    for name, names in aliases.items():
        if role_key(name) == key:
            return tuple(names)
    return ()


def _holds(rois: Sequence[RoiInfo]) -> str:
    return ", ".join(r.describe() for r in rois) or "no structure"


def _by_name(rois: Sequence[RoiInfo], name: str) -> list[RoiInfo]:
    exact = [r for r in rois if r.name == name]
    if exact:
        return exact
    folded = name.strip().casefold()
    return [r for r in rois if r.name.strip().casefold() == folded]


def _tg263_matches(rois: Sequence[RoiInfo], role: str) -> list[RoiInfo]:
    from radiogenomics.radiobiology.structures import resolve_structure

    wanted = resolve_structure(role)
    if wanted is None:
        return []
    found = []
    for roi in rois:
        match = resolve_structure(roi.name)
        if match is None or match.kind != wanted.kind:
            continue
        same = (role_key(match.canonical) == role_key(wanted.canonical) if wanted.kind == "target"
                else match.canonical == wanted.canonical)
        if same:
            found.append(roi)
    return found


def _target_matches(rois: Sequence[RoiInfo], kind: str) -> tuple[list[RoiInfo], dict[int, str]]:
    found: list[RoiInfo] = []
    how: dict[int, str] = {}
    for roi in rois:
        interpreted = roi.interpreted_type.upper()
        if interpreted == kind:
            found.append(roi)
            how[roi.number] = HOW_INTERPRETED
        elif roi.name.strip().upper().startswith(kind) and interpreted not in TARGET_INTERPRETED_TYPES - {kind}:
            found.append(roi)
            how[roi.number] = HOW_PREFIX
    return found, how


def resolve_role(role: str, rois: Sequence[RoiInfo], *, structure: str | None = None,
                 aliases: Sequence[str] = (), file: str | None = None,
                 patient_id: str | None = None) -> Resolved:
    """The structure of ``rois`` (an RTSTRUCT's) that ``role`` means; see the module docstring for the order.

    ``structure``: the images.csv ``structure`` cell (the name in the file; only that name is tried).
    ``aliases``: cohort.yaml's names for this role. Raises :class:`StructureError`.
    """
    where: dict[str, Any] = {"file": file, "patient_id": patient_id}

    def found(roi: RoiInfo, how: str) -> Resolved:
        return Resolved(role=role, structure=roi.name, how=how, interpreted_type=roi.interpreted_type,
                        number=roi.number)

    def several(what: str, candidates: Sequence[RoiInfo]) -> StructureError:
        return StructureError(
            "ambiguous_structure",
            f"role '{role}' matches {len(candidates)} structures by {what}: {_holds(candidates)}; the RTSTRUCT "
            f"holds: {_holds(rois)}.",
            fix=f"name the one meant in a 'structure' column of images.csv, or list it under "
                f"'{YAML_KEY}: {{{role}: [...]}}' in cohort.yaml.", **where)

    if structure:
        named = _by_name(rois, structure)
        if len(named) == 1:
            return found(named[0], HOW_STRUCTURE)
        if len(named) > 1:
            raise several(f"its structure name '{structure}'", named)
        raise StructureError("missing_structure",
                             f"structure '{structure}' (role '{role}') is not in the RTSTRUCT; it holds: "
                             f"{_holds(rois)}.",
                             fix="set the structure column to one of the structure names.", **where)
    exact = _by_name(rois, role)
    if len(exact) == 1:
        return found(exact[0], HOW_EXACT)
    if len(exact) > 1:
        raise several("name", exact)
    if aliases:
        wanted = {a.strip().casefold() for a in aliases}
        listed = [r for r in rois if r.name.strip().casefold() in wanted]
        if len(listed) == 1:
            return found(listed[0], HOW_COHORT_ALIAS)
        if len(listed) > 1:
            raise several(YAML_KEY, listed)
    table = _tg263_matches(rois, role)
    if len(table) == 1:
        return found(table[0], HOW_TG263)
    if len(table) > 1:
        raise several("the TG-263 alias table", table)
    kind = target_type(role)
    if kind is not None:
        targets, how = _target_matches(rois, kind)
        if len(targets) == 1:
            return found(targets[0], how[targets[0].number])
        if len(targets) > 1:
            raise several(f"target type {kind} (RTROIInterpretedType or name prefix)", targets)
    steps = "exact name" + (", cohort.yaml structure_aliases" if aliases else "") + ", TG-263 alias table" + (
        f", target type {kind}" if kind else "")
    raise StructureError(
        "missing_structure",
        f"role '{role}' matches no structure of the RTSTRUCT (tried {steps}); it holds: {_holds(rois)}.",
        fix=f"set roi to a role the file holds, name the structure in a 'structure' column of images.csv, or "
            f"list it under '{YAML_KEY}: {{{role}: [...]}}' in cohort.yaml.", **where)
