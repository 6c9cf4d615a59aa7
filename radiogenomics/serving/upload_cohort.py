"""The form fields of ``POST /v1/prescriptions/images`` (and ``POST /v1/adaptations/images``) -> a one-patient
cohort folder (format v1) -> a record (or an adapted record).

The ``manifest`` form field (JSON) says what each uploaded file is; it maps onto images.csv rows::

    {"images": [
        {"modality": "CT", "image": "ct.nii.gz", "mask": "labels.nii.gz", "rois": {"GTV": 1, "parotid_l": 2}},
        {"modality": "PET_FDG", "image": "pet_fdg.nii.gz", "mask": "labels.nii.gz", "rois": {"GTV": 1}},
        {"modality": "CT", "image": "ct_series.zip", "mask": "ct_series.zip", "rois": ["GTV"]},
        {"modality": "DOSE", "image": "dose.nii.gz"},
        {"modality": "PET_FMISO", "image": "pet_fmiso_fx10.nii.gz", "mask": "labels.nii.gz", "rois": {"GTV": 1},
         "timepoint": "fraction_10"}],      # optional: imaging after 10 fractions (default: planning)
     "dvh": "dvh.csv",                      # optional: differential DVH bins (dvh.csv of the cohort format)
     "rsi_gene_map": {"CDK1": "PAK2"}}      # optional: as in cohort.yaml

* ``image`` / ``mask`` name uploaded files. A ``.zip`` is unpacked: as an image it stands for the one DICOM
  CT/MR/PET series folder inside it (for ``DOSE``: its one RTDOSE file), as a mask for its one RTSTRUCT.
* ``rois``: ROI name -> integer label of a label map, or a list of names (label 1; for an RTSTRUCT the
  structure names). ``DOSE`` entries have neither ``mask`` nor ``rois``.
* ``timepoint`` (optional): ``planning`` (the default) or ``fraction_K``, as images.csv's ``timepoint`` column
  (contract section 8). The baseline record reads the planning images only; ``POST /v1/adaptations/images``
  re-prescribes from the PET at its ``timepoint`` (:func:`adapt_upload`). At least one entry is a planning image.
* Every uploaded file must be named by the manifest, and every named file uploaded.

``expression`` is a JSON object gene -> normalised log2 value (finite number or null), ``clinical`` a JSON
object of patients.csv columns (``site`` defaults to the model's site). Validation problems become one
InputError naming the file, row and fix, with the request folder's paths shown relative to it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from radiogenomics.cohort import schema
from radiogenomics.errors import InputError

if TYPE_CHECKING:
    from radiogenomics.serving.state import LoadedModel

log = logging.getLogger(__name__)

MANIFEST_KEYS = ("images", "dvh", "rsi_gene_map")
ENTRY_KEYS = ("modality", "image", "mask", "rois", "timepoint")
MAX_IMAGE_ENTRIES = 500
MAX_GENES = 60_000
#: patients.csv column names a request may set.
COLUMN_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
#: Gene symbols, ROI names and text cells: printable, no control characters.
TEXT_PATTERN = re.compile(r"[^\x00-\x1f\x7f]{1,200}")
#: Modalities the adaptation reads at a mid-treatment timepoint (radiogenomics.planning.adaptive).
MID_TREATMENT_MODALITIES = ("PET_FDG", "PET_FMISO")
#: One extraction at a time per server process: it is CPU- and memory-bound (scale with server workers).
_EXTRACT_LOCK = threading.Lock()
MANIFEST_FIX = ('send manifest as JSON like {"images": [{"modality": "CT", "image": "ct.nii.gz", "mask": '
                '"labels.nii.gz", "rois": {"GTV": 1}}]} (docs/serving.md, "Uploading images")')


@dataclass(frozen=True)
class ImageEntry:
    """One manifest image: its modality, file names, (ROI, label) pairs and timepoint (canonical)."""

    modality: str
    image: str
    mask: str | None
    rois: tuple[tuple[str, int], ...]
    timepoint: str = schema.PLANNING


@dataclass
class UploadRequest:
    """The parsed form fields of one upload request."""

    patient_id: str
    images: tuple[ImageEntry, ...]
    dvh: str | None = None
    rsi_gene_map: dict[str, str] = field(default_factory=dict)
    expression: dict[str, float | None] | None = None
    clinical: dict[str, str] = field(default_factory=dict)

    def referenced(self) -> list[str]:
        """File names the manifest names, in order, each once."""
        names = [n for e in self.images for n in (e.image, e.mask) if n is not None]
        return list(dict.fromkeys([*names, *([self.dvh] if self.dvh else [])]))

    def check_files(self, uploaded: Sequence[str]) -> None:
        """InputError unless the uploads are exactly the files the manifest names (no duplicates)."""
        if not uploaded:
            raise InputError("no files were uploaded", patient_id=self.patient_id,
                             fix="send the images and masks as form field files (curl -F files=@ct.nii.gz)")
        duplicates = sorted({n for n in uploaded if list(uploaded).count(n) > 1})
        if duplicates:
            raise InputError(f"two uploaded files are named {duplicates[0]!r}", patient_id=self.patient_id,
                             fix="give every uploaded file its own name")
        referenced = self.referenced()
        missing = [n for n in referenced if n not in uploaded]
        if missing:
            raise InputError(f"manifest names file(s) that were not uploaded: {', '.join(missing)}",
                             patient_id=self.patient_id, fix="upload them as form field files, or correct the "
                                                             "names in manifest")
        unused = [n for n in uploaded if n not in referenced]
        if unused:
            raise InputError(f"uploaded file(s) not named in manifest: {', '.join(unused)}",
                             patient_id=self.patient_id, fix="name each uploaded file in manifest (images[].image, "
                                                             "images[].mask or dvh), or leave it out")

    def check_timepoint(self, timepoint: str) -> None:
        """InputError unless the manifest has a mid-treatment PET (FDG or FMISO) at ``timepoint`` (canonical
        ``fraction_K``), the images the adaptation reads."""
        at = [e for e in self.images if e.timepoint == timepoint]
        pet = ' or '.join(MID_TREATMENT_MODALITIES)
        fix = (f'add the mid-treatment {pet} to manifest.images with "timepoint": "{timepoint}" (and upload it), '
               "or send the timepoint of the mid-treatment images you have")
        if not at:
            others = sorted({e.timepoint for e in self.images} - {schema.PLANNING}, key=schema.timepoint_sort_key)
            found = f" (manifest.images has {', '.join(others)})" if others else " (every entry is a planning image)"
            raise InputError(f"no image in manifest.images has timepoint {timepoint}{found}",
                             patient_id=self.patient_id, fix=fix)
        if not any(e.modality in MID_TREATMENT_MODALITIES for e in at):
            kinds = ", ".join(sorted({e.modality for e in at}))
            raise InputError(f"the images at timepoint {timepoint} are {kinds}: the adaptation reads a {pet} "
                             "there", patient_id=self.patient_id, fix=fix)


def _reject_constant(name: str) -> None:
    raise InputError(f"{name} is not a finite number", fix="send finite numbers; null where a value is unknown")


def json_object(text: str | None, field_name: str, fix: str) -> dict[str, Any] | None:
    """The JSON object in a form field (None when absent or blank); InputError naming the field otherwise."""
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"form field {field_name} is not valid JSON ({exc.msg} at line {exc.lineno} column "
                         f"{exc.colno})", fix=fix) from exc
    except InputError as exc:
        raise InputError(f"form field {field_name}: {exc.reason}", fix=exc.fix) from exc
    if not isinstance(value, dict):
        raise InputError(f"form field {field_name} must be a JSON object, got {type(value).__name__}", fix=fix)
    return value


def _finite_number(value: Any, where: str, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise InputError(f"{where} must be a finite number, got {json.dumps(value)[:60]}", fix=fix)
    return float(value)


def _text(value: Any, where: str, fix: str) -> str:
    if not isinstance(value, str) or not TEXT_PATTERN.fullmatch(value):
        raise InputError(f"{where} must be a non-empty string of at most 200 printable characters, got "
                         f"{json.dumps(value)[:60]}", fix=fix)
    return value


def parse_entry_timepoint(raw: Any, where: str) -> str:
    """The canonical timepoint of a manifest entry (``planning`` when absent); InputError naming the field."""
    if raw is None:
        return schema.PLANNING
    canonical = schema.parse_timepoint(raw) if isinstance(raw, str) else None
    if canonical is None:
        raise InputError(f"{where}.timepoint {json.dumps(raw)[:40]} is neither planning nor fraction_K (K >= 1)",
                         fix='leave timepoint out for a planning image, or give "fraction_K" for imaging after K '
                             'delivered fractions, e.g. "fraction_10"')
    return canonical


def parse_entry(raw: Any, index: int) -> ImageEntry:
    """One ``manifest.images[i]`` entry; InputError naming the field."""
    where = f"manifest.images[{index}]"
    if not isinstance(raw, dict):
        raise InputError(f"{where} must be a JSON object", fix=MANIFEST_FIX)
    unknown = sorted(set(raw) - set(ENTRY_KEYS))
    if unknown:
        raise InputError(f"{where} has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(ENTRY_KEYS)}",
                         fix=MANIFEST_FIX)
    modality = raw.get("modality")
    if modality not in schema.MODALITIES:
        raise InputError(f"{where}.modality {json.dumps(modality)[:40]} is not one of {', '.join(schema.MODALITIES)}",
                         fix="use a modality of the cohort format (docs/cohort-format.md)")
    image = _text(raw.get("image"), f"{where}.image", "name an uploaded file")
    timepoint = parse_entry_timepoint(raw.get("timepoint"), where)
    if modality == schema.DOSE_MODALITY:
        if raw.get("mask") is not None or raw.get("rois") is not None:
            raise InputError(f"{where} is a DOSE grid: it takes no mask or rois",
                             fix="leave mask and rois out of DOSE entries; the DVHs use the other entries' masks")
        return ImageEntry(modality, image, None, (), timepoint)
    mask = _text(raw.get("mask"), f"{where}.mask", "name the uploaded label map or RTSTRUCT of this image")
    return ImageEntry(modality, image, mask, parse_rois(raw.get("rois"), f"{where}.rois"), timepoint)


def parse_rois(raw: Any, where: str) -> tuple[tuple[str, int], ...]:
    """``{"GTV": 1, ...}`` or ``["GTV", ...]`` (label 1) -> ((roi, label), ...)."""
    fix = 'give rois as {"GTV": 1, "parotid_l": 2} (label map values) or ["GTV"] (RTSTRUCT structure names)'
    items: list[tuple[Any, Any]]
    if isinstance(raw, dict):
        items = list(raw.items())
    elif isinstance(raw, list):
        items = [(name, 1) for name in raw]
    else:
        raise InputError(f"{where} must be a non-empty JSON object or list", fix=fix)
    if not items:
        raise InputError(f"{where} is empty", fix=fix)
    rois: list[tuple[str, int]] = []
    for name, label in items:
        roi = _text(name, f"{where} name", fix)
        if isinstance(label, bool) or not isinstance(label, int) or not 1 <= label <= 65535:
            raise InputError(f"{where}.{roi} label must be an integer 1..65535, got {json.dumps(label)[:40]}", fix=fix)
        rois.append((roi, label))
    return tuple(rois)


def parse_manifest(text: str) -> tuple[tuple[ImageEntry, ...], str | None, dict[str, str]]:
    """(image entries, dvh file name, rsi_gene_map) of the manifest form field."""
    raw = json_object(text, "manifest", MANIFEST_FIX)
    if raw is None:
        raise InputError("form field manifest is missing or blank", fix=MANIFEST_FIX)
    unknown = sorted(set(raw) - set(MANIFEST_KEYS))
    if unknown:
        raise InputError(f"manifest has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(MANIFEST_KEYS)}",
                         fix=MANIFEST_FIX)
    images = raw.get("images")
    if not isinstance(images, list) or not images or len(images) > MAX_IMAGE_ENTRIES:
        raise InputError(f"manifest.images must be a list of 1..{MAX_IMAGE_ENTRIES} entries", fix=MANIFEST_FIX)
    dvh = raw.get("dvh")
    if dvh is not None:
        dvh = _text(dvh, "manifest.dvh", "name the uploaded dvh.csv")
    gene_map = raw.get("rsi_gene_map") or {}
    if not isinstance(gene_map, dict):
        raise InputError("manifest.rsi_gene_map must be a JSON object slot -> gene",
                         fix='e.g. "rsi_gene_map": {"CDK1": "PAK2"}')
    gene_map = {_text(k, "manifest.rsi_gene_map slot", "name an RSI gene"):
                _text(v, f"manifest.rsi_gene_map.{k}", "name an expression column") for k, v in gene_map.items()}
    entries = tuple(parse_entry(e, i) for i, e in enumerate(images))
    if all(e.timepoint != schema.PLANNING for e in entries):
        raise InputError("manifest.images has no planning image: every entry has a fraction_K timepoint",
                         fix="add the planning (baseline) images, without timepoint or with \"timepoint\": "
                             "\"planning\"; the record is predicted from them")
    return entries, dvh, gene_map


def parse_expression(text: str | None) -> dict[str, float | None] | None:
    """gene -> finite value or None (missing), from the expression form field; None when absent."""
    fix = 'send expression as a JSON object gene -> normalised log2 value, e.g. {"AR": 7.1, "JUN": 9.3}'
    raw = json_object(text, "expression", fix)
    if raw is None:
        return None
    if not raw or len(raw) > MAX_GENES:
        raise InputError(f"form field expression must hold 1..{MAX_GENES} genes", fix=fix)
    out: dict[str, float | None] = {}
    for gene, value in raw.items():
        name = _text(gene, "expression gene name", fix)
        if name == "patient_id":
            raise InputError("expression has a gene named patient_id", fix=fix)
        out[name] = None if value is None else _finite_number(value, f"expression.{name}", fix)
    return out


def parse_clinical(text: str | None, patient_id: str) -> dict[str, str]:
    """patients.csv column -> cell text from the clinical form field (numbers written exactly, null blank)."""
    fix = 'send clinical as a JSON object of patients.csv columns, e.g. {"site": "head_neck", "age_years": 61}'
    raw = json_object(text, "clinical", fix) or {}
    out: dict[str, str] = {}
    for column, value in raw.items():
        if not isinstance(column, str) or not COLUMN_PATTERN.fullmatch(column):
            raise InputError(f"clinical column {column[:60]!r} is not a valid patients.csv column name", fix=fix)
        if column == "patient_id":
            if value != patient_id:
                raise InputError(f"clinical.patient_id {json.dumps(value)[:60]} differs from the form field "
                                 f"patient_id {patient_id!r}", fix="leave patient_id out of clinical")
            continue
        if value is None:
            out[column] = ""
        elif isinstance(value, str):
            out[column] = "" if not value.strip() else _text(value, f"clinical.{column}", fix)
        elif isinstance(value, int) and not isinstance(value, bool):
            out[column] = str(value)
        else:
            out[column] = repr(_finite_number(value, f"clinical.{column}", fix))
    return out


def parse_request(patient_id: str, manifest: str, expression: str | None, clinical: str | None) -> UploadRequest:
    """All form fields but the files, parsed and checked (InputError naming the field)."""
    images, dvh, gene_map = parse_manifest(manifest)
    return UploadRequest(patient_id, images, dvh, gene_map, parse_expression(expression),
                         parse_clinical(clinical, patient_id))


# ------------------------------------------------------------------------------------------ the cohort folder
def _dicom_by_modality(folder: Path) -> dict[str, list[Path]]:
    """DICOM files under an unpacked archive, by their Modality tag."""
    from radiogenomics.cohort.dicom import dicom_modality, is_dicom_file

    found: dict[str, list[Path]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if is_dicom_file(path):
            found.setdefault(dicom_modality(path), []).append(path)
    return found


def resolve_file(name: str, *, mask: bool, modality: str, saved: Mapping[str, Path],
                 unpacked: Mapping[str, Path]) -> Path:
    """The path an images.csv cell gets for an uploaded name (a zip -> its series folder, RTSTRUCT or RTDOSE)."""
    from radiogenomics.cohort.dicom import IMAGE_MODALITIES

    if name not in unpacked:
        return saved[name]
    found = _dicom_by_modality(unpacked[name])
    if mask or modality == schema.DOSE_MODALITY:
        kind = "RTSTRUCT" if mask else "RTDOSE"
        files = found.get(kind, [])
        if len(files) != 1:
            raise InputError(f"the archive holds {len(files)} DICOM {kind} files; exactly one is needed", file=name,
                             fix=f"zip one {kind} (or upload the {kind} file itself and name it in manifest)")
        return files[0]
    folders = sorted({p.parent for m in IMAGE_MODALITIES for p in found.get(m, [])})
    if len(folders) != 1:
        raise InputError(f"the archive holds DICOM image files in {len(folders)} folders; one series folder is "
                         "needed", file=name, fix="zip exactly one CT, MR or PET series (one zip per series)")
    return folders[0]


def write_cohort(root: Path, request: UploadRequest, saved: Mapping[str, Path], unpacked: Mapping[str, Path],
                 default_site: str) -> None:
    """Write cohort.yaml, patients.csv, images.csv and, when given, expression.csv and dvh.csv under ``root``."""
    pid = request.patient_id
    meta: dict[str, Any] = {"name": f"upload {pid}", "format_version": schema.FORMAT_VERSION}
    if request.rsi_gene_map:
        meta["rsi_gene_map"] = request.rsi_gene_map
    (root / schema.COHORT_META_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
    clinical = dict(request.clinical)
    if not clinical.get("site"):
        clinical["site"] = default_site
        log.info("upload %s: no clinical site given; using the model's site %s", pid, default_site)
    _write_table(root / schema.PATIENTS_FILE, [{"patient_id": pid, **clinical}])
    rows = []
    for entry in request.images:
        image = resolve_file(entry.image, mask=False, modality=entry.modality, saved=saved, unpacked=unpacked)
        row = {"patient_id": pid, "modality": entry.modality, "image": image.relative_to(root).as_posix(),
               "mask": "", "roi": "", "label": "", schema.TIMEPOINT_COLUMN: entry.timepoint}
        if entry.mask is None:
            rows.append(row)
            continue
        mask = resolve_file(entry.mask, mask=True, modality=entry.modality, saved=saved, unpacked=unpacked)
        rows.extend({**row, "mask": mask.relative_to(root).as_posix(), "roi": roi, "label": str(label)}
                    for roi, label in entry.rois)
    _write_table(root / schema.IMAGES_FILE, rows)
    if request.expression is not None:
        _write_table(root / schema.EXPRESSION_FILE, [{"patient_id": pid, **{
            gene: "" if value is None else repr(value) for gene, value in request.expression.items()}}])
    if request.dvh is not None:
        _write_table(root / schema.DVH_FILE, dvh_rows(saved[request.dvh], request.dvh, pid).to_dict("records"))


def _write_table(path: Path, rows: list[dict[str, str]]) -> None:
    pd.DataFrame(rows, dtype=str).to_csv(path, index=False)


def dvh_rows(path: Path, name: str, patient_id: str) -> pd.DataFrame:
    """The uploaded DVH table as text cells; ``patient_id`` filled in when the column is absent."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise InputError(f"the DVH table is not a readable UTF-8 CSV ({str(exc)[:120]})", file=name,
                         fix="send dvh.csv with columns structure, dose_gy, volume_cc") from exc
    if "patient_id" not in frame.columns:
        frame.insert(0, "patient_id", patient_id)
    others = sorted(set(frame["patient_id"]) - {patient_id})
    if others:
        raise InputError(f"the DVH table has rows of other patients ({', '.join(others[:3])})", file=name,
                         patient_id=patient_id, fix="send only this patient's rows")
    return frame


# ------------------------------------------------------------------------------------ validate, extract, predict
def _relative(text: str | None, root: Path) -> str | None:
    """``text`` with the request folder's paths shown as the uploaded names."""
    if text is None:
        return None
    for prefix in (f"{root}/upload/", f"{root}/", f"{root.resolve()}/upload/", f"{root.resolve()}/"):
        text = text.replace(prefix, "")
    return re.sub(r"(?<![\w/.-])upload/", "", text)


def check_valid(root: Path) -> None:
    """Run the cohort validator; InputError listing its errors (warnings are logged)."""
    from radiogenomics.cohort import validate_cohort

    report = validate_cohort(root)
    for problem in report.warnings:
        log.info("upload: %s", problem.one_line())
    if report.errors:
        shown = " | ".join(p.one_line() for p in report.errors[:6])
        more = f" (+{len(report.errors) - 6} more)" if len(report.errors) > 6 else ""
        note = (" (images.csv rows are built from manifest.images: one per entry and ROI, in order)"
                if "images.csv" in shown else "")
        raise InputError(f"the uploaded files do not form a valid patient: {shown}{more}{note}")


def extract_features(root: Path, prescriber: Any, cache_dir: Path | None) -> pd.DataFrame:
    """The patient's feature row, extracted with the model's feature schema; InputError when an item fails."""
    from radiogenomics.features.pipeline import ExtractOptions, extract
    from radiogenomics.features.schema import read_feature_table
    from radiogenomics.training.registry.prediction import write_reference_schema

    reference, out = root.parent / "model-schema.parquet", root.parent / "features.parquet"
    write_reference_schema(prescriber.schema, reference)
    options = ExtractOptions(workers=1, schema_from=reference, cache_dir=cache_dir, use_cache=cache_dir is not None)
    with _EXTRACT_LOCK:
        summary = extract(root, out, options)
    if summary.failed:
        failures = pd.read_csv(summary.failures, dtype=str, keep_default_na=False)
        reasons = " | ".join(f"{r.modality} {r.roi}: {r.reason}" for r in failures.itertuples())
        raise InputError(f"feature extraction failed for {summary.failed} item(s): {reasons[:1500]}",
                         fix="correct the files named in the reasons")
    return read_feature_table(out)


@contextlib.contextmanager
def _as_uploaded(root: Path, patient_id: str) -> Iterator[None]:
    """InputErrors raised inside name the uploaded files (not the request folder's paths) and the patient."""
    try:
        yield
    except InputError as exc:
        raise type(exc)(_relative(exc.reason, root) or "", patient_id=exc.patient_id or patient_id,
                        file=_relative(exc.file, root), fix=_relative(exc.fix, root)) from exc


def _baseline_records(loaded: LoadedModel, request: UploadRequest, root: Path, saved: Mapping[str, Path],
                      unpacked: Mapping[str, Path], *, regimen: Mapping[str, float | None],
                      cache_dir: Path | None) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Write the cohort under ``root``, validate, extract (planning images) and predict, as `predict` does:
    (the records (one), every organ's DVH by patient)."""
    write_cohort(root, request, saved, unpacked, default_site=str(getattr(loaded.prescriber, "site", "other")))
    check_valid(root)
    table = extract_features(root, loaded.prescriber, cache_dir)
    from radiogenomics.features.patient_dvhs import cohort_dvhs

    dvhs = cohort_dvhs(root, [str(p) for p in table["patient_id"]])  # every organ's DVH: the OAR limits
    records = list(loaded.prescriber.predict_records(table, model=loaded.info, cohort=root, oar_dvhs=dvhs,
                                                     **regimen))
    return records, dvhs


def predict_upload(loaded: LoadedModel, request: UploadRequest, root: Path, saved: Mapping[str, Path],
                   unpacked: Mapping[str, Path], *, regimen: Mapping[str, float | None],
                   cache_dir: Path | None) -> list[dict[str, Any]]:
    """Write the cohort under ``root``, validate, extract and predict: the records (one)."""
    with _as_uploaded(root, request.patient_id):
        return _baseline_records(loaded, request, root, saved, unpacked, regimen=regimen, cache_dir=cache_dir)[0]


def adapt_upload(loaded: LoadedModel, request: UploadRequest, root: Path, saved: Mapping[str, Path],
                 unpacked: Mapping[str, Path], *, timepoint: str, regimen: Mapping[str, float | None],
                 cache_dir: Path | None) -> list[dict[str, Any]]:
    """The baseline record as :func:`predict_upload` gives it, re-prescribed from the PET at ``timepoint``
    (canonical ``fraction_K``) as `radiogenomics adapt` does (contract section 8): the adapted records (one).
    ``timepoint`` was checked against the manifest by the caller (``request.check_timepoint`` in
    ``uploads.prescribe_images``, before any file is written)."""
    from radiogenomics.cohort import load_cohort
    from radiogenomics.planning.adaptive import adapt_record
    from radiogenomics.radiobiology.rails import load_rails

    with _as_uploaded(root, request.patient_id):
        records, dvhs = _baseline_records(loaded, request, root, saved, unpacked, regimen=regimen,
                                          cache_dir=cache_dir)
        cohort, rails = load_cohort(root), load_rails()
        return [adapt_record(r, cohort, timepoint, rails=rails, oar_dvh=dvhs.get(str(r["patient_id"])))
                for r in records]
