"""The optimizer hand-off (contract section 7): per patient, the record, ``objectives.json`` and a dose map.

:func:`handoff` predicts the requested patients of a feature table - with the registered model loaded
in-process (``models:/radiogenomics-prescriber@champion``) or through the REST API (``api_url`` + a Bearer
token) - and writes, for each patient, ``DIR/<patient_id>/``:

- ``prescription.json``: the prescription record (contract section 2);
- ``objectives.json``: :func:`~radiogenomics.planning.objectives.build_objectives` (validated);
- with a cohort that has FDG and/or FMISO PET for the patient: ``dose_prescription.nii.gz`` and the DICOM RT
  Dose ``dose_prescription.dcm``, the TCP-optimal map of :mod:`.dose_map`.

Every file is written atomically (a staging folder in ``DIR``, then ``os.replace`` per file); files of an
earlier run that this run does not produce (a map the patient no longer gets) are removed. A patient that
fails (not in the table, bad input, no safe dose, unreadable images) is listed in ``DIR/failures.csv``
(``patient_id, reason``) and the others complete. ``DIR/handoff.json`` summarises the run.

:func:`handoff_adapted` hands off the adapted records of ``radiogenomics adapt`` (contract section 8) instead:
``prescription.json`` is the adapted record, ``objectives.json`` covers the remaining fractions (OAR limits are what
the delivered fractions left: :mod:`.remaining`) and the map is repainted from the mid-treatment PET.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from radiogenomics.cohort.roles import Resolved
from radiogenomics.errors import InputError
from radiogenomics.features import naming
from radiogenomics.jsonio import json_bytes
from radiogenomics.models.gate import check_record
from radiogenomics.planning import records as record_source
from radiogenomics.planning.dose_map import PrescriptionMap, load_pet, prescription_map
from radiogenomics.planning.objectives import build_objectives, validate_objectives
from radiogenomics.radiobiology.rails import load_rails

log = logging.getLogger(__name__)

PRESCRIPTION_FILE = "prescription.json"
OBJECTIVES_FILE = "objectives.json"
MAP_STEM = "dose_prescription"
MAP_FILES = (f"{MAP_STEM}.nii.gz", f"{MAP_STEM}.dcm")
OUTPUT_FILES = (PRESCRIPTION_FILE, OBJECTIVES_FILE, *MAP_FILES)
FAILURES_FILE = "failures.csv"
MANIFEST_FILE = "handoff.json"
#: A patient id is a folder name: pseudonymous characters only (the REST API's rule), never ``..``.
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")
UNSAFE_ID = "the patient id is not pseudonymous ([A-Za-z0-9._-], at most 64): it names a folder of the hand-off"


@dataclass
class PatientHandoff:
    """What was written for one patient (paths relative to the hand-off folder)."""

    patient_id: str
    files: list[str]
    alpha_per_gy: float
    recommended_total_dose_gy: float
    recommended_n_fractions: float
    recommended_dose_per_fraction_gy: float
    effect_per_fraction: float
    n_oars: int
    flags: list[str]
    notes: list[str] = field(default_factory=list)
    map_modalities: list[str] = field(default_factory=list)
    map_mean_dose_gy: float | None = None
    map_min_dose_gy: float | None = None
    map_max_dose_gy: float | None = None
    map_tcp: float | None = None


@dataclass
class HandoffResult:
    """The hand-off folder, the model that produced it, the patients written and the failures."""

    out_dir: Path
    model_uri: str
    model_version: str
    source: str
    patients: list[PatientHandoff]
    failures: list[tuple[str, str]]

    @property
    def failures_csv(self) -> Path:
        return self.out_dir / FAILURES_FILE

    @property
    def manifest(self) -> Path:
        return self.out_dir / MANIFEST_FILE


def _select(table: pd.DataFrame, patients: Sequence[str] | None) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """The rows to predict (request order) and failures for ids that are unknown or unsafe as folder names."""
    if naming.PATIENT_ID not in table.columns:
        raise InputError("the feature table has no patient_id column", fix="give a table written by extract")
    ids = table[naming.PATIENT_ID].astype(str)
    wanted = list(dict.fromkeys(str(p) for p in patients)) if patients is not None else ids.tolist()
    failures = []
    for pid in wanted:
        if not _SAFE_ID.match(pid):
            failures.append((pid, UNSAFE_ID))
        elif pid not in set(ids):
            failures.append((pid, "not in the feature table"))
    bad = {p for p, _ in failures}
    keep = [p for p in wanted if p not in bad]
    rows = table.set_index(ids, drop=False).loc[keep].reset_index(drop=True) if keep else table.iloc[:0]
    return rows, failures


def patient_structures(cohort: Any, patient_id: str) -> list[Resolved]:
    """The patient's structures in the cohort: one per role of the images.csv rows with a mask (first row of a
    role), each resolved to its name in the patient's files and its RTROIInterpretedType
    (:meth:`~radiogenomics.cohort.Cohort.resolve_structure`). InputError for a role that resolves to no
    structure or to several."""
    from radiogenomics.cohort.roles import role_key

    rows = cohort.image_rows(patient_id)
    found: dict[str, Resolved] = {}
    for _, row in rows.iterrows():
        role = str(row["roi"] or "").strip()
        if pd.isna(row["mask"]) or not role or role_key(role) in found:
            continue
        found[role_key(role)] = cohort.resolve_structure(row)
    return list(found.values())


def _stage_patient(staging: Path, record: Mapping[str, Any], objectives: Mapping[str, Any],
                   dose_map: PrescriptionMap | None) -> list[str]:
    from radiogenomics.radiobiology.export import write_prescription

    (staging / PRESCRIPTION_FILE).write_bytes(json_bytes(dict(record)))
    (staging / OBJECTIVES_FILE).write_bytes(json_bytes(dict(objectives)))
    written = [PRESCRIPTION_FILE, OBJECTIVES_FILE]
    if dose_map is not None:
        write_prescription(dose_map.dose_gy, dose_map.reference, staging, patient_id=str(record["patient_id"]),
                           stem=MAP_STEM)
        written.extend(MAP_FILES)
    return written


def _publish(staging: Path, folder: Path, written: Sequence[str]) -> None:
    """Move the staged files into the patient's folder (atomic per file); drop outputs of an earlier run."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in written:
        os.replace(staging / name, folder / name)
    for name in set(OUTPUT_FILES) - set(written):
        (folder / name).unlink(missing_ok=True)


class _Writer:
    """Writes one patient's folder; holds what every patient shares (cohort, OARs, options)."""

    def __init__(self, out_dir: Path, *, cohort: Any, oars: Sequence[str] | None, target_name: str,
                 fmiso_reference_suv: float | None) -> None:
        self.out_dir, self.cohort = out_dir, cohort
        self.oars, self.target_name, self.fmiso_reference_suv = oars, target_name, fmiso_reference_suv

    def _map(self, record: Mapping[str, Any], pid: str, site: str, notes: list[str]) -> PrescriptionMap | None:
        """The record's dose map on the patient's PET (an adapted record's repainted for the remaining fractions);
        None, with the reason in ``notes``, when the patient has no PET."""
        from radiogenomics.planning.remaining import is_adapted, remaining_biology, remaining_prescription_map

        if is_adapted(record):
            biology = remaining_biology(record, self.cohort, target_name=self.target_name,
                                        fmiso_reference_suv=self.fmiso_reference_suv)
            if biology is None:
                notes.append("no planning PET: no dose-prescription map")
                return None
            return remaining_prescription_map(record, biology, site=site)
        pet, reason = load_pet(self.cohort, pid, self.target_name)
        if pet is None:
            notes.append(reason)
            return None
        return prescription_map(dict(record), pet, site=site, fmiso_reference_suv=self.fmiso_reference_suv)

    def write(self, record: Mapping[str, Any]) -> PatientHandoff:
        from radiogenomics.planning.remaining import check_course_rails, delivered_dose, is_adapted, remaining_view

        pid = str(record["patient_id"])
        site = str(record["site"])  # the site whose rails the record passed (check_record: always there)
        adapted = is_adapted(record)
        if adapted:
            check_course_rails(record)  # the gate's invariants for the whole course (contract section 8)
        course = remaining_view(record) if adapted else record  # what the objectives and the map cover
        structures = None
        if self.cohort is not None and pid in self.cohort.patient_ids:
            structures = patient_structures(self.cohort, pid) or None  # none: the site's template, said in notes
        notes: list[str] = []
        dose_map = None
        if self.cohort is None:
            notes.append("no cohort given: no dose-prescription map")
        elif pid not in self.cohort.patient_ids:
            notes.append("not in the cohort: no dose-prescription map")
        else:
            dose_map = self._map(record, pid, site, notes)
            if dose_map is not None:
                notes.extend(dose_map.notes)
        map_stats = None if dose_map is None else {"file": MAP_FILES[0], "min_gy": dose_map.min_dose_gy,
                                                   "max_gy": dose_map.max_dose_gy}
        objectives = build_objectives(course, site=site, oars=self.oars, target_name=self.target_name,
                                      structures=structures, dose_map=map_stats,
                                      delivered=delivered_dose(record) if adapted else None)
        validate_objectives(objectives)
        notes = list(objectives["notes"]) + notes
        staging = Path(tempfile.mkdtemp(prefix=f".{pid}.", suffix=".tmp", dir=self.out_dir))
        try:
            written = _stage_patient(staging, record, objectives, dose_map)
            _publish(staging, self.out_dir / pid, written)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        d = float(course["recommended_dose_per_fraction_gy"])
        return PatientHandoff(
            patient_id=pid, files=[f"{pid}/{name}" for name in written], alpha_per_gy=float(record["alpha_per_gy"]),
            recommended_total_dose_gy=float(course["recommended_total_dose_gy"]),
            recommended_n_fractions=float(course["recommended_n_fractions"]),
            recommended_dose_per_fraction_gy=d,
            effect_per_fraction=float(record["alpha_per_gy"]) * d + float(record["beta_per_gy2"]) * d**2,
            n_oars=len(objectives["structures"]) - 1,
            flags=list(objectives["flags"]), notes=notes,
            map_modalities=dose_map.modalities if dose_map else [],
            map_mean_dose_gy=dose_map.mean_dose_gy if dose_map else None,
            map_min_dose_gy=dose_map.min_dose_gy if dose_map else None,
            map_max_dose_gy=dose_map.max_dose_gy if dose_map else None,
            map_tcp=dose_map.tcp if dose_map else None)


def _api_client(api_url: str, token: str | None) -> Any:
    import httpx

    if not token:
        raise InputError("calling the API needs a token", fix="put it in the environment variable named by "
                                                              "--token-env (never on the command line)")
    return httpx.Client(base_url=api_url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=120.0)


def handoff(model_uri: str, features: Path, out_dir: Path, *, patients: Sequence[str] | None = None,
            cohort: Path | None = None, api_url: str | None = None, token: str | None = None,
            n_fractions: float | None = None, dose_per_fraction_gy: float | None = None,
            target_gard: float | None = None, site: str | None = None, oars: Sequence[str] | None = None,
            target_name: str = "GTV", fmiso_reference_suv: float | None = None,
            http_client: Any = None) -> HandoffResult:
    """Write the hand-off folder ``out_dir`` for ``patients`` (default: all) of the feature table ``features``.

    Records come from ``model_uri`` loaded from the registry, or, with ``api_url`` (or an ``http_client``,
    e.g. a FastAPI ``TestClient``, whose base URL and token are set), from ``POST /v1/prescriptions``; then the
    records must name the same registered model as ``model_uri``. ``site`` overrides the table's
    ``clinical.site`` (rails, default OARs); ``oars`` overrides the patient's OAR ROIs in the cohort (default) or
    the site's list. InputError when nothing could be written (after writing ``failures.csv``).
    """
    from radiogenomics.features.schema import read_feature_table

    out_dir = Path(out_dir)
    if site is not None:
        load_rails().site(site)  # an unknown site is bad input for the whole run
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} is a file", file=str(out_dir), fix="give a folder for --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded_cohort = None
    if cohort is not None:
        from radiogenomics.cohort.loader import load_cohort

        loaded_cohort = load_cohort(cohort)
    table = read_feature_table(features)
    table = table.drop(columns=[c for c in table.columns if c.startswith(f"{naming.OUTCOME}.")])
    rows, failures = _select(table, patients)
    if site is not None:  # the prediction's gate takes the rails of this site too
        rows = rows.assign(**{naming.clinical_column("site"): site})
    regimen = {"n_fractions": n_fractions, "dose_per_fraction_gy": dose_per_fraction_gy, "target_gard": target_gard}
    records: list[dict[str, Any]] = []
    dvhs = None
    if loaded_cohort is not None and len(rows):
        from radiogenomics.features.patient_dvhs import cohort_dvhs

        dvhs = cohort_dvhs(loaded_cohort, [str(p) for p in rows[naming.PATIENT_ID]])  # the OAR limits' input
    if len(rows) and (api_url is not None or http_client is not None):
        client = http_client if http_client is not None else _api_client(str(api_url), token)
        source = f"API {api_url or client.base_url}"
        try:
            sent = record_source.with_dose_summaries(rows, dvhs) if dvhs else rows
            records, failed = record_source.from_api(client, sent, regimen)
        finally:
            if http_client is None:
                client.close()
        failures.extend(failed)
        _check_model(records, model_uri)
    elif len(rows):
        source = f"registry {model_uri}"
        records, failed = record_source.from_registry(model_uri, rows, regimen, cohort=cohort, oar_dvhs=dvhs)
        failures.extend(failed)
    else:
        source = "none"
    writer = _Writer(out_dir, cohort=loaded_cohort, oars=oars, target_name=target_name,
                     fmiso_reference_suv=fmiso_reference_suv)
    return _write_all(writer, records, failures, source, model_uri)


def _write_all(writer: _Writer, records: Sequence[Mapping[str, Any]], failures: list[tuple[str, str]], source: str,
               model_uri: str) -> HandoffResult:
    """Every record's folder (a failing patient is listed and skipped), failures.csv and handoff.json."""
    from radiogenomics.features.cache import atomic_write_bytes

    out_dir = writer.out_dir
    written: list[PatientHandoff] = []
    rails = load_rails()
    for record in records:
        try:
            check_record(record, rails)  # the gate's invariants on every record read back (contract section 2)
            written.append(writer.write(record))
        except (InputError, RuntimeError, OSError) as exc:  # RuntimeError: SimpleITK cannot read an image
            if not isinstance(exc, InputError):
                log.exception("handoff: patient %s failed", record.get("patient_id"))
            failures.append((str(record.get("patient_id")), " ".join(str(exc).split())))
    frame = pd.DataFrame(failures, columns=["patient_id", "reason"])
    atomic_write_bytes(out_dir / FAILURES_FILE, frame.to_csv(index=False).encode("utf-8"))
    version = str(records[0].get("model_version", "")) if records else ""
    uri = str(records[0].get("model_uri", "")) if records else model_uri
    result = HandoffResult(out_dir, uri or model_uri, version, source, written, failures)
    manifest = {"format": "radiogenomics-handoff/1", "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "model_uri": result.model_uri, "model_version": version, "source": source,
                "patients": [asdict(p) for p in written],
                "failures": [{"patient_id": p, "reason": r} for p, r in failures]}
    atomic_write_bytes(out_dir / MANIFEST_FILE, json_bytes(manifest))
    if not written:
        raise InputError(f"no patient could be handed off ({len(failures)} failed); reasons in "
                         f"{out_dir / FAILURES_FILE}", fix="see the reasons; check --patients and the inputs")
    return result


def _check_model(records: Sequence[Mapping[str, Any]], model_uri: str) -> None:
    """The API's records must come from the registered model named by ``model_uri`` (``models:/NAME...``)."""
    match = re.match(r"^models:/([^/@]+)", model_uri)
    if match is None or not records:
        return
    served = {str(r.get("model_name", "")) for r in records}
    if served != {match.group(1)}:
        raise InputError(f"the API serves {', '.join(sorted(served))}, not {match.group(1)} of {model_uri}",
                         fix="point --api-url at a server of that model or change --model")


def handoff_adapted(adapted: Path, out_dir: Path, *, cohort: Path, patients: Sequence[str] | None = None,
                    target_name: str = "GTV", fmiso_reference_suv: float | None = None) -> HandoffResult:
    """The hand-off folder of adapted records (module docstring): the remaining fractions' objectives and map.

    ``cohort``: the cohort the records were adapted from (planning and mid-treatment PET, structures).
    """
    from radiogenomics.cohort.loader import load_cohort
    from radiogenomics.planning.adapted_records import read_adapted

    records = read_adapted(adapted)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} is a file", file=str(out_dir), fix="give a folder for --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    failures: list[tuple[str, str]] = []
    by_id = {str(r.get("patient_id")): r for r in records}
    wanted = list(dict.fromkeys(str(p) for p in patients)) if patients is not None else list(by_id)
    chosen = []
    for pid in wanted:
        if not _SAFE_ID.match(pid):
            failures.append((pid, UNSAFE_ID))
        elif pid not in by_id:
            failures.append((pid, f"no adapted record in {Path(adapted).name}"))
        else:
            chosen.append(by_id[pid])
    writer = _Writer(out_dir, cohort=load_cohort(cohort), oars=None, target_name=target_name,
                     fmiso_reference_suv=fmiso_reference_suv)
    uri = str(records[0].get("model_uri") or "")
    return _write_all(writer, chosen, failures, f"adapted records {Path(adapted).name}", uri)
