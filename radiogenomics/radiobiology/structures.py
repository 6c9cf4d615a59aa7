"""Structure names -> organs: the TG-263 alias table (``data/structure_aliases.yaml``).

Standard names: AAPM TG-263 (Mayo et al., IJROBP 2018;100:1057). A name is split into words at spaces,
underscores, hyphens, dots and camel-case boundaries and matched case-insensitively, so ``SpinalCord``,
``spinal_cord`` and ``Spinal Cord`` are one organ; a first or last word ``l/lt/left`` or ``r/rt/right``
gives the side (``Parotid_L`` = ``L Parotid`` = ``lt_parotid``). Target volumes (GTV, CTV, ITV, PTV and any
suffix) and the body outline (``External``) are recognised but are not organs at risk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from radiogenomics.errors import InputError
from radiogenomics.radiobiology._data import read_yaml_table

StructureKind = Literal["oar", "target", "external"]

_LEFT = frozenset({"l", "lt", "left", "lft"})
_RIGHT = frozenset({"r", "rt", "right", "rght"})
_BOTH = frozenset({"both", "bilat", "bilateral", "total"})
_SPLIT = re.compile(r"[\s_\-.]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@dataclass(frozen=True)
class StructureMatch:
    """A recognised structure name.

    ``canonical``: the TG-263 name with its side (``Parotid_L``), the whole paired organ (``Lungs``), the
    target name with its type upper-cased (``ptv70`` -> ``PTV70``) or ``External``. ``organ``: the key of the
    rails' OAR table (``parotid``); None for targets and the body outline. ``side``: ``"L"``, ``"R"`` or None
    (unpaired organ, or both sides).
    """

    name: str
    canonical: str
    kind: StructureKind
    organ: str | None = None
    side: str | None = None


@dataclass(frozen=True)
class _Entry:
    tg263: str
    organ: str
    sided: bool
    both: str | None
    whole_only: bool  # the alias names both sides together (e.g. "Lungs")


def words(name: str) -> list[str]:
    """Lower-case words of a structure name (split at spaces, ``_``, ``-``, ``.`` and camel case)."""
    return [w.lower() for w in _SPLIT.split(_CAMEL.sub(" ", str(name).strip())) if w]


def _key(name: str) -> str:
    return "".join(words(name))


def split_side(tokens: list[str]) -> tuple[list[str], str | None]:
    """Split a side word off the end (or else the start) of a name's words: ``(rest, "L" | "R" | "both")``,
    or ``(tokens, None)`` when neither end is a side word."""
    for word, rest in ((tokens[-1], tokens[:-1]), (tokens[0], tokens[1:])) if len(tokens) > 1 else ():
        if word in _LEFT or word in _RIGHT or word in _BOTH:
            return rest, "L" if word in _LEFT else "R" if word in _RIGHT else "both"
    return tokens, None


class StructureAliases:
    """The validated alias table; :meth:`resolve` maps a name to a :class:`StructureMatch` or None."""

    def __init__(self, entries: dict[str, _Entry], external: set[str], external_name: str,
                 target_prefixes: tuple[str, ...]) -> None:
        self._entries = entries
        self._external = external
        self._external_name = external_name
        self._targets = re.compile(r"^\s*(" + "|".join(sorted(target_prefixes, key=len, reverse=True)) + r")",
                                   re.IGNORECASE)

    @property
    def organs(self) -> set[str]:
        """Every organ key the table maps to."""
        return {e.organ for e in self._entries.values()}

    def resolve(self, name: str) -> StructureMatch | None:
        """The structure a name denotes, or None when nothing in the table matches."""
        tokens = words(name)
        if not tokens:
            return None
        full = "".join(tokens)
        if full in self._external:
            return StructureMatch(name, self._external_name, "external")
        organ = self._organ(name, tokens)
        if organ is not None:
            return organ
        target = self._targets.match(str(name))
        if target:
            rest = str(name).strip()[len(target.group(1)):]
            return StructureMatch(name, target.group(1).upper() + rest, "target")
        return None

    def _organ(self, name: str, tokens: list[str]) -> StructureMatch | None:
        entry = self._entries.get("".join(tokens))
        side: str | None = None
        if entry is None:
            rest, side = split_side(tokens)
            entry = self._entries.get("".join(rest)) if side else None
        if entry is None:
            return None
        if side in ("L", "R") and (not entry.sided or entry.whole_only):
            return None  # "Brainstem_L", "Lungs_R": not a structure of the table
        if side in ("L", "R"):
            return StructureMatch(name, f"{entry.tg263}_{side}", "oar", entry.organ, side)
        whole = entry.both if entry.sided and entry.both and (side == "both" or entry.whole_only) else entry.tg263
        return StructureMatch(name, whole if entry.sided else entry.tg263, "oar", entry.organ, None)


def _str_list(value: Any, what: str, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InputError(f"structure aliases: {what} must be a list of names.", file=where)
    return list(value)


def parse_structure_aliases(doc: Any, where: str = "structure_aliases.yaml") -> StructureAliases:
    """Validate an alias document (parsed YAML). A name that two organs claim is an error."""
    if not isinstance(doc, dict) or not isinstance(doc.get("organs"), dict) or not doc["organs"]:
        raise InputError("structure aliases need a non-empty 'organs' mapping.", file=where)
    entries: dict[str, _Entry] = {}

    def add(name: str, entry: _Entry) -> None:
        key = _key(name)
        if not key:
            raise InputError(f"structure aliases: empty name for {entry.tg263}.", file=where)
        if key in entries and entries[key] != entry:
            raise InputError(f"structure aliases: {name!r} names both {entries[key].tg263} and {entry.tg263}.",
                             file=where, fix="give each name to one organ.")
        entries[key] = entry

    for tg263, row in doc["organs"].items():
        if not isinstance(row, dict) or not isinstance(row.get("organ"), str) or not row["organ"].strip():
            raise InputError(f"structure aliases: organs.{tg263} needs an 'organ' key.", file=where)
        unknown = set(row) - {"organ", "sided", "both", "aliases", "both_aliases"}
        if unknown:
            raise InputError(f"structure aliases: organs.{tg263} has unknown keys {sorted(unknown)}.", file=where)
        sided = bool(row.get("sided", False))
        both = row.get("both")
        if both is not None and (not sided or not isinstance(both, str)):
            raise InputError(f"structure aliases: organs.{tg263}.both needs sided: true and a name.", file=where)
        one = _Entry(str(tg263), row["organ"], sided, both, whole_only=False)
        for name in [str(tg263), *_str_list(row.get("aliases"), f"organs.{tg263}.aliases", where)]:
            add(name, one)
        whole = _Entry(str(tg263), row["organ"], sided, both, whole_only=True)
        both_names = [both] if both else []
        for name in both_names + _str_list(row.get("both_aliases"), f"organs.{tg263}.both_aliases", where):
            add(name, whole)
    for key, entry in entries.items():
        for side in _LEFT | _RIGHT:
            for base in (key[: -len(side)] if key.endswith(side) else "", key[len(side):] if key.startswith(side)
                         else ""):
                if base in entries:
                    raise InputError(f"structure aliases: a name of {entry.tg263} reads as "
                                     f"{entries[base].tg263} with a side word ({side!r}).", file=where,
                                     fix="remove or rename that alias.")
    ext = doc.get("external") or {}
    if not isinstance(ext, dict) or not isinstance(ext.get("name"), str):
        raise InputError("structure aliases: 'external' needs a name.", file=where)
    external = {_key(n) for n in [ext["name"], *_str_list(ext.get("aliases"), "external.aliases", where)]}
    if external & set(entries):
        raise InputError(f"structure aliases: {sorted(external & set(entries))} name an organ and the "
                         "external outline.", file=where)
    targets = _str_list(doc.get("targets"), "targets", where)
    if not targets:
        raise InputError("structure aliases: 'targets' must list the target prefixes (GTV, CTV, PTV, ...).",
                         file=where)
    return StructureAliases(entries, external, ext["name"], tuple(re.escape(t) for t in targets))


@lru_cache(maxsize=4)
def load_structure_aliases(path: str | Path | None = None) -> StructureAliases:
    """Load and validate the alias table (default: the packaged ``data/structure_aliases.yaml``)."""
    doc, where = read_yaml_table("structure_aliases.yaml", path, "structure alias file")
    return parse_structure_aliases(doc, where)


def resolve_structure(name: str) -> StructureMatch | None:
    """The :class:`StructureMatch` of a name in the packaged alias table, or None."""
    return load_structure_aliases().resolve(name)


def canonical_structure(name: str) -> str | None:
    """TG-263 name of a structure (``"spinal cord"`` -> ``"SpinalCord"``, ``"lt_parotid"`` -> ``"Parotid_L"``,
    ``"BODY"`` -> ``"External"``, ``"ptv70"`` -> ``"PTV70"``), or None when the name matches nothing."""
    match = resolve_structure(name)
    return match.canonical if match else None


def is_target_structure(name: str) -> bool:
    """True for target volumes: names starting with GTV, CTV, ITV, IGTV or PTV (``PTV70``, ``CTV_High``)."""
    match = resolve_structure(name)
    return match is not None and match.kind == "target"
