"""The adapted records file (contract section 3, `radiogenomics adapt --out ADAPTED.json|.csv|.parquet`).

JSON is ``{"records": [...]}``; CSV and Parquet hold one row per record with the nested fields (``toxicity``,
``oar_checks``, ``response``, ``adaptation``, ``flags``, ...) as JSON strings. :func:`read_adapted` reads any of
the three back for ``radiogenomics handoff --adapted``; identifiers stay text (a patient ``007`` stays ``007``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from radiogenomics.errors import InputError

SUFFIXES = (".json", ".csv", ".parquet")
#: Columns that are text whatever they look like (ids, versions, hashes).
TEXT_COLUMNS = frozenset({"patient_id", "model_uri", "model_name", "model_version", "input_sha256", "site",
                          "timepoint", "regimen_source"})
FIX = "give the .json, .csv or .parquet written by `radiogenomics adapt`"


def write_adapted(records: list[dict[str, Any]], out: Path) -> None:
    """Write ``records`` as JSON, CSV or Parquet by ``out``'s suffix (module docstring), atomically."""
    import io

    from radiogenomics.features.cache import atomic_write_bytes
    from radiogenomics.jsonio import json_bytes, json_safe

    if out.suffix == ".json":
        atomic_write_bytes(out, json_bytes({"records": records}))
        return
    rows = [{k: json.dumps(json_safe(v), sort_keys=True) if isinstance(v, dict | list) else v for k, v in r.items()}
            for r in records]
    frame = pd.DataFrame(rows)
    for column in TEXT_COLUMNS & set(frame.columns):
        frame[column] = frame[column].map(lambda v: None if v is None else str(v))
    if out.suffix == ".parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        atomic_write_bytes(out, buffer.getvalue())
    else:
        atomic_write_bytes(out, frame.to_csv(index=False).encode("utf-8"))


def _value(column: str, value: Any, *, from_text: bool) -> Any:
    """One cell back as the record's value: None for blank/NaN, JSON for nested fields (and, from CSV text, for
    numbers), text for :data:`TEXT_COLUMNS`."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    if isinstance(value, str):
        if column in TEXT_COLUMNS:
            return value
        if from_text or value[:1] in "[{":
            try:
                return json.loads(value)
            except ValueError:
                return value
    return value.item() if hasattr(value, "item") else value


def read_adapted(path: Path) -> list[dict[str, Any]]:
    """The records of ``radiogenomics adapt``'s output (module docstring). InputError naming the file when it is
    none of the three formats, cannot be read, or holds no adapted record; naming the record when it lacks its
    patient id or a course field."""
    from radiogenomics.planning.remaining import ADAPTED_KEYS

    path = Path(path)
    if not path.is_file():
        raise InputError(f"adapted records {path} do not exist", file=str(path), fix=FIX)
    if path.suffix not in SUFFIXES:
        raise InputError(f"adapted records must be {', '.join(SUFFIXES)}, got {path.name}", file=str(path), fix=FIX)
    try:
        if path.suffix == ".json":
            doc = json.loads(path.read_text(encoding="utf-8"))
            records = doc.get("records") if isinstance(doc, dict) else None
        else:
            text = path.suffix == ".csv"
            frame = (pd.read_csv(path, dtype=str, keep_default_na=False) if text else pd.read_parquet(path))
            records = [{str(k): _value(str(k), v, from_text=text) for k, v in row.items()}
                       for row in frame.to_dict("records")]
    except (OSError, ValueError, ImportError, pd.errors.ParserError) as exc:  # ValueError: not JSON/UTF-8/Parquet
        raise InputError(f"cannot read the adapted records ({' '.join(str(exc).split())[:200]})", file=str(path),
                         fix=FIX) from exc
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise InputError("the file holds no records", file=str(path), fix='give {"records": [...]} from adapt')
    for i, record in enumerate(records):
        if not isinstance(record.get("patient_id"), str) or not record["patient_id"].strip():
            raise InputError(f"record {i} has no patient_id", file=str(path), fix=FIX)
    missing = sorted({k for r in records for k in ADAPTED_KEYS if r.get(k) is None})
    if missing:
        raise InputError(f"not adapted records: {', '.join(missing)} missing", file=str(path),
                         fix="write them with `radiogenomics adapt` (prescriptions go through --model/--features)")
    return records
