"""What each NTCP model predicts, and the name it has in the prescription record's ``toxicity``.

The contract's ``toxicity`` is ``{endpoint: probability}`` "of grade >= 2", but the shipped LKB models predict
the endpoints their sources defined: Dijkema et al. (IJROBP 2010;78:449) a salivary flow < 25 % of baseline
at one year; Burman et al. (IJROBP 1991;21:123) severe late effects of Emami et al. (IJROBP 1991;21:109)
within 5 years; Dawson et al. (IJROBP 2002;53:810) classic RILD. The record therefore keys each probability
by a name that says what it is (``xerostomia_flow_lt25pct_1y``), read from ``data/ntcp_parameters.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from radiogenomics.errors import InputError
from radiogenomics.radiobiology._data import read_yaml_table


@dataclass(frozen=True)
class ToxicityEndpoint:
    """One NTCP endpoint: its record name, what it predicts, whether that is a CTCAE grade >= 2 event."""

    ntcp_endpoint: str
    record_name: str
    organ: str
    predicts: str
    ctcae_grade_ge2: bool
    source: str


def _endpoint(key: str, row: Any) -> ToxicityEndpoint:
    where = "ntcp_parameters.yaml"
    if not isinstance(row, dict):
        raise InputError(f"NTCP endpoint {key!r} must be a mapping.", file=where)
    for field in ("record_name", "predicts", "source"):
        if not isinstance(row.get(field), str) or not row[field].strip():
            raise InputError(f"NTCP endpoint {key!r} has no {field}.", file=where,
                             fix="every endpoint says what it predicts, its record name and its source.")
    if not isinstance(row.get("ctcae_grade_ge2"), bool):
        raise InputError(f"NTCP endpoint {key!r}: ctcae_grade_ge2 must be true or false.", file=where)
    return ToxicityEndpoint(key, row["record_name"], str(row.get("organ", "")), row["predicts"],
                            row["ctcae_grade_ge2"], row["source"])


@lru_cache(maxsize=1)
def toxicity_endpoints() -> dict[str, ToxicityEndpoint]:
    """The packaged endpoints, keyed by the NTCP table's endpoint (``"xerostomia"``); record names unique."""
    doc, _ = read_yaml_table("ntcp_parameters.yaml", None, "NTCP parameter file")
    table = {str(k): _endpoint(str(k), v) for k, v in (doc.get("endpoints") or {}).items()}
    names = [e.record_name for e in table.values()]
    if len(set(names)) != len(names):
        raise InputError("NTCP endpoints share a record_name.", file="ntcp_parameters.yaml")
    return table


def toxicity_record_name(ntcp_endpoint: str) -> str:
    """The record's ``toxicity`` key of an NTCP endpoint (``"xerostomia"`` -> ``"xerostomia_flow_lt25pct_1y"``)."""
    table = toxicity_endpoints()
    if ntcp_endpoint not in table:
        raise InputError(f"unknown NTCP endpoint {ntcp_endpoint!r}.", fix=f"use one of {sorted(table)}.")
    return table[ntcp_endpoint].record_name


@dataclass(frozen=True)
class EndpointOrgans:
    """The organs whose dose drives a toxicity endpoint: ``lkb_organ`` gives the LKB gEUD, ``organs`` the
    trained models' dose features (organ keys of the structure alias table)."""

    lkb_organ: str
    organs: tuple[str, ...]
    source: str


@lru_cache(maxsize=1)
def endpoint_organs() -> dict[str, EndpointOrgans]:
    """``data/endpoint_organs.yaml``: endpoint -> its organs. The LKB organ of an endpoint of the NTCP table is
    that table's ``organ`` (one definition); another endpoint names its own ``lkb_organ``."""
    from radiogenomics.radiobiology.structures import load_structure_aliases

    where = "endpoint_organs.yaml"
    doc, _ = read_yaml_table(where, None, "endpoint organ table")
    known = load_structure_aliases().organs
    ntcp = toxicity_endpoints()
    out: dict[str, EndpointOrgans] = {}
    for key, row in (doc.get("endpoints") or {}).items():
        if not isinstance(row, dict) or not isinstance(row.get("organs"), list) or not row["organs"]:
            raise InputError(f"endpoint {key!r} needs a list of organs.", file=where)
        if not isinstance(row.get("source"), str) or not row["source"].strip():
            raise InputError(f"endpoint {key!r} has no source.", file=where)
        organs = tuple(str(o) for o in row["organs"])
        lkb = ntcp[str(key)].organ if str(key) in ntcp else row.get("lkb_organ")
        if str(key) in ntcp and "lkb_organ" in row:
            raise InputError(f"endpoint {key!r}: its LKB organ is the NTCP table's ({lkb}); do not repeat it.",
                             file=where)
        if not isinstance(lkb, str) or lkb not in organs:
            raise InputError(f"endpoint {key!r}: the LKB organ {lkb!r} must be one of its organs {list(organs)}.",
                             file=where)
        unknown = [o for o in organs if o not in known]
        if unknown:
            raise InputError(f"endpoint {key!r}: {unknown} are not organs of structure_aliases.yaml.", file=where)
        out[str(key)] = EndpointOrgans(lkb, organs, row["source"])
    return out
