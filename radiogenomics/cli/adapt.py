"""`radiogenomics adapt COHORT --model URI --timepoint fraction_K --out ADAPTED.json|.csv|.parquet`: adaptation.

Predicts the baseline records as `predict` does (the planning images; side files beside the output), then, for
every patient with imaging at the timepoint, re-prescribes the rest of the course from the mid-treatment PET
(:mod:`radiogenomics.planning.adaptive`, contract section 8; docs/adaptive.md). Patients not imaged at the
timepoint get no adapted record (counted on stdout); one that fails is listed in
``<stem>.baseline.failures.csv``. The file formats: :mod:`radiogenomics.planning.adapted_records`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from radiogenomics.errors import InputError


def adapt(
    cohort: Path = typer.Argument(..., help="Cohort folder (format v1) with mid-treatment images (timepoint column)."),
    model: str = typer.Option(..., "--model", help="MLflow model URI, e.g. models:/radiogenomics-prescriber@champion."),
    timepoint: str = typer.Option(..., "--timepoint", help="Mid-treatment timepoint, e.g. fraction_10."),
    out: Path = typer.Option(..., "--out", help="Adapted records: .json, .csv or .parquet."),
    workers: int = typer.Option(0, "--workers", help="Feature extraction processes (0 = all cores, 1 = in-process)."),
) -> None:
    """Re-prescribe the rest of the course from mid-treatment PET: one adapted record per patient imaged then."""
    import pandas as pd

    from radiogenomics.cli.predict import predict_cohort, report_failures
    from radiogenomics.cohort import load_cohort
    from radiogenomics.cohort.schema import parse_timepoint
    from radiogenomics.features.cache import atomic_write_bytes
    from radiogenomics.features.patient_dvhs import cohort_dvhs
    from radiogenomics.planning.adapted_records import SUFFIXES, write_adapted
    from radiogenomics.planning.adaptive import adapt_record
    from radiogenomics.radiobiology.rails import load_rails

    canonical = parse_timepoint(timepoint)
    if canonical is None or canonical == "planning":
        raise InputError(f"--timepoint {timepoint!r} is not a mid-treatment timepoint", fix="use e.g. fraction_10")
    if out.suffix not in SUFFIXES:
        raise InputError(f"the output must end in {', '.join(SUFFIXES)}, got {out.name}", fix="use --out ADAPTED.json")
    if not cohort.is_dir():
        raise InputError(f"cohort folder {cohort} does not exist", fix="give the path of a cohort folder")
    loaded = load_cohort(cohort)
    imaged = [p for p in loaded.patient_ids if len(loaded.image_rows(p, timepoint=canonical))]
    if not imaged:
        raise InputError(f"no patient has images at {canonical}", fix="add mid-treatment rows to images.csv "
                                                                     f"(timepoint {canonical})")
    baseline_out = out.with_name(f"{out.stem}.baseline.json")
    records, failures, info, failures_path = predict_cohort(cohort, model, baseline_out, workers=workers)
    write_adapted(records, baseline_out)  # the baseline records as predict gives them (JSON)
    by_patient = {str(r["patient_id"]): r for r in records}
    dvhs = cohort_dvhs(loaded, imaged)
    rails = load_rails()
    adapted: list[dict[str, Any]] = []
    for pid in imaged:
        if pid not in by_patient:
            continue  # its prediction failed: already in the failures file
        try:
            adapted.append(adapt_record(by_patient[pid], loaded, canonical, rails=rails, oar_dvh=dvhs.get(pid)))
        except InputError as exc:
            failures.append((pid, " ".join(str(exc).split())))
    atomic_write_bytes(failures_path, pd.DataFrame(failures, columns=["patient_id", "reason"]).to_csv(
        index=False).encode())
    if not adapted:
        raise InputError(f"no patient could be adapted; reasons in {failures_path}", fix="see the reasons")
    write_adapted(adapted, out)
    changed = {f: sum(f in r["flags"] for r in adapted) for f in ("deescalated", "escalated", "adaptation_fallback")}
    typer.echo(f"{len(adapted)} adapted record(s) at {canonical} from {info.uri or model} -> {out} "
               f"({changed['deescalated']} de-escalated, {changed['escalated']} escalated, "
               f"{changed['adaptation_fallback']} fallback); {len(loaded.patient_ids) - len(imaged)} patient(s) not "
               f"imaged at {canonical}")
    report_failures(failures, failures_path)
