"""Normal-tissue LQ parameters of organs at risk (``radiobiology/data/tissues.yaml``), keyed by TG-263 name.

Each row gives the late-effect alpha/beta (Gy) with its source and whether it was verified, and alpha (a
placeholder, pyRadPlan's default ``alpha_x`` = 0.1 Gy^-1, unless a row sets one). Structure names go through the
TG-263 alias table (:mod:`radiogenomics.radiobiology.structures`), so ``spinal cord``, ``SpinalCord`` and
``cord`` find one row, and ``Parotid_L`` / ``Parotids`` the ``Parotid`` row. Every organ of the alias table must
have a row (checked on load): an OAR the rails know is never without alpha/beta.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from radiogenomics.errors import InputError
from radiogenomics.radiobiology._data import positive_number, read_yaml_table
from radiogenomics.radiobiology.structures import StructureMatch, resolve_structure


@dataclass(frozen=True)
class Tissue:
    """LQ parameters of one organ (``name``: the TG-263 name of its row)."""

    name: str
    alpha_beta_gy: float
    alpha_per_gy: float
    source: str
    alpha_source: str
    verified: bool

    @property
    def beta_per_gy2(self) -> float:
        """beta = alpha / (alpha/beta)."""
        return self.alpha_per_gy / self.alpha_beta_gy


@dataclass(frozen=True)
class TissueTable:
    """The validated table: rows by TG-263 name (and by the paired organs' "both" names), site OAR lists."""

    rows: dict[str, Tissue]
    site_oars: dict[str, list[str]]

    def lookup(self, name: str) -> tuple[Tissue, StructureMatch]:
        """The tissue row of an OAR name and its structure match; InputError for a name that is not an OAR."""
        match = resolve_structure(name)
        if match is None:
            raise InputError(f"OAR structure name {name!r} matches no organ of the TG-263 alias table",
                             fix="use a TG-263 name (e.g. SpinalCord, Brainstem, Parotid_L) or add the name to "
                                 "radiobiology/data/structure_aliases.yaml")
        if match.kind != "oar":
            what = "a target volume" if match.kind == "target" else "the body outline"
            raise InputError(f"{name!r} is {what}, not an organ at risk",
                             fix="list only organs at risk as OARs; give the target with target_name")
        key = match.canonical[:-2] if match.side in ("L", "R") else match.canonical
        if key not in self.rows:  # an alias-table organ without a row is caught on load; this is a safeguard
            raise InputError(f"no tissue row for {name!r} ({match.canonical})",
                             file="tissues.yaml", fix="add the organ to radiobiology/data/tissues.yaml")
        return self.rows[key], match


def _positive(row: Mapping[str, Any], key: str, where: str, what: str) -> float:
    return positive_number(row, key, where=where, what=f"tissues {what}")


def parse_tissues(doc: Any, where: str = "tissues.yaml") -> TissueTable:
    """Validate a tissue document (parsed YAML) against the alias table; unknown keys are errors."""
    if not isinstance(doc, dict) or not isinstance(doc.get("tissues"), dict) or not doc["tissues"]:
        raise InputError("tissues need a non-empty 'tissues' mapping", file=where)
    default_alpha = _positive(doc, "default_alpha_per_gy", where, "(top level)")
    default_source = str(doc.get("default_alpha_source") or "")
    rows: dict[str, Tissue] = {}
    organs_seen: set[str] = set()
    for name, row in doc["tissues"].items():
        what = f"tissues.{name}"
        if not isinstance(row, dict):
            raise InputError(f"{what} must be a mapping", file=where)
        unknown = set(row) - {"alpha_beta_gy", "alpha_per_gy", "alpha_source", "source", "verified"}
        if unknown:
            raise InputError(f"{what} has unknown keys {sorted(unknown)}", file=where)
        match = resolve_structure(str(name))
        if match is None or match.kind != "oar" or match.canonical != str(name):
            raise InputError(f"{what}: not a TG-263 organ name of structure_aliases.yaml", file=where,
                             fix="key each row by the organ's TG-263 name (e.g. SpinalCord, Parotid)")
        if not isinstance(row.get("source"), str) or not row["source"].strip():
            raise InputError(f"{what} has no source", file=where, fix="every row needs a source")
        if not isinstance(row.get("verified"), bool):
            raise InputError(f"{what}.verified must be true or false", file=where)
        alpha = _positive(row, "alpha_per_gy", where, what) if "alpha_per_gy" in row else default_alpha
        tissue = Tissue(str(name), _positive(row, "alpha_beta_gy", where, what), alpha, row["source"],
                        str(row.get("alpha_source") or default_source), row["verified"])
        rows[str(name)] = tissue
        organs_seen.add(str(match.organ))
        both = resolve_structure(f"{name} both")  # Parotid -> Parotids, Lung -> Lungs
        if both is not None and both.kind == "oar" and both.canonical != str(name):
            rows[both.canonical] = tissue
    from radiogenomics.radiobiology.structures import load_structure_aliases

    missing = sorted(load_structure_aliases().organs - organs_seen)
    if missing:
        raise InputError(f"tissues: organs of the alias table without a row: {', '.join(missing)}", file=where,
                         fix="add a row (alpha/beta with its source) for each")
    return TissueTable(rows, _site_oars(doc.get("site_oars") or {}, where))


def _site_oars(value: Any, where: str) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise InputError("tissues: site_oars must map a site to a list of OAR names", file=where)
    out: dict[str, list[str]] = {}
    for site, names in value.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(f"tissues: site_oars.{site} must be a list of names", file=where)
        out[str(site)] = list(names)
    return out


@lru_cache(maxsize=4)
def load_tissues(path: str | Path | None = None) -> TissueTable:
    """Load and validate the tissue table (default: the packaged ``radiobiology/data/tissues.yaml``)."""
    doc, where = read_yaml_table("tissues.yaml", path, "tissue table")
    return parse_tissues(doc, where)
