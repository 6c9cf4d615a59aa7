"""Expression layouts: RNA-seq as GDC/TCGA or GEO export it, read into the platform's expression table.

The default ``expression.csv`` (patients as rows, HGNC symbols, normalised log2) is read by
:func:`radiogenomics.cohort.tables.parse_expression`, unchanged. Other layouts are declared under ``expression:``
in cohort.yaml (contract section 1; docs/cohort-format.md, "Expression layouts")::

    expression: {orientation: genes_as_rows, gene_ids: ensembl, units: tpm, file: tpm.tsv}
    expression: {orientation: genes_as_rows, gene_ids: ensembl, units: counts, file: counts.tsv,
                 length_column: Length}
    expression: {layout: gdc_star_counts, files: {HN-001: gdc/<uuid>.rna_seq.augmented_star_gene_counts.tsv}}

Every layout gives the table the default gives: one row per patient (index ``patient_id``), one float column per
gene, and, for sequencing units, values log2(TPM + 1):

* ``tpm``: log2(x + 1).
* ``fpkm``: TPM = FPKM / sum over the sample's genes of FPKM x 1e6 (Wagner, Kin & Lynch, Theory Biosci
  2012;131:281), then log2(+1). FPKM divides by the sample's read total (GDC: the reads on protein-coding genes)
  and TPM by the sum of the length-normalised counts; both are per-sample constants, so the ratio is exact.
* ``counts``: TPM = (c_g / L_g) / sum_h (c_h / L_h) x 1e6 with each gene's length L (a ``length_column`` of the
  file, e.g. featureCounts' ``Length``); without lengths counts are refused. GDC STAR files carry TPM
  (``tpm_unstranded``: unstranded counts over exon-union lengths, computed by the GDC), which is read instead.
* ``log2``: as written.

TPM needs the sum over **all** genes of a sample, so it is computed over every gene row of the file (STAR's
``N_*`` and htseq-count's ``__*`` summary rows excepted); a file restricted to a few genes gives TPM relative to
those genes only (warning ``few_genes_for_tpm``). The RSI is rank-based within a sample, so any per-sample
monotone transform (this one included) leaves it unchanged.

Every gene of the file becomes a column: the genes the platform reads under their HGNC symbol (Ensembl IDs
through the shipped map ``data/ensembl_hgnc.yaml``, version suffix dropped, checked against a ``gene_name``
column when the file has one), every other gene under its Ensembl ID without version. So the per-sample median
of the ``sample_median`` normalisation sees the whole file, as it would in an expression.csv with every gene.
"""

from __future__ import annotations

import csv
import gzip
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from radiogenomics.cohort import schema
from radiogenomics.cohort.problems import Problem, ProblemList
from radiogenomics.cohort.tables import RSI_SLOT_SUBSTITUTES, parse_expression

YAML_KEY = "expression"
ORIENTATIONS = ("patients_as_rows", "genes_as_rows")
GENE_ID_KINDS = ("hgnc", "ensembl")
UNITS = ("log2", "counts", "tpm", "fpkm")
GDC_STAR_COUNTS = "gdc_star_counts"
LAYOUTS = (GDC_STAR_COUNTS,)
KEYS = ("orientation", "gene_ids", "units", "file", "length_column", "layout", "files")
#: The GDC STAR counts column read (TPM from unstranded counts); the file's other columns are not used.
GDC_TPM_COLUMN = "tpm_unstranded"
GDC_REQUIRED = ("gene_id", "gene_name", GDC_TPM_COLUMN)
#: Columns of a genes-as-rows table that describe genes, not patients.
ANNOTATION_COLUMNS = ("gene_name", "gene_type", "gene_biotype")
MAP_FILE = Path(__file__).resolve().parent / "data" / "ensembl_hgnc.yaml"
#: Fewer gene rows than this in a counts/FPKM file: TPM is relative to those genes only (warning).
MIN_GENES_FOR_TPM = 10_000
#: Cell-level problems listed per file and code before the rest are counted in one line.
MAX_LISTED = 50
DOCS = "docs/cohort-format.md, 'Expression layouts'"

_ENSEMBL = re.compile(r"^(ENSG\d{11})(\.\d+)?(_PAR_Y)?$")
_SUMMARY_ROW = re.compile(r"^(N_(unmapped|multimapping|noFeature|ambiguous)|__[A-Za-z_]+)$")


# --------------------------------------------------------------------------------------------- the declaration


@dataclass(frozen=True)
class ExpressionLayout:
    """How the cohort's expression is laid out (cohort.yaml ``expression:``); the default is expression.csv."""

    orientation: str = "patients_as_rows"
    gene_ids: str = "hgnc"
    units: str = "log2"
    file: str = schema.EXPRESSION_FILE
    length_column: str | None = None
    layout: str | None = None
    #: (patient_id, path relative to the cohort folder) for one-file-per-patient layouts.
    files: tuple[tuple[str, str], ...] = ()

    @property
    def is_default(self) -> bool:
        return self == ExpressionLayout()

    @property
    def label(self) -> str:
        """The file problems are reported against when no single table is read."""
        return schema.COHORT_META_FILE if self.layout else self.file

    def source(self, root: Path) -> Path | None:
        """What to read (the cohort folder for per-patient files), or None when the cohort has no expression."""
        if self.layout:
            return root
        path = _resolve(root, self.file)
        if self.is_default and not path.exists():
            return None
        return path


def layout_from_meta(meta: Mapping[str, object], problems: ProblemList) -> ExpressionLayout | None:
    """The layout cohort.yaml declares (the default without ``expression:``); None, with
    ``invalid_expression_layout`` problems added, when the declaration is wrong."""
    value = meta.get(YAML_KEY)
    if value is None:
        return ExpressionLayout()
    found = ProblemList()

    def bad(message: str, fix: str) -> None:
        found.add("invalid_expression_layout", f"expression: {message}", fix, file=schema.COHORT_META_FILE)

    if not isinstance(value, Mapping):
        bad(f"must be a mapping, got {value!r}.", f"write e.g. 'expression: {{orientation: genes_as_rows, "
            f"gene_ids: ensembl, units: tpm}}' ({DOCS}).")
        problems.extend(found)
        return None
    for key in value:
        if key not in KEYS:
            bad(f"unknown key {key!r}.", f"use {', '.join(KEYS)} ({DOCS}).")

    def choice(key: str, allowed: tuple[str, ...], default: str) -> str:
        raw = value.get(key, default)
        if str(raw).strip() not in allowed:
            bad(f"{key} is {raw!r}; allowed: {', '.join(allowed)}.", f"write {key}: one of {', '.join(allowed)}.")
            return default
        return str(raw).strip()

    if "layout" in value:
        layout = _gdc_layout(value, bad)
    else:
        if "files" in value:
            bad("'files' (one file per patient) needs 'layout: gdc_star_counts'.",
                f"add 'layout: gdc_star_counts', or name one table with 'file:' ({DOCS}).")
        orientation = choice("orientation", ORIENTATIONS, "patients_as_rows")
        gene_ids = choice("gene_ids", GENE_ID_KINDS, "hgnc")
        units = choice("units", UNITS, "log2")
        file = value.get("file", schema.EXPRESSION_FILE)
        if not isinstance(file, str) or not file.strip():
            bad(f"file is {file!r}, not a path.", "give the table's path relative to the cohort folder.")
            file = schema.EXPRESSION_FILE
        length = value.get("length_column")
        if length is not None and (not isinstance(length, str) or not length.strip()):
            bad(f"length_column is {length!r}, not a column name.", "name the column of gene lengths (bp).")
            length = None
        if length is not None and (orientation, units) != ("genes_as_rows", "counts"):
            bad("length_column is only read with 'orientation: genes_as_rows' and 'units: counts'.",
                "remove length_column.")
        if units == "counts" and length is None and not found.errors:
            bad("counts cannot be converted to TPM without gene lengths: TPM divides each gene's count by its "
                "length, then by the sum over all genes.",
                "declare the table's gene-length column (e.g. featureCounts' 'length_column: Length', in bp), give "
                "TPM instead ('units: tpm'), or, for GDC STAR files, use 'layout: gdc_star_counts' (they carry "
                f"{GDC_TPM_COLUMN}).")
        layout = ExpressionLayout(orientation=orientation, gene_ids=gene_ids, units=units, file=file.strip(),
                                  length_column=length.strip() if length else None)
    problems.extend(found)
    return None if found.errors else layout


def _gdc_layout(value: Mapping[object, object], bad: Callable[[str, str], None]) -> ExpressionLayout:
    name = str(value.get("layout")).strip()
    if name not in LAYOUTS:
        bad(f"layout is {value.get('layout')!r}; known layouts: {', '.join(LAYOUTS)}.",
            "write 'layout: gdc_star_counts', or describe a single table with orientation, gene_ids and units.")
    for key in ("orientation", "gene_ids", "file", "length_column"):
        if key in value:
            bad(f"'{key}' is fixed by layout {name} (genes as rows, Ensembl gene_id, one file per patient).",
                f"remove '{key}'.")
    if str(value.get("units", "counts")).strip() != "counts":
        bad(f"layout {name} holds STAR counts (units: counts), not {value.get('units')!r}.", "remove 'units'.")
    files = value.get("files")
    pairs: list[tuple[str, str]] = []
    if not isinstance(files, Mapping) or not files:
        bad(f"layout {name} needs 'files', a mapping patient_id -> that patient's file.",
            "write 'files: {HN-001: gdc/<file>.rna_seq.augmented_star_gene_counts.tsv, ...}' (paths relative to "
            "the cohort folder).")
        return ExpressionLayout()
    for pid, path in files.items():
        if not isinstance(pid, str) or not pid.strip():
            bad(f"patient ID {pid!r} under files is not text.",
                f"quote it ('{pid}': path): YAML reads 007 or 12 as a number.")
        elif not isinstance(path, str) or not path.strip():
            bad(f"the file of patient {pid} is {path!r}, not a path.", "give the path relative to the cohort folder.")
        else:
            pairs.append((pid.strip(), path.strip()))
    return ExpressionLayout(orientation="genes_as_rows", gene_ids="ensembl", units="counts", file="",
                            layout=name, files=tuple(pairs))


def declared_input_files(root: Path | str) -> list[Path]:
    """Files cohort.yaml's ``expression:`` names (a table or per-patient files), for content addressing.

    Never raises: an unreadable or invalid declaration gives what it can (loading reports the problems)."""
    root = Path(root)
    try:
        meta = yaml.safe_load((root / schema.COHORT_META_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    value = meta.get(YAML_KEY) if isinstance(meta, dict) else None
    if not isinstance(value, dict):
        return []
    names: list[object] = [value.get("file")]
    if isinstance(value.get("files"), dict):
        names.extend(value["files"].values())
    return sorted({_resolve(root, n.strip()) for n in names if isinstance(n, str) and n.strip()})


# --------------------------------------------------------------------------------------------- the gene map


@dataclass(frozen=True)
class GeneMap:
    """The shipped Ensembl gene ID <-> HGNC symbol map, with its source text."""

    ids: dict[str, tuple[str, ...]]
    symbol: dict[str, str]
    source: str
    verification: str


@lru_cache(maxsize=1)
def shipped_gene_map() -> GeneMap:
    """``data/ensembl_hgnc.yaml``: symbol -> Ensembl IDs (no version), and the reverse."""
    data = yaml.safe_load(MAP_FILE.read_text(encoding="utf-8"))
    ids = {str(s): tuple(str(i) for i in v) for s, v in data["genes"].items()}
    symbol: dict[str, str] = {}
    for s, values in ids.items():
        for i in values:
            if not _ENSEMBL.match(i) or "." in i or i in symbol:
                raise ValueError(f"{MAP_FILE}: bad or repeated Ensembl ID {i!r} ({s})")
            symbol[i] = s
    return GeneMap(ids=ids, symbol=symbol, source=" ".join(str(data["source"]).split()),
                   verification=" ".join(str(data["verification"]).split()))


def platform_genes() -> frozenset[str]:
    """Every HGNC symbol the platform reads: the RSI genes, their documented substitutes, the signature genes."""
    from radiogenomics.features.genomic import shipped_signatures
    from radiogenomics.radiobiology import RSI_GENES

    genes = set(RSI_GENES) | set(RSI_SLOT_SUBSTITUTES.values())
    for signature in shipped_signatures():
        genes |= set(signature.genes)
    return frozenset(genes)


def strip_version(gene_id: str) -> str | None:
    """``ENSG00000169083.17`` -> ``ENSG00000169083`` (``_PAR_Y`` kept); None if not an Ensembl gene ID."""
    text = gene_id.strip()
    if len(text) < 15 or not text.startswith("ENSG"):  # cheap test first: a GDC file has 60,000 IDs
        return None
    match = _ENSEMBL.match(text)
    return None if match is None else match.group(1) + (match.group(3) or "")


# --------------------------------------------------------------------------------------------- reading


def read_expression(source: Path, layout: ExpressionLayout, patient_ids: set[str] | None,
                    required_genes: tuple[str, ...] = ()) -> tuple[pd.DataFrame, ProblemList]:
    """The cohort's expression as a float frame indexed by patient_id (genes as columns, NaN = missing), and
    every problem found. ``source`` is :meth:`ExpressionLayout.source`. The default layout is read by
    :func:`~radiogenomics.cohort.tables.parse_expression` exactly as before."""
    if layout.is_default:
        return parse_expression(source, patient_ids, required_genes)
    problems = ProblemList()
    wanted = frozenset(platform_genes() | set(required_genes))
    if layout.layout == GDC_STAR_COUNTS:
        return _read_gdc(source, layout, patient_ids, required_genes, wanted, problems), problems
    if not source.is_file():
        problems.add("missing_file", f"expression table '{layout.file}' (cohort.yaml expression: file) does not "
                     "exist.", "fix the path (relative to the cohort folder) or add the file.", file=layout.file)
        return pd.DataFrame(), problems
    matrix = _read_matrix(source, layout, patient_ids, problems)
    if matrix is None:
        return pd.DataFrame(), problems
    frame = _to_frame(matrix, layout.units, layout.gene_ids, wanted, required_genes, problems)
    return frame[~frame.index.duplicated(keep="first")], problems


@dataclass
class _Matrix:
    """Gene x sample values of one file, with what is needed to name a cell in a problem."""

    file: str
    orientation: str
    ids: list[str]                  # gene ID or symbol as written, one per gene
    names: list[str] | None         # gene_name column, when the file has one
    samples: list[str]              # patient IDs
    values: np.ndarray              # genes x samples, NaN where blank or bad
    blank: np.ndarray               # genes x samples, True where the cell was blank
    lengths: np.ndarray | None      # gene lengths (bp) for counts

    def gene_loc(self, g: int) -> dict[str, object]:
        if self.orientation == "genes_as_rows":
            return {"file": self.file, "row": g + 1}
        return {"file": self.file, "column": self.ids[g]}

    def loc(self, g: int, s: int) -> dict[str, object]:
        pid = self.samples[s] or None
        if self.orientation == "genes_as_rows":
            return {"file": self.file, "row": g + 1, "column": self.samples[s], "patient_id": pid}
        return {"file": self.file, "row": s + 1, "column": self.ids[g], "patient_id": pid}


class _Listed:
    """Adds up to MAX_LISTED problems per code, then one line counting the rest."""

    def __init__(self, problems: ProblemList, file: str) -> None:
        self.problems, self.file = problems, file
        self.counts: dict[str, int] = defaultdict(int)
        self.fixes: dict[str, str] = {}

    def add(self, code: str, message: str, fix: str, **where: object) -> None:
        self.counts[code] += 1
        self.fixes.setdefault(code, fix)
        if self.counts[code] <= MAX_LISTED:
            self.problems.add(code, message, fix, **where)

    def close(self) -> None:
        for code, n in self.counts.items():
            if n > MAX_LISTED:
                self.problems.add(code, f"{n - MAX_LISTED} more cell(s) of {self.file} have this problem "
                                  f"({n} in all; the first {MAX_LISTED} are listed).", self.fixes[code], file=self.file)


def _resolve(root: Path, text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else root / path


def _open_text(path: Path):  # type: ignore[no-untyped-def]
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _separator(path: Path, first_line: str) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    last = suffixes[-1] if suffixes else ""
    if last in (".tsv", ".txt", ".tab"):
        return "\t"
    if last == ".csv":
        return ","
    return "\t" if "\t" in first_line and "," not in first_line else ","


def read_table(path: Path, text_columns: Callable[[list[str]], Iterable[int]],
               only: Callable[[list[str]], Iterable[int]] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """A CSV or TSV (``.tsv``/``.txt``/``.tab`` tab-separated; ``.gz`` read compressed) with columns numbered by
    position, and its header as written. Leading ``#`` lines are skipped (GDC's ``# gene-model: GENCODE v36``).
    The ``text_columns`` are text, blank = ``""``; the others are numbers where every cell is one (blank = NaN),
    else text, so a bad cell can be named. ``only``: the columns to read (every column by default)."""
    with _open_text(path) as fh:
        skip, first = 0, ""
        for line in fh:
            if line.startswith("#"):
                skip += 1
                continue
            first = line
            break
    sep = _separator(path, first)
    header = [c.strip() for c in next(csv.reader([first], delimiter=sep), [])]
    if not header:
        return pd.DataFrame(), []
    text = set(text_columns(header))
    usecols = sorted(set(only(header))) if only is not None else None
    frame = pd.read_csv(path, sep=sep, header=None, skiprows=skip + 1, names=list(range(len(header))), usecols=usecols,
                        dtype={i: str for i in text}, keep_default_na=False,
                        na_values={i: [""] for i in range(len(header)) if i not in text},
                        skipinitialspace=True, encoding="utf-8-sig", compression="infer", low_memory=False)
    for i in text & set(frame.columns):
        frame[i] = frame[i].fillna("").astype(str).str.strip()
    return frame, header


def _parse_cells(column: pd.Series, on_bad: Callable[[int, str, bool], None]) -> tuple[np.ndarray, np.ndarray]:
    """(values, blank) of one column; ``on_bad(row, text, numeric)`` for each non-numeric or non-finite cell."""
    if pd.api.types.is_numeric_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        blank = np.isnan(values)
        for k in np.flatnonzero(np.isinf(values)):
            on_bad(int(k), "inf" if values[k] > 0 else "-inf", True)
        values = np.where(np.isfinite(values), values, np.nan)
        return values, blank
    cells = column.to_numpy(dtype=object)
    values = np.full(len(cells), np.nan)
    blank = np.zeros(len(cells), dtype=bool)
    for i, cell in enumerate(cells):
        text = "" if cell is None or (isinstance(cell, float) and math.isnan(cell)) else str(cell).strip()
        if text == "":
            blank[i] = True
            continue
        try:
            number = float(text)
        except ValueError:
            on_bad(i, text, False)
            continue
        if math.isfinite(number):
            values[i] = number
        else:
            on_bad(i, text, True)
    return values, blank


def _bad_cell(listed: _Listed, units: str, where: dict[str, object], text: str, numeric: bool) -> None:
    if numeric:
        listed.add("non_finite_expression", f"value is '{text}'.", "give a finite value or leave the cell blank.",
                   **where)
    else:
        listed.add("non_numeric_expression", f"value '{text}' is not a number.",
                   f"write {units} expression as a number (blank = missing).", **where)


def _read_matrix(path: Path, layout: ExpressionLayout, patient_ids: set[str] | None,
                 problems: ProblemList) -> _Matrix | None:
    """One table (either orientation) as a gene x sample matrix; None when its structure is unusable."""
    file = layout.file
    genes_as_rows = layout.orientation == "genes_as_rows"

    def text_columns(header: list[str]) -> list[int]:
        if genes_as_rows:
            return [0, *(i for i, c in enumerate(header) if i and c in ANNOTATION_COLUMNS)]
        return [0]

    frame, header = read_table(path, text_columns)
    if not header:
        problems.add("unreadable_table", f"{file} is empty.", "save the table with a header row.", file=file)
        return None
    listed = _Listed(problems, file)
    if genes_as_rows:
        matrix = _genes_as_rows(frame, header, layout, patient_ids, listed, problems)
    else:
        matrix = _patients_as_rows(frame, header, layout, patient_ids, listed, problems)
    listed.close()
    return matrix


def _check_patient(pid: str, seen: dict[str, int], patient_ids: set[str] | None, problems: ProblemList,
                   where: dict[str, object], what: str) -> None:
    if pid == "":
        problems.add("blank_patient_id", f"a {what} has no patient_id.", f"give every {what} its patient's ID.",
                     **where)
    elif pid in seen:
        problems.add("duplicate_patient_id", f"patient '{pid}' has more than one {what}.",
                     f"keep one {what} per patient.", **where)
    elif patient_ids is not None and pid not in patient_ids:
        problems.add("unknown_patient_id", f"patient '{pid}' is not in patients.csv.",
                     f"add the patient to patients.csv or remove the {what}.", **where)
    seen.setdefault(pid, len(seen))


def _genes_as_rows(frame: pd.DataFrame, header: list[str], layout: ExpressionLayout,
                   patient_ids: set[str] | None, listed: _Listed, problems: ProblemList) -> _Matrix | None:
    file = layout.file
    names_at = next((i for i, c in enumerate(header) if i and c == "gene_name"), None)
    length_at = None
    if layout.length_column is not None:
        length_at = next((i for i, c in enumerate(header) if i and c == layout.length_column), None)
        if length_at is None:
            problems.add("missing_column", f"the gene-length column '{layout.length_column}' (length_column) is "
                         f"not in {file}.", "name the column that holds each gene's length in bp.", file=file,
                         column=layout.length_column)
            return None
    skip = {0, length_at, *(i for i, c in enumerate(header) if i and c in ANNOTATION_COLUMNS)}
    sample_at = [i for i in range(len(header)) if i not in skip]
    if not sample_at:
        problems.add("missing_column", f"{file} has no patient columns (genes as rows: first column the gene ID, "
                     "then one column per patient_id).", "add one column per patient, headed by its patient_id.",
                     file=file)
        return None
    seen: dict[str, int] = {}
    for i in sample_at:
        _check_patient(header[i], seen, patient_ids, problems, {"file": file, "column": header[i] or None,
                                                                 "patient_id": header[i] or None}, "column")
    ids = frame[0].tolist()
    values = np.full((len(frame), len(sample_at)), np.nan)
    blank = np.zeros(values.shape, dtype=bool)
    for j, i in enumerate(sample_at):
        pid = header[i]

        def on_bad(g: int, text: str, numeric: bool, pid: str = pid) -> None:
            _bad_cell(listed, layout.units, {"file": file, "row": g + 1, "column": pid, "patient_id": pid or None},
                      text, numeric)

        values[:, j], blank[:, j] = _parse_cells(frame[i], on_bad)
    lengths = None
    if length_at is not None:
        lengths, missing = _parse_cells(frame[length_at], lambda g, text, numeric: None)
        for g in np.flatnonzero(~(lengths > 0)):
            if _SUMMARY_ROW.match(str(ids[g]).strip()):
                continue
            shown = "blank" if missing[g] else f"'{frame[length_at].iat[g]}'"
            listed.add("invalid_gene_length", f"the length of gene {ids[g]} is {shown}, not a positive number.",
                       "give every gene's length in bp (the exon-union or effective length the counts were made "
                       "with).", file=file, row=int(g) + 1, column=layout.length_column)
    return _Matrix(file=file, orientation="genes_as_rows", ids=[str(i) for i in ids],
                   names=frame[names_at].tolist() if names_at is not None else None,
                   samples=[header[i] for i in sample_at], values=values, blank=blank, lengths=lengths)


def _patients_as_rows(frame: pd.DataFrame, header: list[str], layout: ExpressionLayout,
                      patient_ids: set[str] | None, listed: _Listed, problems: ProblemList) -> _Matrix | None:
    file = layout.file
    if header[0] != "patient_id":
        problems.add("missing_column", f"the first column of {file} must be 'patient_id'.",
                     "put patient_id first, then one column per gene.", file=file, column="patient_id")
        return None
    genes = header[1:]
    pids = frame[0].tolist()
    seen: dict[str, int] = {}
    for row, pid in enumerate(pids, start=1):
        _check_patient(pid, seen, patient_ids, problems, {"file": file, "row": row, "patient_id": pid or None},
                       "row")
    values = np.full((len(genes), len(pids)), np.nan)
    blank = np.zeros(values.shape, dtype=bool)
    for g, gene in enumerate(genes):

        def on_bad(s: int, text: str, numeric: bool, gene: str = gene) -> None:
            _bad_cell(listed, layout.units, {"file": file, "row": s + 1, "column": gene,
                                             "patient_id": pids[s] or None}, text, numeric)

        values[g], blank[g] = _parse_cells(frame[g + 1], on_bad)
    return _Matrix(file=file, orientation="patients_as_rows", ids=genes, names=None, samples=pids, values=values,
                   blank=blank, lengths=None)


def _read_gdc(root: Path, layout: ExpressionLayout, patient_ids: set[str] | None, required: tuple[str, ...],
              wanted: frozenset[str], problems: ProblemList) -> pd.DataFrame:
    """One GDC STAR counts file per patient; each patient's TPM column, converted to log2(TPM + 1)."""
    rows: dict[str, pd.Series] = {}
    used: dict[Path, str] = {}
    memo: list[_Resolved] = []  # the files of one GDC release list the same genes: resolve them once
    for pid, rel in layout.files:
        if patient_ids is not None and pid not in patient_ids:
            problems.add("unknown_patient_id", f"patient '{pid}' (expression: files) is not in patients.csv.",
                         "add the patient to patients.csv or remove its entry under files.",
                         file=schema.COHORT_META_FILE, patient_id=pid)
        path = _resolve(root, rel)
        if path in used:
            problems.add("shared_expression_file", f"patients {used[path]} and {pid} name the same file '{rel}'.",
                         "give each patient its own sample's file.", file=rel, patient_id=pid, severity="warning")
        used.setdefault(path, pid)
        if not path.is_file():
            problems.add("missing_file", f"expression file '{rel}' of patient {pid} does not exist.",
                         "fix the path under 'expression: files:' in cohort.yaml (relative to the cohort folder) or "
                         "add the file.", file=rel, patient_id=pid)
            continue
        try:
            frame, header = read_table(path, lambda h: [i for i, c in enumerate(h) if c in GDC_REQUIRED[:2]],
                                       only=lambda h: [i for i, c in enumerate(h) if c in GDC_REQUIRED])
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as exc:
            problems.add("unreadable_table", f"cannot read {rel}: {exc}".replace("\n", " "),
                         "give the GDC file as downloaded (tab-separated, optionally gzipped).", file=rel,
                         patient_id=pid)
            continue
        absent = [c for c in GDC_REQUIRED if c not in header]
        for column in absent:
            problems.add("missing_column", f"column '{column}' is missing: not a GDC 'STAR - Counts' file "
                         "(*.rna_seq.augmented_star_gene_counts.tsv).",
                         "download the 'STAR - Counts' file of the sample, or declare its layout "
                         f"(orientation, gene_ids, units; {DOCS}).", file=rel, column=column, patient_id=pid)
        if absent:
            continue
        listed = _Listed(problems, rel)
        at = header.index(GDC_TPM_COLUMN)

        def on_bad(g: int, text: str, numeric: bool, rel: str = rel, pid: str = pid, listed: _Listed = listed) -> None:
            _bad_cell(listed, "TPM", {"file": rel, "row": g + 1, "column": GDC_TPM_COLUMN, "patient_id": pid},
                      text, numeric)

        values, blank = _parse_cells(frame[at], on_bad)
        ids = frame[header.index("gene_id")].tolist()
        summary = np.array([i.startswith("N_") and bool(_SUMMARY_ROW.match(i)) for i in ids], dtype=bool)
        blank_genes = np.flatnonzero(blank & ~summary)
        for g in blank_genes:  # GDC leaves TPM blank only on the N_* rows
            listed.add("blank_expression", f"{GDC_TPM_COLUMN} of gene {ids[g]} is blank.",
                       "give the file as the GDC wrote it (every gene has a TPM).", file=rel, row=int(g) + 1,
                       column=GDC_TPM_COLUMN, patient_id=pid)
        listed.close()
        names = frame[header.index("gene_name")].tolist()
        matrix = _Matrix(file=rel, orientation="genes_as_rows", ids=ids, names=names, samples=[pid],
                         values=values[:, None], blank=blank[:, None], lengths=None)
        one = _to_frame(matrix, "tpm", "ensembl", wanted, required, problems, column=GDC_TPM_COLUMN, patient=pid,
                        memo=memo)
        if len(one):
            rows.setdefault(pid, one.iloc[0])
    return _stack(rows)


def _stack(rows: Mapping[str, pd.Series]) -> pd.DataFrame:
    """Patients' rows into one frame; columns in order of first appearance (identical files stack directly)."""
    index = pd.Index(list(rows), name="patient_id")
    if not rows:
        return pd.DataFrame(index=index, dtype=np.float64)
    series = list(rows.values())
    first = series[0].index
    if all(s.index.equals(first) for s in series):
        return pd.DataFrame(np.vstack([s.to_numpy() for s in series]), index=index, columns=list(first))
    columns = list(dict.fromkeys(c for s in series for c in s.index))
    return pd.DataFrame(np.vstack([s.reindex(columns).to_numpy() for s in series]), index=index, columns=columns)


# --------------------------------------------------------------------------------------------- genes and units


def _to_frame(matrix: _Matrix, units: str, gene_ids: str, wanted: frozenset[str], required: tuple[str, ...],
              problems: ProblemList, column: str | None = None, patient: str | None = None,
              memo: list[_Resolved] | None = None) -> pd.DataFrame:
    """The matrix as patients x genes of log2(TPM + 1) (``log2``: as written), with the gene, value and required-gene
    problems of its file."""
    names = _resolve_genes_once(matrix, gene_ids, wanted, problems, memo)
    keep = np.array([n is not None for n in names], dtype=bool)
    listed = _Listed(problems, matrix.file)
    log2 = _log2_tpm(matrix, keep, units, listed, column)
    listed.close()
    first: dict[str, int] = {}
    for g, name in enumerate(names):
        if name is not None:
            first.setdefault(name, g)
    frame = pd.DataFrame(log2[list(first.values())].T, columns=list(first),
                         index=pd.Index(matrix.samples, name="patient_id"))
    _check_required(matrix, first, required, gene_ids, units, problems, patient)
    return frame


@dataclass(frozen=True)
class _Resolved:
    ids: list[str]
    names: list[str] | None
    out: list[str | None]
    problems: list[Problem]


def _resolve_genes_once(matrix: _Matrix, gene_ids: str, wanted: frozenset[str], problems: ProblemList,
                        memo: list[_Resolved] | None) -> list[str | None]:
    """:func:`_resolve_genes`, reusing the previous file's answer (its problems re-addressed to this file) when
    this file lists the same gene IDs and names."""
    if memo and memo[-1].ids == matrix.ids and memo[-1].names == matrix.names:
        problems.extend([replace(p, file=matrix.file) for p in memo[-1].problems])
        return list(memo[-1].out)
    found = ProblemList()
    out = _resolve_genes(matrix, gene_ids, wanted, found)
    problems.extend(found)
    if memo is not None:
        memo[:] = [_Resolved(ids=matrix.ids, names=matrix.names, out=list(out), problems=list(found))]
    return out


def _resolve_genes(matrix: _Matrix, gene_ids: str, wanted: frozenset[str], problems: ProblemList) -> list[str | None]:
    """The column name of each gene row: its HGNC symbol where known, else its Ensembl ID without version; None
    for summary rows and unusable IDs. Vectorised: a GDC file has some 60,000 rows."""
    gmap = shipped_gene_map()
    ids = [str(i).strip() for i in matrix.ids]
    usable = np.array([not (i.startswith(("N_", "__")) and _SUMMARY_ROW.match(i)) for i in ids], dtype=bool)
    for b in np.flatnonzero(usable & np.array([i == "" for i in ids], dtype=bool)):
        problems.add("blank_gene_name", "a gene has no ID.", "name every gene (HGNC symbol or Ensembl gene ID).",
                     **matrix.gene_loc(int(b)))  # type: ignore[arg-type]
        usable[b] = False
    if gene_ids == "hgnc":
        out: list[str | None] = [gid if ok else None for gid, ok in zip(ids, usable, strict=True)]
    else:
        out = [strip_version(gid) if ok else None for gid, ok in zip(ids, usable, strict=True)]
        invalid = [g for g, (sid, ok) in enumerate(zip(out, usable, strict=True)) if ok and sid is None]
        if invalid:
            shown = ", ".join(f"'{matrix.ids[g]}'" for g in invalid[:5])
            problems.add("invalid_gene_id", f"{len(invalid)} gene ID(s) are not Ensembl gene IDs (ENSG, 11 digits, "
                         f"optional .version), e.g. {shown}.",
                         "declare 'gene_ids: hgnc' if the IDs are HGNC symbols, or remove those rows (STAR's N_* and "
                         "htseq-count's __* summary rows are skipped by themselves).",
                         **matrix.gene_loc(invalid[0]))  # type: ignore[arg-type]
        for g, sid in enumerate(out):
            symbol = gmap.symbol.get(sid) if sid is not None else None
            if symbol is None:
                continue
            named = str(matrix.names[g]).strip() if matrix.names is not None else ""
            if named and named != symbol:
                problems.add("gene_name_mismatch", f"gene {matrix.ids[g]} is {symbol} in the shipped Ensembl->HGNC "
                             f"map, but the file's gene_name says '{named}'.",
                             "check which annotation the file was made with; if the file is right, the shipped map "
                             "(radiogenomics/cohort/data/ensembl_hgnc.yaml) is wrong: report it. The gene is not read "
                             "as either symbol until they agree.", **matrix.gene_loc(g))  # type: ignore[arg-type]
            else:
                out[g] = symbol
        if matrix.names is not None:
            _find_by_name(matrix, out, wanted, gmap, problems)
    names = pd.Series(out, dtype=object)
    repeated = names[names.notna() & names.duplicated(keep=False)]
    others: list[str] = []
    for name, rows in repeated.groupby(repeated, sort=False).groups.items():
        if name in wanted or name in gmap.ids:
            problems.add("duplicate_gene", f"gene {name} is in {len(rows)} rows "
                         f"({', '.join(str(matrix.ids[g]) for g in rows)}); the platform reads it and cannot tell "
                         "which.", "keep one row per gene (merge or remove the others).",
                         **matrix.gene_loc(int(rows[1])))  # type: ignore[arg-type]
        else:
            others.append(str(name))
    if others:
        problems.add("duplicate_gene", f"{len(others)} gene(s) the platform does not read are in more than one row "
                     f"(e.g. {', '.join(others[:5])}); the first row of each becomes the gene's column, every row "
                     "counts in the TPM sum.", "nothing to do unless the file was concatenated by mistake.",
                     file=matrix.file, severity="warning")
    return out


def _find_by_name(matrix: _Matrix, out: list[str | None], wanted: frozenset[str], gmap: GeneMap,
                  problems: ProblemList) -> None:
    """Genes the platform reads whose Ensembl ID is not the shipped one, found by the file's gene_name."""
    assert matrix.names is not None
    missing = sorted(wanted - set(out))
    if not missing:
        return
    names = pd.Series(matrix.names, dtype=object).astype(str).str.strip()
    for symbol in missing:
        hits = [int(g) for g in np.flatnonzero((names == symbol).to_numpy())
                if out[g] is not None and str(out[g]).startswith("ENSG")]
        if len(hits) == 1:
            g = hits[0]
            if symbol in gmap.ids:
                problems.add("gene_id_not_in_map", f"{symbol} is read from {matrix.ids[g]} by its gene_name: the "
                             f"shipped map's ID ({', '.join(gmap.ids[symbol])}) is not in the file.",
                             "nothing to do if the file's annotation is right (another Ensembl release); report the "
                             "ID so that the shipped map lists it.", severity="warning",
                             **matrix.gene_loc(g))  # type: ignore[arg-type]
            out[g] = symbol
        elif len(hits) > 1:
            problems.add("duplicate_gene", f"gene_name {symbol} names {len(hits)} rows "
                         f"({', '.join(str(matrix.ids[g]) for g in hits)}) and none has the shipped map's ID.",
                         "keep one row for the gene.", **matrix.gene_loc(hits[1]))  # type: ignore[arg-type]


def _log2_tpm(matrix: _Matrix, keep: np.ndarray, units: str, listed: _Listed, column: str | None) -> np.ndarray:
    """log2(TPM + 1) of the kept gene rows, per sample over all of them (NaN elsewhere); ``log2`` as written."""
    values = matrix.values.copy()
    out = np.full(values.shape, np.nan)
    if units == "log2":
        out[keep] = values[keep]
        return out
    name = column or units
    for g, s in np.argwhere(keep[:, None] & (values < 0)):
        listed.add("negative_expression", f"{name} value {values[g, s]:g} of gene {matrix.ids[g]} is negative.",
                   f"give {units} as the quantifier wrote them (>= 0), or declare 'units: log2' if the values are "
                   "log-scale.", **matrix.loc(int(g), int(s)))
        values[g, s] = np.nan
    if units == "tpm":
        out[keep] = np.log2(values[keep] + 1.0)
        return out
    for g, s in np.argwhere(keep[:, None] & matrix.blank):
        listed.add("blank_expression", f"{name} of gene {matrix.ids[g]} is blank: TPM divides by the sum over every "
                   "gene of the sample, so every gene needs a value.",
                   "write 0 for a gene without reads, or remove the gene from the file.", **matrix.loc(int(g), int(s)))
    n_genes = int(keep.sum())
    if n_genes < MIN_GENES_FOR_TPM:
        listed.problems.add("few_genes_for_tpm", f"{matrix.file} has {n_genes} gene(s): TPM is normalised by the sum "
                            "over the file's genes, so it is relative to these genes, not to the transcriptome. The "
                            "RSI (ranks within a sample) is unaffected; gene-signature scores are not comparable with "
                            "whole-transcriptome TPM.", "give the whole quantification table (every gene), or TPM "
                            "computed by the quantifier ('units: tpm').", file=matrix.file, severity="warning")
    if units == "counts":
        lengths = matrix.lengths
        if lengths is None or not (lengths[keep] > 0).all():
            return out  # refused by the declaration / each bad length already reported
        values = values / lengths[:, None]
    for s in range(values.shape[1]):
        sample = values[keep, s]
        if np.isnan(sample).any():
            continue  # a blank or bad cell: reported above
        total = math.fsum(sample.tolist())
        if not total > 0:
            listed.add("no_expression", f"every {name} value of the sample is 0: TPM is undefined.",
                       "give the sample's real quantification.", file=matrix.file, patient_id=matrix.samples[s] or None)
            continue
        out[keep, s] = np.log2(sample / total * 1e6 + 1.0)
    return out


def _check_required(matrix: _Matrix, first: Mapping[str, int], required: tuple[str, ...], gene_ids: str, units: str,
                    problems: ProblemList, patient: str | None = None) -> None:
    """Each RSI slot column must be a gene of the file (an error naming it, or the CDK1 -> PAK2 warning); a blank
    value of one is a warning (explicit imputation policy, flagged). ``patient``: the patient of a per-patient file."""
    gmap = shipped_gene_map()
    for gene in required:
        if gene in first:
            if units in ("log2", "tpm"):
                g = first[gene]
                for s in np.flatnonzero(matrix.blank[g]):
                    problems.add("missing_rsi_value", f"RSI gene {gene} is blank for this patient.",
                                 "measure the gene, or choose an explicit imputation policy for the RSI (the patient "
                                 "is then flagged).", severity="warning", **matrix.loc(g, int(s)))
            continue
        substitute = RSI_SLOT_SUBSTITUTES.get(gene)
        where = {"file": matrix.file, "column": gene, "patient_id": patient}
        if substitute in first:
            problems.add("rsi_slot_substitute", f"RSI gene '{gene}' is absent but '{substitute}' is present.",
                         f"map the slot: `radiogenomics extract --rsi-gene-map {gene}={substitute}`, or "
                         f"`rsi_gene_map: {{{gene}: {substitute}}}` in cohort.yaml (see docs/cohort-format.md).",
                         severity="warning", **where)  # type: ignore[arg-type]
            continue
        ids = gmap.ids.get(gene)
        looked = f" (Ensembl {' or '.join(ids)})" if gene_ids == "ensembl" and ids else ""
        detail, by_name = "", ""
        if gene_ids == "ensembl" and matrix.names is not None:
            detail = f" (no row has that ID or the gene_name {gene})"
        elif gene_ids == "ensembl":
            by_name = (", or, if the file names the gene by another Ensembl ID, add a gene_name column so that it is "
                       "found by symbol")
        problems.add("missing_rsi_gene", f"RSI gene '{gene}'{looked} is not a gene of {matrix.file}{detail}.",
                     f"add the gene's row, or map its RSI slot to a gene the file has (`extract --rsi-gene-map "
                     f"SLOT=GENE` or `rsi_gene_map: {{SLOT: GENE}}` in cohort.yaml, e.g. CDK1=PAK2){by_name}.",
                     **where)  # type: ignore[arg-type]
