"""Load a cohort folder (format v1) into typed tables.

`load_cohort` checks the tables (not the image contents; that is `validate_cohort`'s job) and raises
`InputError` listing every table problem. Images are read lazily through `Cohort.read_image` /
`Cohort.read_mask`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import SimpleITK as sitk
import yaml

from radiogenomics.cohort import schema
from radiogenomics.cohort.dicom import dicom_modality, is_dicom_file
from radiogenomics.cohort.expression_layouts import layout_from_meta, read_expression
from radiogenomics.cohort.imageio import read_image, read_mask
from radiogenomics.cohort.problems import ProblemList
from radiogenomics.cohort.roles import HOW_LABEL, HOW_LABEL_NAME, Resolved, aliases_for, parse_structure_aliases
from radiogenomics.cohort.roles import YAML_KEY as STRUCTURE_ALIASES_KEY
from radiogenomics.cohort.rsi_gene_map import YAML_KEY, gene_map_from_yaml, merge_gene_maps, slot_columns
from radiogenomics.cohort.rtstruct import resolve_rtstruct_role
from radiogenomics.cohort.tables import check_timepoints, parse_dvh, parse_images, parse_patients
from radiogenomics.errors import InputError


class DeliveredCourse(NamedTuple):
    """What was delivered before a mid-treatment timepoint (contract section 8).

    ``n_fractions``: K of ``fraction_K`` (patients.csv ``delivered_n_fractions``, per patient, must equal it when
    given: the delivered_* columns describe the patient's one mid-treatment timepoint). ``dose_gy``:
    ``delivered_dose_gy`` when given, else ``n_fractions`` fractions of the patient's regimen (total_dose_gy /
    n_fractions each); None when neither is known. ``source``: ``patients.csv`` or ``timepoint``.
    """

    n_fractions: int
    dose_gy: float | None
    source: str


@dataclass
class Cohort:
    """A loaded cohort. `images` has absolute paths; `expression` is indexed by patient_id.

    ``images`` holds the **planning** rows of images.csv only (blank or ``planning`` timepoint): what extract,
    train, predict, plan and report read, so mid-treatment imaging never enters features, DVHs or dose maps.
    ``all_images`` holds every row, mid-treatment (``fraction_K``) ones included, with the canonical
    ``timepoint`` column; select from it with :meth:`image_rows` (``timepoint=None`` for every timepoint). A
    cohort without mid-treatment rows has ``images`` equal to ``all_images``.
    """

    root: Path
    patients: pd.DataFrame
    images: pd.DataFrame
    expression: pd.DataFrame | None = None
    dvh: pd.DataFrame | None = None
    meta: dict[str, object] = field(default_factory=dict)
    #: RSI slot -> expression column in effect (cohort.yaml ``rsi_gene_map``, overridden by the caller's map).
    rsi_gene_map: dict[str, str] = field(default_factory=dict)
    #: cohort.yaml ``structure_aliases``: role -> names of that structure in the patients' mask files.
    structure_aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: every images.csv row at every timepoint (None on construction: ``images`` is then split into both).
    all_images: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        if self.all_images is None:
            self.all_images = self.images
        self.images = planning_rows(self.all_images)

    @property
    def patient_ids(self) -> list[str]:
        return [str(p) for p in self.patients["patient_id"]]

    @property
    def clinical_columns(self) -> list[str]:
        """Columns of patients.csv other than the ID: the clinical covariates and outcomes."""
        return [c for c in self.patients.columns if c != "patient_id"]

    def image_rows(self, patient_id: str | None = None, modality: str | None = None,
                   timepoint: str | None = schema.PLANNING) -> pd.DataFrame:
        """images.csv rows of a patient / modality at a timepoint: ``planning`` (the default: the baseline images
        every existing caller reads), ``fraction_K`` (any spelling :func:`~radiogenomics.cohort.schema.
        parse_timepoint` accepts, e.g. ``Fraction_010``), or None for every timepoint. ValueError for a
        timepoint that is none of these."""
        if timepoint is None:
            rows = self.all_images if self.all_images is not None else self.images
        else:
            canonical = schema.parse_timepoint(timepoint)
            if canonical is None:
                raise ValueError(f"timepoint {timepoint!r} is neither 'planning' nor 'fraction_K' (K >= 1)")
            if canonical == schema.PLANNING:
                rows = self.images
            else:
                rows = self.all_images if self.all_images is not None else self.images
                rows = rows[_timepoints_of(rows) == canonical]
        if patient_id is not None:
            rows = rows[rows["patient_id"] == patient_id]
        if modality is not None:
            rows = rows[rows["modality"] == modality]
        return rows

    def timepoints(self, patient_id: str | None = None) -> list[str]:
        """The timepoints with images (of ``patient_id``, else of any patient), chronologically: ``planning``
        first, then ``fraction_K`` by K. Empty for a patient without images.csv rows."""
        rows = self.all_images if self.all_images is not None else self.images
        if patient_id is not None:
            rows = rows[rows["patient_id"] == patient_id]
        found = {str(t) for t in _timepoints_of(rows)}
        valid = [t for t in found if schema.parse_timepoint(t) == t]
        return sorted(valid, key=schema.timepoint_sort_key)

    def delivered_course(self, patient_id: str, timepoint: str) -> DeliveredCourse:
        """What the patient had received at a ``fraction_K`` timepoint (see :class:`DeliveredCourse`)."""
        k = schema.timepoint_fraction(timepoint)
        if k is None:
            raise ValueError("the planning timepoint has no delivered fractions; give a 'fraction_K' timepoint")
        row = self.patients[self.patients["patient_id"].astype(str) == str(patient_id)]
        if row.empty:
            raise KeyError(f"patient {patient_id!r} is not in patients.csv")

        def cell(col: str) -> float | None:
            if col not in row.columns or pd.isna(row[col].iat[0]):
                return None
            return float(row[col].iat[0])

        n_given, dose_given = cell("delivered_n_fractions"), cell("delivered_dose_gy")
        if n_given is not None and int(n_given) != k:
            raise InputError(f"patient {patient_id}: patients.csv delivered_n_fractions is {int(n_given)} but the "
                             f"{timepoint} timepoint is imaging after {k} fractions",
                             file=schema.PATIENTS_FILE, patient_id=str(patient_id),
                             fix="the delivered_* columns of patients.csv describe the patient's one mid-treatment "
                                 f"timepoint: set delivered_n_fractions to {k} (and delivered_dose_gy to the dose of "
                                 "those fractions), or leave both blank to derive them from the timepoint")
        n = int(n_given) if n_given is not None else k
        if dose_given is not None:
            return DeliveredCourse(n, dose_given, "patients.csv")
        total, n_total = cell("total_dose_gy"), cell("n_fractions")
        dose = total / n_total * n if total is not None and n_total else None
        return DeliveredCourse(n, dose, "patients.csv" if n_given is not None else "timepoint")

    def read_image(self, row: pd.Series) -> sitk.Image:
        return read_image(row["image"])

    def read_mask(self, row: pd.Series, reference: sitk.Image | None = None) -> sitk.Image:
        """The mask of an images.csv row's role (``structure`` column and cohort.yaml aliases applied)."""
        reference = reference if reference is not None else read_image(row["image"])
        return read_mask(row["mask"], reference, str(row["roi"]), int(row["label"]),
                         reference_path=row["image"], patient_id=str(row["patient_id"]),
                         structure=row_structure(row), aliases=self.aliases_for(str(row["roi"])))

    def aliases_for(self, role: str) -> tuple[str, ...]:
        """cohort.yaml's ``structure_aliases`` names of a role (matched in any case or spacing)."""
        return aliases_for(self.structure_aliases, role)

    def resolve_structure(self, row: pd.Series) -> Resolved:
        """What an images.csv row's role resolves to in its mask file (no image is read): in an RTSTRUCT the
        structure found by :func:`radiogenomics.cohort.roles.resolve_role`; in a label map the ``structure``
        column's label name, else the label value. Raises InputError (StructureError for a role that
        resolves to no structure or to several)."""
        role, structure = str(row["roi"]), row_structure(row)
        mask = Path(str(row["mask"]))
        if is_dicom_file(mask) and dicom_modality(mask) == "RTSTRUCT":
            return resolve_rtstruct_role(mask, role, structure=structure, aliases=self.aliases_for(role),
                                         patient_id=str(row["patient_id"]))
        if structure:
            return Resolved(role=role, structure=structure, how=HOW_LABEL_NAME)
        return Resolved(role=role, structure=role, how=f"{HOW_LABEL} {int(row['label'])}")


def _timepoints_of(rows: pd.DataFrame) -> pd.Series:
    """The canonical timepoint of each row (``planning`` for a frame without the column)."""
    if schema.TIMEPOINT_COLUMN not in rows.columns:
        return pd.Series(schema.PLANNING, index=rows.index, dtype=object)
    return rows[schema.TIMEPOINT_COLUMN].map(lambda t: schema.parse_timepoint(t) or str(t))


def planning_rows(images: pd.DataFrame) -> pd.DataFrame:
    """The planning rows of an images frame (blank or ``planning`` timepoint), renumbered 0..n-1; the frame itself
    when every row is a planning row (so a cohort without mid-treatment imaging is read exactly as before)."""
    keep = _timepoints_of(images) == schema.PLANNING
    if bool(keep.all()):
        return images
    return images[keep.to_numpy()].reset_index(drop=True)


def row_structure(row: Mapping[str, object] | pd.Series) -> str | None:
    """The ``structure`` cell of an images.csv row (None when blank or absent)."""
    value = row.get("structure") if hasattr(row, "get") else None
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value).strip() or None


def read_cohort_meta(root: Path, problems: ProblemList) -> dict[str, object]:
    path = root / schema.COHORT_META_FILE
    if not path.exists():
        return {}
    try:
        meta = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        problems.add("invalid_yaml", f"cohort.yaml is not valid YAML: {exc}".replace("\n", " "),
                     "fix the YAML syntax.", file=schema.COHORT_META_FILE)
        return {}
    if not isinstance(meta, dict):
        problems.add("invalid_yaml", "cohort.yaml must be a mapping (name:, description:, format_version:).",
                     "write key: value lines.", file=schema.COHORT_META_FILE)
        return {}
    if YAML_KEY in meta:
        try:
            meta[YAML_KEY] = gene_map_from_yaml(meta[YAML_KEY])
        except InputError as exc:
            problems.add("invalid_rsi_gene_map", exc.reason, exc.fix or "", file=schema.COHORT_META_FILE)
            meta[YAML_KEY] = {}
    if STRUCTURE_ALIASES_KEY in meta:
        try:
            meta[STRUCTURE_ALIASES_KEY] = parse_structure_aliases(meta[STRUCTURE_ALIASES_KEY])
        except InputError as exc:
            problems.add("invalid_structure_aliases", exc.reason, exc.fix or "", file=schema.COHORT_META_FILE)
            meta[STRUCTURE_ALIASES_KEY] = {}
    version = meta.get("format_version", schema.FORMAT_VERSION)
    if str(version).strip() != str(schema.FORMAT_VERSION):
        problems.add("unsupported_format_version", f"format_version {version!r} is not supported.",
                     f"this release reads format_version {schema.FORMAT_VERSION}.", file=schema.COHORT_META_FILE)
    return meta


def rsi_genes(gene_map: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The expression columns of the 10 RSI slots (Eschrich 2009): the genes, or the columns mapped to them."""
    return slot_columns(gene_map or {})


def _rsi_gene_map(meta: Mapping[str, object], override: Mapping[str, str] | None,
                  problems: ProblemList) -> dict[str, str]:
    """cohort.yaml's RSI slot map overridden by ``override`` (a conflict between the two is a problem)."""
    from_file = meta.get(YAML_KEY) or {}
    try:
        return merge_gene_maps(from_file if isinstance(from_file, dict) else {}, override)
    except InputError as exc:
        problems.add("invalid_rsi_gene_map", exc.reason, exc.fix or "", file=schema.COHORT_META_FILE)
        return {}


def load_tables(root: Path, rsi_gene_map: Mapping[str, str] | None = None) -> tuple[Cohort | None, ProblemList]:
    """Parse every table of the cohort at `root`, collecting all problems (never raises for bad content).

    `rsi_gene_map` (RSI slot -> expression column, e.g. from ``extract --rsi-gene-map``) overrides cohort.yaml's
    ``rsi_gene_map`` slot by slot; expression.csv must then have the mapped columns.
    """
    problems = ProblemList()
    if not root.is_dir():
        problems.add("not_a_folder", f"cohort folder {root} does not exist.", "give the path of a cohort folder.")
        return None, problems
    meta = read_cohort_meta(root, problems)
    gene_map = _rsi_gene_map(meta, rsi_gene_map, problems)
    patients_path = root / schema.PATIENTS_FILE
    if not patients_path.exists():
        problems.add("missing_file", "patients.csv is missing.", "add patients.csv (one row per patient).",
                     file=schema.PATIENTS_FILE)
        return None, problems
    if not patients_path.is_file():
        problems.add("unreadable_table", f"patients.csv is not a file ({patients_path}).",
                     "patients.csv must be a CSV file (one row per patient), not a folder.",
                     file=schema.PATIENTS_FILE)
        return None, problems
    patients, found = _parse(parse_patients, patients_path, schema.PATIENTS_FILE, problems)
    ids = {str(p) for p in patients.get("patient_id", pd.Series(dtype=object)).dropna()}
    images = pd.DataFrame(columns=list(schema.IMAGES_COLUMNS))
    if (root / schema.IMAGES_FILE).exists():
        images, found = _parse(lambda p: parse_images(p, root, ids), root / schema.IMAGES_FILE,
                               schema.IMAGES_FILE, problems)
    expression = None
    layout = layout_from_meta(meta, problems)  # cohort.yaml `expression:`; default: expression.csv
    source = layout.source(root) if layout is not None else None
    if layout is not None and source is not None:
        slots, declared = rsi_genes(gene_map), layout
        expression, found = _parse(lambda p: read_expression(p, declared, ids, slots), source, declared.label,
                                   problems)
    problems.extend(check_timepoints(images, patients))
    dvh = None
    if (root / schema.DVH_FILE).exists():
        dvh, found = _parse(lambda p: parse_dvh(p, ids), root / schema.DVH_FILE, schema.DVH_FILE, problems)
    aliases = meta.get(STRUCTURE_ALIASES_KEY) or {}
    return Cohort(root=root, patients=patients, images=images, expression=expression, dvh=dvh, meta=meta,
                  rsi_gene_map=gene_map, structure_aliases=dict(aliases) if isinstance(aliases, dict) else {}
                  ), problems


def _parse(parser, path: Path, file: str, problems: ProblemList):  # type: ignore[no-untyped-def]
    try:
        frame, found = parser(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        problems.add("unreadable_table", f"cannot parse {file}: {exc}".replace("\n", " "),
                     "save the table as UTF-8 CSV with a header row.", file=file)
        return pd.DataFrame(), ProblemList()
    except OSError as exc:  # a folder named patients.csv, an unreadable file
        problems.add("unreadable_table", f"cannot read {file}: {exc.strerror or exc}.",
                     f"{file} must be a readable CSV file (not a folder).", file=file)
        return pd.DataFrame(), ProblemList()
    problems.extend(found)
    return frame, found


def load_cohort(path: str | Path, rsi_gene_map: Mapping[str, str] | None = None) -> Cohort:
    """Load and type-check the tables of a cohort folder; raise `InputError` listing every table problem.

    `rsi_gene_map`: RSI slot -> expression column, overriding cohort.yaml's (see :func:`load_tables`).
    """
    root = Path(path).resolve()
    cohort, problems = load_tables(root, rsi_gene_map)
    errors = problems.errors
    if errors or cohort is None:
        shown = "; ".join(p.one_line() for p in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise InputError(f"cohort {root} has {len(errors)} problem(s) (`radiogenomics validate {root}` lists "
                         f"them all): {shown}{more}")
    return cohort
