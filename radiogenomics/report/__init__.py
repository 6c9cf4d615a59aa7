"""`radiogenomics report`: one self-contained HTML page about a cohort, a registered model and its prescriptions.

Sections (each says what is missing when its inputs were not given): cohort overview (:mod:`.cohort`), model
performance from the model version's MLflow training run (:mod:`.model`), Kaplan-Meier local control by GARD
tertile (:mod:`.cohort`), the per-patient prescription table (:mod:`.prescriptions`) and a slice of a
dose-prescription map (:mod:`.dose_map`). Figures are matplotlib PNGs embedded as base64 data URIs; the page
loads nothing from anywhere else. See docs/report.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radiogenomics.report.sections import Section

log = logging.getLogger(__name__)

__all__ = ["ReportResult", "build_report"]


@dataclass(frozen=True)
class ReportResult:
    """The written page and which sections have content (``missing``: section title -> reason)."""

    path: Path
    sections: list[str]
    missing: dict[str, str]
    size_bytes: int


def _records(predictions: Path | None, model_uri: str | None, features: Path | None,
             cohort: Path | None = None) -> tuple[list[Any] | None, str]:
    from radiogenomics.report.prescriptions import predict_from_features, read_records

    if predictions is not None:
        return read_records(predictions), str(predictions)
    if model_uri is not None and features is not None:
        return predict_from_features(model_uri, features, cohort), f"{model_uri} applied to {features}"
    return None, ""


def build_report(out: Path, *, cohort: Path | None = None, model_uri: str | None = None,
                 predictions: Path | None = None, features: Path | None = None, handoff: Path | None = None,
                 plans: Path | None = None, title: str = "radiogenomics report",
                 notes: Sequence[str] = ()) -> ReportResult:
    """Build every section from the inputs given and write the page to ``out`` atomically (``notes``: remarks
    shown under the title, e.g. how a cohort was split)."""
    from radiogenomics.errors import InputError
    from radiogenomics.features.cache import atomic_write_bytes
    from radiogenomics.outputs import output_file
    from radiogenomics.report import cohort as cohort_sections
    from radiogenomics.report import dose_map, model, prescriptions
    from radiogenomics.report import plans as plan_sections
    from radiogenomics.report.html import render

    out = output_file(out, "report")
    if plans is not None and not plans.is_dir():
        raise InputError(f"plans folder {plans} does not exist", file=str(plans),
                         fix="give the --out folder of `radiogenomics plan`")
    if handoff is not None and not handoff.is_dir():
        raise InputError(f"hand-off folder {handoff} does not exist", file=str(handoff),
                         fix="give the --out folder of `radiogenomics handoff`")
    if model_uri is not None:
        model.parse_model_uri(model_uri)
    if features is not None and model_uri is None and predictions is None:
        raise InputError("--features is predicted with --model, and no --model was given", file=str(features),
                         fix="add --model MODEL_URI, or give --predictions instead")
    loaded = None
    if cohort is not None:
        from radiogenomics.cohort import load_cohort

        loaded = load_cohort(cohort)
    records, source = _records(predictions, model_uri, features, cohort)
    sections: list[Section] = [
        cohort_sections.overview_section(loaded) if loaded is not None
        else Section(*cohort_sections.OVERVIEW, missing="no cohort given: pass --cohort COHORT."),
        model.model_section(model_uri) if model_uri is not None
        else Section(model.KEY, model.TITLE, missing="no model given: pass --model MODEL_URI "
                                                     "(e.g. models:/radiogenomics-prescriber@champion)."),
        cohort_sections.km_section(loaded) if loaded is not None
        else Section(*cohort_sections.KM, missing="no cohort given: pass --cohort COHORT (expression, regimen "
                                                  "and local-control follow-up)."),
        prescriptions.prescriptions_section(records, source) if records
        else Section(prescriptions.KEY, prescriptions.TITLE,
                     missing="no prescriptions: pass --predictions P.csv (from radiogenomics predict), or "
                             "--model with --features F.parquet."),
        dose_map.dose_map_section(handoff, loaded, records),
        plan_sections.plans_section(plans, loaded),
    ]
    inputs = ", ".join(f"{k} {v}" for k, v in (("cohort", cohort), ("model", model_uri),
                                               ("predictions", predictions), ("features", features),
                                               ("hand-off", handoff), ("plans", plans)) if v is not None) or "none"
    page = render(sections, title=title, inputs=inputs, notes=notes).encode("utf-8")
    atomic_write_bytes(out, page)
    missing = {s.title: s.missing for s in sections if s.missing}
    log.info("report: %d sections (%d without input) -> %s", len(sections), len(missing), out)
    return ReportResult(out, [s.title for s in sections], missing, len(page))
