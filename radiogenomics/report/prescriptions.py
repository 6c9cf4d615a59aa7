"""Prescription section: one row per patient record (contract section 2), flagged records highlighted.

Records come from ``--predictions`` (the CSV, Parquet or JSON that ``radiogenomics predict`` writes) or, when
only ``--model`` and ``--features`` are given, from the registered prescriber applied to the feature table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radiogenomics.errors import InputError
from radiogenomics.report import figures
from radiogenomics.report.sections import Figure, Paragraph, Section, Table, fmt

KEY, TITLE = "prescriptions", "Per-patient prescriptions"
_JSON_COLUMNS = ("toxicity", "oar_checks", "flags", "notes")


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records from a ``predict`` output (.csv / .parquet with JSON ``toxicity``/``flags``, or .json)."""
    if not path.is_file():
        raise InputError(f"prediction file {path} does not exist", file=str(path),
                         fix="give the --out file of `radiogenomics predict`")
    if path.suffix == ".json":
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path.name} is not JSON: {exc}", file=str(path)) from exc
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list):
            raise InputError(f"{path.name} has no 'records' list", file=str(path),
                             fix="give the JSON written by `radiogenomics predict --out P.json`")
        return [dict(r) for r in records]
    if path.suffix not in (".csv", ".parquet"):
        raise InputError(f"prediction file {path.name} must end in .csv, .parquet or .json", file=str(path))
    try:
        frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read {path.name}: {exc}", file=str(path)) from exc
    if "patient_id" not in frame.columns or "recommended_total_dose_gy" not in frame.columns:
        raise InputError(f"{path.name} is not a prescription table (no patient_id / recommended_total_dose_gy)",
                         file=str(path), fix="give the --out file of `radiogenomics predict`")
    records = frame.to_dict(orient="records")
    for record in records:
        for column in _JSON_COLUMNS:
            value = record.get(column)
            if isinstance(value, str):
                try:
                    record[column] = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path.name}: column {column} of patient {record['patient_id']} is not JSON",
                                     file=str(path), patient_id=str(record["patient_id"])) from exc
    return records


def predict_from_features(model_uri: str, features: Path, cohort: Path | None = None) -> list[dict[str, Any]]:
    """Records of every row of ``features`` from the registered prescriber ``model_uri``; with the ``cohort``, the
    OAR limits are checked on the patients' dose distributions."""
    from radiogenomics.features.patient_dvhs import cohort_dvhs
    from radiogenomics.features.schema import read_feature_table
    from radiogenomics.training.registry.prediction import load_prescriber, predict_isolating_failures

    prescriber, info = load_prescriber(model_uri)
    table = read_feature_table(features)
    dvhs = cohort_dvhs(cohort, [str(p) for p in table["patient_id"]]) if cohort is not None else None
    records, _ = predict_isolating_failures(prescriber, table, info, cohort=cohort, oar_dvhs=dvhs)
    return records


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def _toxicity(value: Any) -> str:
    if not isinstance(value, dict) or not value:
        return "\u2013"
    return "; ".join(f"{k.removesuffix('_grade_ge2')} {fmt(_number(v), 2)}" for k, v in sorted(value.items()))


def _dose_range(low: float, high: float) -> str:
    """``lower to upper`` Gy; an end the gate gave no dose (clipped or implausible) reads "none"."""
    return " to ".join(fmt(v) if math.isfinite(v) else "none" for v in (low, high))


def _oar_summary(value: Any) -> str:
    """The OAR checks that are not ``ok`` (``SpinalCord max limited; parotid_l mean/geud exceeded``), "all within"
    or "unchecked"."""
    if not isinstance(value, list | tuple) or not value:
        return "unchecked"
    grouped: dict[tuple[str, str], list[str]] = {}
    for c in value:
        if isinstance(c, dict) and c.get("status") != "ok":
            key = (str(c.get("structure")), str(c.get("status")))
            grouped.setdefault(key, []).append(str(c.get("metric", "")).removesuffix("_gy"))
    return "; ".join(f"{structure} {'/'.join(metrics)} {status}"
                     for (structure, status), metrics in grouped.items()) or "all within"


def _flags(value: Any) -> list[str]:
    if isinstance(value, list | tuple | np.ndarray):
        return [str(f) for f in value]
    return []


def prescriptions_section(records: list[dict[str, Any]], source: str) -> Section:
    """The table (flagged rows highlighted) and recommended dose against RSI."""
    section = Section(KEY, TITLE)
    models = sorted({f"{r.get('model_name', '')} version {r.get('model_version', '')}" for r in records})
    n_flagged = sum(bool(_flags(r.get("flags"))) for r in records)
    section.add(Paragraph(f"{len(records)} record(s) from {source}; model {', '.join(models)}. "
                          f"{n_flagged} record(s) carry flags (highlighted): check them before use."))
    rows: list[list[str]] = []
    highlight: list[bool] = []
    for r in records:
        flags = _flags(r.get("flags"))
        regimen = (f"{fmt(_number(r.get('recommended_n_fractions')))} \u00d7 "
                   f"{fmt(_number(r.get('recommended_dose_per_fraction_gy')), 3)} Gy")
        rows.append([str(r.get("patient_id")),
                     f"{fmt(_number(r.get('rsi')))} [{fmt(_number(r.get('rsi_lower')))}, "
                     f"{fmt(_number(r.get('rsi_upper')))}]",
                     fmt(_number(r.get("alpha_per_gy"))), fmt(_number(r.get("gard"))),
                     fmt(_number(r.get("target_gard"))), fmt(_number(r.get("dose_for_target_gard_gy"))),
                     _dose_range(_number(r.get("dose_for_target_gard_lower_gy")),
                                 _number(r.get("dose_for_target_gard_upper_gy"))),
                     fmt(_number(r.get("recommended_total_dose_gy"))), regimen,
                     f"{r.get('regimen_source', '')}; RSI {r.get('rsi_source', '')}",
                     _oar_summary(r.get("oar_checks")), _toxicity(r.get("toxicity")), ", ".join(flags) or "none"])
        highlight.append(bool(flags))
    section.add(Table(["patient", "RSI [90 % PI]", "\u03b1 (Gy\u207b\u00b9)", "GARD (record's regimen)",
                       "target GARD", "dose for target (Gy)", "dose range over PI (Gy)", "recommended (Gy)",
                       "regimen", "sources", "OAR limits", "P(grade \u2265 2)", "flags"], rows,
                      highlight=highlight,
                      caption="GARD of the record's regimen (sources: where the regimen and the RSI come from); the "
                              "dose reaching the target GARD at its dose per fraction, its range over the RSI "
                              "interval ('none': an end clipped or implausible), the recommendation after the "
                              "safety gate, and the OAR limits not met or acting on it (docs/safety.md)."))
    figure = _dose_figure(records)
    if figure is not None:
        section.add(figure)
    return section


def _dose_figure(records: list[dict[str, Any]]) -> Figure | None:
    import matplotlib.pyplot as plt

    rsi = np.array([_number(r.get("rsi")) for r in records])
    dose = np.array([_number(r.get("recommended_total_dose_gy")) for r in records])
    target = np.array([_number(r.get("dose_for_target_gard_gy")) for r in records])
    flagged = np.array([bool(_flags(r.get("flags"))) for r in records])
    ok = np.isfinite(rsi) & np.isfinite(dose)
    if not ok.any():
        return None
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    ax.scatter(rsi[ok], target[ok], marker="x", color="grey", label="dose for target GARD (before rails)")
    ax.scatter(rsi[ok & ~flagged], dose[ok & ~flagged], color="#4C72B0", label="recommended, no flag")
    ax.scatter(rsi[ok & flagged], dose[ok & flagged], color="#C44E52", label="recommended, flagged")
    ax.set_title("Recommended total dose against predicted RSI")
    ax.set_xlabel("predicted RSI (surviving fraction at 2 Gy)")
    ax.set_ylabel("total dose (Gy)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return Figure(figures.data_uri(fig), alt="scatter of recommended total dose against predicted RSI",
                  caption="A more radioresistant tumour (higher RSI) needs more dose for the same GARD; the "
                          "rails cap the recommendation.")
