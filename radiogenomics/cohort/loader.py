"""Load a cohort folder (format v1) into typed tables.

`load_cohort` checks the tables (not the image contents; that is `validate_cohort`'s job) and raises
`InputError` listing every table problem. Images are read lazily through `Cohort.read_image` /
`Cohort.read_mask`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import SimpleITK as sitk
import yaml

from radiogenomics.cohort import schema
from radiogenomics.cohort.imageio import read_image, read_mask
from radiogenomics.cohort.problems import ProblemList
from radiogenomics.cohort.tables import parse_dvh, parse_expression, parse_images, parse_patients
from radiogenomics.errors import InputError


@dataclass
class Cohort:
    """A loaded cohort. `images` has absolute paths; `expression` is indexed by patient_id."""

    root: Path
    patients: pd.DataFrame
    images: pd.DataFrame
    expression: pd.DataFrame | None = None
    dvh: pd.DataFrame | None = None
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def patient_ids(self) -> list[str]:
        return [str(p) for p in self.patients["patient_id"]]

    @property
    def clinical_columns(self) -> list[str]:
        """Columns of patients.csv other than the ID: the clinical covariates and outcomes."""
        return [c for c in self.patients.columns if c != "patient_id"]

    def image_rows(self, patient_id: str | None = None, modality: str | None = None) -> pd.DataFrame:
        rows = self.images
        if patient_id is not None:
            rows = rows[rows["patient_id"] == patient_id]
        if modality is not None:
            rows = rows[rows["modality"] == modality]
        return rows

    def read_image(self, row: pd.Series) -> sitk.Image:
        return read_image(row["image"])

    def read_mask(self, row: pd.Series, reference: sitk.Image | None = None) -> sitk.Image:
        reference = reference if reference is not None else read_image(row["image"])
        return read_mask(row["mask"], reference, str(row["roi"]), int(row["label"]),
                         reference_path=row["image"], patient_id=str(row["patient_id"]))


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
    version = meta.get("format_version", schema.FORMAT_VERSION)
    if str(version).strip() != str(schema.FORMAT_VERSION):
        problems.add("unsupported_format_version", f"format_version {version!r} is not supported.",
                     f"this release reads format_version {schema.FORMAT_VERSION}.", file=schema.COHORT_META_FILE)
    return meta


def rsi_genes() -> tuple[str, ...]:
    """The 10 RSI genes (Eschrich 2009), from the radiobiology package."""
    from radiogenomics.radiobiology import RSI_GENES

    return tuple(RSI_GENES)


def load_tables(root: Path) -> tuple[Cohort | None, ProblemList]:
    """Parse every table of the cohort at `root`, collecting all problems (never raises for bad content)."""
    problems = ProblemList()
    if not root.is_dir():
        problems.add("not_a_folder", f"cohort folder {root} does not exist.", "give the path of a cohort folder.")
        return None, problems
    meta = read_cohort_meta(root, problems)
    patients_path = root / schema.PATIENTS_FILE
    if not patients_path.exists():
        problems.add("missing_file", "patients.csv is missing.", "add patients.csv (one row per patient).",
                     file=schema.PATIENTS_FILE)
        return None, problems
    patients, found = _parse(parse_patients, patients_path, schema.PATIENTS_FILE, problems)
    ids = {str(p) for p in patients.get("patient_id", pd.Series(dtype=object)).dropna()}
    images = pd.DataFrame(columns=list(schema.IMAGES_COLUMNS))
    if (root / schema.IMAGES_FILE).exists():
        images, found = _parse(lambda p: parse_images(p, root, ids), root / schema.IMAGES_FILE,
                               schema.IMAGES_FILE, problems)
    expression = None
    if (root / schema.EXPRESSION_FILE).exists():
        expression, found = _parse(lambda p: parse_expression(p, ids, rsi_genes()), root / schema.EXPRESSION_FILE,
                                   schema.EXPRESSION_FILE, problems)
    dvh = None
    if (root / schema.DVH_FILE).exists():
        dvh, found = _parse(lambda p: parse_dvh(p, ids), root / schema.DVH_FILE, schema.DVH_FILE, problems)
    return Cohort(root=root, patients=patients, images=images, expression=expression, dvh=dvh, meta=meta), problems


def _parse(parser, path: Path, file: str, problems: ProblemList):  # type: ignore[no-untyped-def]
    try:
        frame, found = parser(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        problems.add("unreadable_table", f"cannot parse {file}: {exc}".replace("\n", " "),
                     "save the table as UTF-8 CSV with a header row.", file=file)
        return pd.DataFrame(), ProblemList()
    problems.extend(found)
    return frame, found


def load_cohort(path: str | Path) -> Cohort:
    """Load and type-check the tables of a cohort folder; raise `InputError` listing every table problem."""
    root = Path(path).resolve()
    cohort, problems = load_tables(root)
    errors = problems.errors
    if errors or cohort is None:
        shown = "; ".join(p.one_line() for p in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise InputError(f"cohort {root} has {len(errors)} problem(s): {shown}{more}",
                         fix="run `radiogenomics validate` for the full list.")
    return cohort
