"""The RSI slot -> expression column map: ``extract --rsi-gene-map CDK1=PAK2`` or ``rsi_gene_map:`` in cohort.yaml.

Eschrich's array code fills the CDK1 slot of the RSI with probe 205962_at, annotated PAK2 (docs/radiobiology.md), so
expression exported from that platform has a ``PAK2`` column and no ``CDK1``. The map tells the RSI which column
to read for a slot. Slots are named by their HGNC symbol (:data:`radiogenomics.radiobiology.RSI_GENES`) or as
printed in the paper (:data:`radiogenomics.radiobiology.RSI_SLOT_NAMES`, e.g. ``c-Jun``), case-insensitively.
The command-line map overrides cohort.yaml slot by slot (``CDK1=CDK1`` undoes a mapping from the file).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

from radiogenomics.cohort.tables import RSI_SLOT_SUBSTITUTES
from radiogenomics.errors import InputError

OPTION = "--rsi-gene-map"
YAML_KEY = "rsi_gene_map"
_COLUMN = re.compile(r"^[^\s,=]+$")


@lru_cache(maxsize=1)
def _slots() -> tuple[tuple[str, ...], dict[str, str]]:
    """(RSI slot symbols, lower-case alias -> symbol) from the radiobiology package."""
    from radiogenomics.radiobiology import RSI_GENES, RSI_SLOT_NAMES

    aliases: dict[str, str] = {}
    for symbol, name in zip(RSI_GENES, RSI_SLOT_NAMES, strict=True):
        for alias in (symbol, name, *re.split(r"[()]", name)):
            if alias.strip():
                aliases[alias.strip().lower()] = symbol
    return tuple(RSI_GENES), aliases


def slot_symbol(name: str) -> str | None:
    """The HGNC symbol of an RSI slot named by symbol or paper name (``"c-Jun"`` -> ``"JUN"``), or None."""
    return _slots()[1].get(str(name).strip().lower())


def _example() -> str:
    return f"{OPTION} CDK1=PAK2, or '{YAML_KEY}: {{CDK1: PAK2}}' in cohort.yaml"


def check_gene_map(pairs: Iterable[tuple[object, object]], source: str) -> dict[str, str]:
    """Validate (slot, column) pairs from ``source``; return ``{slot symbol: column}``. Raises InputError."""
    genes, _ = _slots()
    out: dict[str, str] = {}
    for raw_slot, raw_column in pairs:
        slot = slot_symbol(str(raw_slot))
        if slot is None:
            raise InputError(f"{source}: {str(raw_slot)!r} is not an RSI slot",
                             fix=f"name one of {', '.join(genes)} (e.g. {_example()})")
        column = "" if raw_column is None else str(raw_column).strip()
        if not _COLUMN.match(column):
            raise InputError(f"{source}: RSI slot {slot} needs one expression column name, got {raw_column!r}",
                             fix=f"write SLOT=GENE pairs, e.g. {_example()}")
        if slot in out:
            raise InputError(f"{source}: RSI slot {slot} is mapped twice ({out[slot]}, {column})",
                             fix="map each slot once")
        out[slot] = column
    return out


def check_consistent(gene_map: Mapping[str, str], source: str) -> dict[str, str]:
    """Drop identity entries and refuse maps that read one column for two slots. Raises InputError."""
    genes, _ = _slots()
    effective = {slot: col for slot, col in gene_map.items() if col != slot}
    reads: dict[str, str] = {}
    for slot in genes:
        column = effective.get(slot, slot)
        if column in reads:
            raise InputError(f"{source}: RSI slots {reads[column]} and {slot} would both read column {column}",
                             fix="map each slot to a different column")
        reads[column] = slot
    return effective


def parse_gene_map_args(values: Iterable[str]) -> dict[str, str]:
    """``--rsi-gene-map`` values (repeatable, each ``SLOT=GENE`` or comma-separated pairs) -> ``{slot: column}``."""
    pairs: list[tuple[str, str]] = []
    for value in values:
        for item in str(value).split(","):
            if not item.strip():
                continue
            slot, sep, column = item.partition("=")
            if not sep:
                raise InputError(f"{OPTION}: {item.strip()!r} is not SLOT=GENE", fix=f"e.g. {OPTION} CDK1=PAK2")
            pairs.append((slot, column))
    gene_map = check_gene_map(pairs, OPTION)
    check_consistent(gene_map, OPTION)  # identity pairs are kept: they undo a cohort.yaml mapping
    return gene_map


def gene_map_from_yaml(value: object) -> dict[str, str]:
    """The ``rsi_gene_map`` value of cohort.yaml (a mapping slot -> column) -> ``{slot: column}``."""
    if value is None:  # "rsi_gene_map:" with nothing after it
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"cohort.yaml: {YAML_KEY} must be a mapping of RSI slot to column, got {value!r}",
                         file="cohort.yaml", fix=f"write e.g. '{YAML_KEY}: {{CDK1: PAK2}}'")
    return check_gene_map(value.items(), f"cohort.yaml {YAML_KEY}")


def merge_gene_maps(from_file: Mapping[str, str], override: Mapping[str, str] | None) -> dict[str, str]:
    """The effective map: cohort.yaml's, overridden slot by slot by the command line's."""
    merged = {**from_file, **(override or {})}
    source = f"{OPTION} with cohort.yaml {YAML_KEY}" if override else f"cohort.yaml {YAML_KEY}"
    return check_consistent(merged, source)


def slot_columns(gene_map: Mapping[str, str]) -> tuple[str, ...]:
    """The expression column read for each RSI slot, in slot order."""
    return tuple(gene_map.get(slot, slot) for slot in _slots()[0])


def absent_slots(columns: Iterable[str], gene_map: Mapping[str, str]) -> list[tuple[str, str]]:
    """(slot, column) of every RSI slot whose column is not among ``columns``."""
    present = set(columns)
    return [(slot, col) for slot, col in zip(_slots()[0], slot_columns(gene_map), strict=True) if col not in present]


def rsi_unavailable_warning(columns: Iterable[str], gene_map: Mapping[str, str]) -> str | None:
    """A one-line warning naming the absent slot column(s) and the fix, when the RSI cannot be computed for any
    patient because a slot's column is absent; None when every slot has its column."""
    present = set(columns)
    missing = absent_slots(present, gene_map)
    if not missing:
        return None
    parts, fixes = [], []
    for slot, column in missing:
        substitute = RSI_SLOT_SUBSTITUTES.get(slot)
        named = slot if column == slot else f"{slot} (mapped to {column})"
        if column == slot and substitute in present:
            parts.append(f"{named}, while {substitute} is there (the authors' probe for that slot)")
            fixes.append((slot, substitute))
        else:
            parts.append(named)
            fixes.append((slot, "COLUMN"))
    cli = ",".join(f"{s}={c}" for s, c in fixes)
    yml = ", ".join(f"{s}: {c}" for s, c in fixes)
    slots = "slots" if len(parts) > 1 else "slot"
    return (f"genomic.rsi is NaN for every patient: expression.csv has no column for RSI {slots} {'; '.join(parts)}. "
            f"Fix: `radiogenomics extract {OPTION} {cli}` or `{YAML_KEY}: {{{yml}}}` in cohort.yaml"
            + ("" if all(c != "COLUMN" for _, c in fixes) else " (COLUMN: the column that holds the gene)"))
