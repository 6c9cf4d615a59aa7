"""Expression from sequencing (issue 16, point 6): layouts declared under ``expression:`` in cohort.yaml.

One ground truth (counts and gene lengths of a few hundred genes, three patients) is written in each layout:
GDC/TCGA STAR counts files (one per patient, as the GDC documents them: the gene-model line, four N_* rows,
versioned Ensembl IDs, gene_name, tpm_unstranded), genes-as-rows TPM / FPKM / counts with lengths, Ensembl IDs
with and without versions, HGNC symbols, patients as rows. TPM is recomputed here from counts and lengths,
independently of the code under test; the RSI (ranks within a sample) must equal the RSI of the log2(TPM + 1)
expression.csv, and one patient's RSI must equal a computation by hand.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from radiogenomics.cli.app import main
from radiogenomics.cohort import load_cohort, validate_cohort
from radiogenomics.cohort.expression_layouts import (
    MIN_GENES_FOR_TPM,
    platform_genes,
    shipped_gene_map,
    strip_version,
)
from radiogenomics.errors import InputError
from radiogenomics.features.uptodate import run_key

PATIENTS = ("P1", "P2", "P3")
RSI_GENES = ("AR", "JUN", "STAT1", "PRKCB", "RELA", "ABL1", "SUMO1", "CDK1", "HDAC1", "IRF1")
#: Eschrich et al. 2009 coefficients as the radiobiology brief gives them (authors' code, full precision).
COEF = {"AR": -0.00980092741843779, "JUN": 0.0128282697929755, "STAT1": 0.0254552046046931,
        "PRKCB": -0.00175888592095915, "RELA": -0.00381713588908642, "ABL1": 0.107021274358643,
        "SUMO1": -0.00025093287356907, "CDK1": -0.00924314364533049, "HDAC1": -0.020446868981449,
        "IRF1": -0.0441682719957224}
#: P1's counts of the RSI genes; every RSI gene is 1000 bp long, so their TPM has the order of these counts.
P1_RSI_COUNTS = {"PRKCB": 20, "AR": 50, "CDK1": 100, "IRF1": 150, "ABL1": 200, "STAT1": 300, "HDAC1": 450,
                 "RELA": 600, "JUN": 800, "SUMO1": 1200}
#: Their ranks within P1 (lowest = 1), written out by hand from the counts above.
P1_RSI_RANKS = {"PRKCB": 1, "AR": 2, "CDK1": 3, "IRF1": 4, "ABL1": 5, "STAT1": 6, "HDAC1": 7, "RELA": 8, "JUN": 9,
                "SUMO1": 10}
N_OTHER = 300  # genes the platform does not read


def _truth() -> pd.DataFrame:
    """gene_id (versioned), gene_name, gene_type, length, and one count column per patient."""
    rng = np.random.default_rng(16)
    gmap = shipped_gene_map()
    rows = []
    for symbol in sorted(platform_genes()):
        rows.append({"stable": gmap.ids[symbol][0], "gene_name": symbol, "length": 1000 if symbol in RSI_GENES
                     else int(rng.integers(500, 8000))})
    for i in range(N_OTHER):
        rows.append({"stable": f"ENSG99{i:09d}", "gene_name": f"OTHER{i}", "length": int(rng.integers(300, 9000))})
    table = pd.DataFrame(rows)
    table["gene_id"] = [f"{s}.{int(v)}" for s, v in zip(table["stable"], rng.integers(1, 20, len(table)), strict=True)]
    table["gene_type"] = "protein_coding"
    for pid in PATIENTS:
        table[pid] = rng.integers(0, 5000, len(table))
    # RSI genes: distinct counts per patient (no ties), P1's as written above
    for k, gene in enumerate(RSI_GENES):
        at = table.index[table["gene_name"] == gene][0]
        table.loc[at, "P1"] = P1_RSI_COUNTS[gene]
        table.loc[at, "P2"] = 100 + 97 * ((k * 7) % 10)
        table.loc[at, "P3"] = 3000 - 211 * k
    return table


def _tpm(table: pd.DataFrame) -> pd.DataFrame:
    """TPM from counts and lengths (GDC's formula), computed here independently of the code under test."""
    rpk = table[list(PATIENTS)].to_numpy(float) / table[["length"]].to_numpy(float)
    return pd.DataFrame(rpk / rpk.sum(axis=0) * 1e6, columns=list(PATIENTS), index=table.index)


def _fpkm(table: pd.DataFrame) -> pd.DataFrame:
    """FPKM as the GDC writes it: counts x 1e9 / (reads on protein-coding genes x length)."""
    counts = table[list(PATIENTS)].to_numpy(float)
    return pd.DataFrame(counts * 1e9 / (counts.sum(axis=0) * table[["length"]].to_numpy(float)),
                        columns=list(PATIENTS), index=table.index)


def _column_names(table: pd.DataFrame) -> list[str]:
    """The columns the platform gives each gene: HGNC symbol for its genes, the Ensembl ID otherwise."""
    used = platform_genes()
    return [n if n in used else s for n, s in zip(table["gene_name"], table["stable"], strict=True)]


def _patients(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"patient_id": PATIENTS, "site": "head_neck"}).to_csv(root / "patients.csv", index=False)


def _meta(root: Path, expression: dict[str, object] | None) -> None:
    meta: dict[str, object] = {"name": root.name, "format_version": 1}
    if expression is not None:
        meta["expression"] = expression
    (root / "cohort.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))


def write_gdc_star_counts(path: Path, table: pd.DataFrame, pid: str) -> None:
    """One GDC 'STAR - Counts' file (rna_seq.augmented_star_gene_counts.tsv) as the GDC documents it."""
    tpm, fpkm = _tpm(table)[pid], _fpkm(table)[pid]
    lines = ["# gene-model: GENCODE v36",
             "\t".join(("gene_id", "gene_name", "gene_type", "unstranded", "stranded_first", "stranded_second",
                        "tpm_unstranded", "fpkm_unstranded", "fpkm_uq_unstranded"))]
    for name, n in (("N_unmapped", 812026), ("N_multimapping", 440248), ("N_noFeature", 144612),
                    ("N_ambiguous", 95311)):
        lines.append(f"{name}\t\t\t{n}\t{n}\t{n}\t\t\t")
    for i in table.index:
        c = int(table.at[i, pid])
        lines.append(f"{table.at[i, 'gene_id']}\t{table.at[i, 'gene_name']}\tprotein_coding\t{c}\t{c // 2}\t"
                     f"{c - c // 2}\t{tpm[i]:.4f}\t{fpkm[i]:.4f}\t{fpkm[i] * 1.3:.4f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def cohort_gdc(root: Path, table: pd.DataFrame) -> Path:
    _patients(root)
    files = {}
    for k, pid in enumerate(PATIENTS):
        rel = f"gdc/{k:08x}-uuid.rna_seq.augmented_star_gene_counts.tsv"
        write_gdc_star_counts(root / rel, table, pid)
        files[pid] = rel
    _meta(root, {"layout": "gdc_star_counts", "files": files})
    return root


def _genes_as_rows(root: Path, table: pd.DataFrame, values: pd.DataFrame, *, ids: str, file: str,
                   extra: dict[str, object], annotation: dict[str, pd.Series] | None = None) -> Path:
    _patients(root)
    out = pd.DataFrame({"gene_id": table[ids]})
    for name, column in (annotation or {}).items():
        out[name] = column
    for pid in PATIENTS:
        out[pid] = values[pid]
    sep = "\t" if file.endswith((".tsv", ".txt", ".tsv.gz", ".txt.gz")) else ","
    out.to_csv(root / file, sep=sep, index=False, float_format="%.17g")
    _meta(root, {"orientation": "genes_as_rows", **extra, "file": file})
    return root


def cohort_tpm_ensembl_unversioned(root: Path, table: pd.DataFrame) -> Path:
    return _genes_as_rows(root, table, _tpm(table), ids="stable", file="tpm.tsv",
                          extra={"gene_ids": "ensembl", "units": "tpm"})


def cohort_fpkm_versioned(root: Path, table: pd.DataFrame) -> Path:
    return _genes_as_rows(root, table, _fpkm(table), ids="gene_id", file="fpkm.csv",
                          extra={"gene_ids": "ensembl", "units": "fpkm"},
                          annotation={"gene_name": table["gene_name"], "gene_type": table["gene_type"]})


def cohort_counts_with_lengths(root: Path, table: pd.DataFrame) -> Path:
    return _genes_as_rows(root, table, table, ids="gene_id", file="counts.txt.gz",
                          extra={"gene_ids": "ensembl", "units": "counts", "length_column": "Length"},
                          annotation={"Length": table["length"]})


def cohort_tpm_hgnc(root: Path, table: pd.DataFrame) -> Path:
    named = table.assign(symbol=_column_names(table))
    return _genes_as_rows(root, named, _tpm(table), ids="symbol", file="tpm_symbols.csv",
                          extra={"gene_ids": "hgnc", "units": "tpm"})


def cohort_patients_as_rows_ensembl(root: Path, table: pd.DataFrame) -> Path:
    _patients(root)
    tpm = _tpm(table)
    out = pd.DataFrame(tpm.T.to_numpy(), columns=list(table["gene_id"]))
    out.insert(0, "patient_id", PATIENTS)
    out.to_csv(root / "tpm_by_patient.csv", index=False, float_format="%.17g")
    _meta(root, {"orientation": "patients_as_rows", "gene_ids": "ensembl", "units": "tpm",
                 "file": "tpm_by_patient.csv"})
    return root


def cohort_log2_reference(root: Path, table: pd.DataFrame) -> Path:
    """The default layout: expression.csv of log2(TPM + 1), patients as rows, computed here."""
    _patients(root)
    log2 = np.log2(_tpm(table).T.to_numpy() + 1.0)
    out = pd.DataFrame(log2, columns=_column_names(table))
    out.insert(0, "patient_id", PATIENTS)
    out.to_csv(root / "expression.csv", index=False, float_format="%.17g")
    _meta(root, None)
    return root


LAYOUTS = {
    "gdc_star_counts": cohort_gdc,
    "tpm_ensembl_unversioned": cohort_tpm_ensembl_unversioned,
    "fpkm_ensembl_versioned": cohort_fpkm_versioned,
    "counts_with_lengths": cohort_counts_with_lengths,
    "tpm_hgnc": cohort_tpm_hgnc,
    "patients_as_rows_ensembl": cohort_patients_as_rows_ensembl,
}


@pytest.fixture(scope="module")
def truth() -> pd.DataFrame:
    return _truth()


def _rsi_by_hand() -> float:
    return math.fsum(COEF[g] * P1_RSI_RANKS[g] for g in RSI_GENES)


# --------------------------------------------------------------------------------------------- the shipped map


def test_map_covers_every_gene_the_platform_reads() -> None:
    gmap = shipped_gene_map()
    assert platform_genes() <= set(gmap.ids), sorted(platform_genes() - set(gmap.ids))
    assert {"PAK2", "CDK1", *RSI_GENES, "SLC2A1", "TNF"} <= set(gmap.ids)
    assert gmap.ids["AR"] == ("ENSG00000169083",)
    assert gmap.ids["SOD2"] == ("ENSG00000112096", "ENSG00000291237")  # GENCODE v36 / current release
    assert "GENCODE v36" in gmap.source and "cross-checked" in gmap.verification
    assert len(gmap.symbol) == sum(len(v) for v in gmap.ids.values())  # no ID names two symbols


def test_strip_version() -> None:
    assert strip_version("ENSG00000169083.17") == "ENSG00000169083"
    assert strip_version("ENSG00000169083") == "ENSG00000169083"
    assert strip_version("ENSG00000002586.20_PAR_Y") == "ENSG00000002586_PAR_Y"
    assert strip_version("AR") is None and strip_version("N_unmapped") is None


# --------------------------------------------------------------------------------------------- each layout


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_layout_loads_as_log2_tpm_plus_one(layout: str, truth: pd.DataFrame, tmp_path: Path) -> None:
    root = LAYOUTS[layout](tmp_path / layout, truth)
    report = validate_cohort(root, check_images=False)
    assert report.ok, [p.one_line() for p in report.errors]
    cohort = load_cohort(root)
    expression = cohort.expression
    assert expression is not None and list(expression.index) == list(PATIENTS)
    assert expression.index.name == "patient_id"
    assert list(expression.columns) == _column_names(truth)  # symbols for the platform's genes, IDs otherwise
    expected = np.log2(_tpm(truth).T.to_numpy() + 1.0)
    # The GDC writes TPM with 4 decimals: log2(x + 1) moves by at most 0.5e-4 / ln 2.
    atol = 1e-4 if layout == "gdc_star_counts" else 1e-9
    np.testing.assert_allclose(expression.to_numpy(), expected, rtol=0, atol=atol)
    codes = {p.code for p in report.problems}
    if layout in ("fpkm_ensembl_versioned", "counts_with_lengths"):
        assert "few_genes_for_tpm" in codes  # TPM from 332 genes: said, not refused
    else:
        assert "few_genes_for_tpm" not in codes


def test_gdc_file_reads_tpm_unstranded_and_skips_the_n_rows(truth: pd.DataFrame, tmp_path: Path) -> None:
    root = cohort_gdc(tmp_path / "gdc", truth)
    cohort = load_cohort(root)
    assert cohort.expression is not None
    assert not any(str(c).startswith("N_") for c in cohort.expression.columns)
    first = root / yaml.safe_load((root / "cohort.yaml").read_text())["expression"]["files"]["P2"]
    written = pd.read_csv(first, sep="\t", comment="#").set_index("gene_name")
    assert cohort.expression.at["P2", "ABL1"] == np.log2(written.at["ABL1", "tpm_unstranded"] + 1.0)


def test_rsi_from_star_counts_equals_rsi_from_its_log2_tpm(truth: pd.DataFrame, tmp_path: Path) -> None:
    from radiogenomics.features.genomic import rsi_features

    reference = rsi_features(load_cohort(cohort_log2_reference(tmp_path / "ref", truth)).expression)["rsi"]
    assert reference.notna().all()
    for layout, build in LAYOUTS.items():
        expression = load_cohort(build(tmp_path / layout, truth)).expression
        rsi = rsi_features(expression)["rsi"]
        np.testing.assert_allclose(rsi.to_numpy(), reference.to_numpy(), rtol=0, atol=1e-12, err_msg=layout)
    assert reference["P1"] == pytest.approx(_rsi_by_hand(), abs=1e-12)


def test_rsi_matches_a_hand_computation() -> None:
    # P1: ranks 1..10 written out from the counts; sum of coefficient x rank, no intercept (Eschrich 2009).
    by_hand = (-0.00980092741843779 * 2 + 0.0128282697929755 * 9 + 0.0254552046046931 * 6
               - 0.00175888592095915 * 1 - 0.00381713588908642 * 8 + 0.107021274358643 * 5
               - 0.00025093287356907 * 10 - 0.00924314364533049 * 3 - 0.020446868981449 * 7
               - 0.0441682719957224 * 4)
    assert _rsi_by_hand() == pytest.approx(by_hand, abs=1e-15)
    assert by_hand == pytest.approx(0.401354, abs=1e-6)  # summed on paper term by term


@pytest.mark.parametrize("layout", ["gdc_star_counts", "counts_with_lengths", "tpm_hgnc"])
def test_extract_on_a_declared_layout(layout: str, truth: pd.DataFrame, tmp_path: Path) -> None:
    root = LAYOUTS[layout](tmp_path / layout, truth)
    reference = cohort_log2_reference(tmp_path / "ref", truth)
    tables = {}
    for name, cohort in (("layout", root), ("ref", reference)):
        out = tmp_path / f"{name}.parquet"
        assert main(["extract", str(cohort), "--out", str(out), "--workers", "1", "--no-progress",
                     "--cache-dir", str(tmp_path / "cache")]) == 0
        tables[name] = pd.read_parquet(out).set_index("patient_id")
    got, ref = tables["layout"], tables["ref"]
    assert got.at["P1", "genomic.rsi"] == pytest.approx(_rsi_by_hand(), abs=1e-12)
    np.testing.assert_allclose(got["genomic.rsi"], ref["genomic.rsi"], rtol=0, atol=1e-12)
    atol = 1e-4 if layout == "gdc_star_counts" else 1e-9
    np.testing.assert_allclose(got["genomic.hypoxia_toustrup2011"], ref["genomic.hypoxia_toustrup2011"],
                               rtol=0, atol=atol)
    assert (got["available.genomic"] == 1).all()


def test_run_key_follows_the_declared_files(truth: pd.DataFrame, tmp_path: Path) -> None:
    root = cohort_gdc(tmp_path / "gdc", truth)
    before = run_key(root, {})
    path = root / yaml.safe_load((root / "cohort.yaml").read_text())["expression"]["files"]["P3"]
    path.write_text(path.read_text().replace("protein_coding", "protein_coding ", 1))
    assert before is not None and run_key(root, {}) != before


def test_a_restricted_file_is_relative_to_its_genes_and_a_full_one_is_not(truth: pd.DataFrame,
                                                                          tmp_path: Path) -> None:
    # The TPM sum runs over all rows of the file: add filler rows until the file reaches MIN_GENES_FOR_TPM.
    rng = np.random.default_rng(3)
    n = MIN_GENES_FOR_TPM - len(truth)
    filler = pd.DataFrame({"stable": [f"ENSG98{i:09d}" for i in range(n)], "gene_name": [f"F{i}" for i in range(n)],
                           "length": rng.integers(300, 9000, n), "gene_type": "lncRNA"})
    filler["gene_id"] = filler["stable"] + ".1"
    for pid in PATIENTS:
        filler[pid] = rng.integers(0, 50, n)
    full = pd.concat([truth, filler], ignore_index=True)
    root = cohort_counts_with_lengths(tmp_path / "full", full)
    report = validate_cohort(root, check_images=False)
    assert report.ok and "few_genes_for_tpm" not in {p.code for p in report.problems}
    expression = load_cohort(root).expression
    np.testing.assert_allclose(expression.to_numpy(), np.log2(_tpm(full).T.to_numpy() + 1.0), rtol=0, atol=1e-9)
    restricted = load_cohort(cohort_counts_with_lengths(tmp_path / "restricted", truth)).expression
    assert restricted.at["P1", "AR"] > expression.at["P1", "AR"]  # relative to fewer genes: larger TPM


# --------------------------------------------------------------------------------------------- errors


def _codes(root: Path) -> list[str]:
    return [p.code for p in validate_cohort(root, check_images=False).errors]


def test_problems_are_collected_with_file_gene_patient_and_fix(truth: pd.DataFrame, tmp_path: Path) -> None:
    root = cohort_tpm_ensembl_unversioned(tmp_path / "bad", truth)
    table = pd.read_csv(root / "tpm.tsv", sep="\t", dtype=str)
    gmap = shipped_gene_map()
    ar = table.index[table["gene_id"] == gmap.ids["AR"][0]][0]
    table.loc[ar, "P2"] = "-3.5"                       # negative TPM
    jun = table.index[table["gene_id"] == gmap.ids["JUN"][0]][0]
    table.loc[jun, "P3"] = "n/a"                       # not a number
    table = table[table["gene_id"] != gmap.ids["IRF1"][0]]                      # an RSI gene missing
    stat1 = table[table["gene_id"] == gmap.ids["STAT1"][0]]
    table = pd.concat([table, stat1], ignore_index=True)                         # an RSI gene twice
    table.to_csv(root / "tpm.tsv", sep="\t", index=False)
    report = validate_cohort(root, check_images=False)
    by_code = {p.code: p for p in report.errors}
    assert {"negative_expression", "non_numeric_expression", "missing_rsi_gene", "duplicate_gene"} <= set(by_code)
    negative = by_code["negative_expression"]
    assert (negative.file, negative.patient_id, negative.column) == ("tpm.tsv", "P2", "P2")
    assert negative.row == ar + 1 and gmap.ids["AR"][0] in negative.message
    assert by_code["non_numeric_expression"].patient_id == "P3" and "'n/a'" in by_code["non_numeric_expression"].message
    missing = by_code["missing_rsi_gene"]
    assert "IRF1" in missing.message and gmap.ids["IRF1"][0] in missing.message and "rsi-gene-map" in missing.fix
    assert "STAT1" in by_code["duplicate_gene"].message and by_code["duplicate_gene"].fix
    with pytest.raises(InputError, match="problem"):
        load_cohort(root)


def test_gene_name_disagreeing_with_the_map_is_an_error(truth: pd.DataFrame, tmp_path: Path) -> None:
    swapped = truth.copy()
    at = swapped.index[swapped["gene_name"] == "ABL1"][0]
    swapped.loc[at, "gene_name"] = "ABL2"
    root = cohort_gdc(tmp_path / "gdc", swapped)
    problems = [p for p in validate_cohort(root, check_images=False).errors if p.code == "gene_name_mismatch"]
    assert len(problems) == len(PATIENTS)  # one per patient's file
    assert "ABL1" in problems[0].message and "ABL2" in problems[0].message and problems[0].file.startswith("gdc/")


def test_gene_found_by_name_when_its_id_differs(truth: pd.DataFrame, tmp_path: Path) -> None:
    moved = truth.copy()
    at = moved.index[moved["gene_name"] == "SOD2"][0]
    moved.loc[at, "gene_id"] = "ENSG00000299999.1"  # another release's ID
    root = cohort_fpkm_versioned(tmp_path / "moved", moved)
    report = validate_cohort(root, check_images=False)
    assert report.ok
    assert "gene_id_not_in_map" in {p.code for p in report.warnings}
    assert "SOD2" in load_cohort(root).expression.columns


def test_gdc_declaration_and_file_problems(truth: pd.DataFrame, tmp_path: Path) -> None:
    root = cohort_gdc(tmp_path / "gdc", truth)
    meta = yaml.safe_load((root / "cohort.yaml").read_text())
    files = meta["expression"]["files"]
    (root / files["P1"]).unlink()
    broken = root / files["P2"]
    broken.write_text(broken.read_text().replace("tpm_unstranded", "tpm"))
    files["P9"] = files["P3"]
    (root / "cohort.yaml").write_text(yaml.safe_dump(meta))
    errors = validate_cohort(root, check_images=False).errors
    where = {(p.code, p.patient_id) for p in errors}
    assert {("missing_file", "P1"), ("missing_column", "P2"), ("unknown_patient_id", "P9")} <= where


@pytest.mark.parametrize(("expression", "match"), [
    ({"orientation": "genes_as_rows", "gene_ids": "ensembl", "units": "counts"}, "without gene lengths"),
    ({"units": "rpkm"}, "units is 'rpkm'"),
    ({"orientation": "sideways"}, "orientation is 'sideways'"),
    ({"gene_id": "ensembl"}, "unknown key 'gene_id'"),
    ({"layout": "gdc_star_counts"}, "needs 'files'"),
    ({"layout": "gdc_star_counts", "files": {7: "a.tsv"}}, "is not text"),
    ({"layout": "gdc_star_counts", "files": {"P1": "a.tsv"}, "units": "tpm"}, "holds STAR counts"),
    ({"files": {"P1": "a.tsv"}}, "needs 'layout: gdc_star_counts'"),
    ({"units": "tpm", "length_column": "Length"}, "length_column is only read"),
])
def test_bad_declarations(expression: dict[str, object], match: str, tmp_path: Path) -> None:
    root = tmp_path / "c"
    _patients(root)
    _meta(root, expression)
    errors = validate_cohort(root, check_images=False).errors
    assert [p.code for p in errors] == ["invalid_expression_layout"], [p.one_line() for p in errors]
    assert match in errors[0].message and errors[0].fix and errors[0].file == "cohort.yaml"


def test_unknown_patient_column_and_invalid_ids(truth: pd.DataFrame, tmp_path: Path) -> None:
    root = cohort_tpm_ensembl_unversioned(tmp_path / "c", truth)
    table = pd.read_csv(root / "tpm.tsv", sep="\t", dtype=str).rename(columns={"P3": "P33"})
    table.loc[len(table)] = ["not_an_id", "1", "2", "3"]
    table.to_csv(root / "tpm.tsv", sep="\t", index=False)
    report = validate_cohort(root, check_images=False)
    codes = {p.code: p for p in report.errors}
    assert codes["unknown_patient_id"].patient_id == "P33"
    assert "not_an_id" in codes["invalid_gene_id"].message and "gene_ids: hgnc" in codes["invalid_gene_id"].fix


def test_blank_counts_are_errors_blank_tpm_is_missing(truth: pd.DataFrame, tmp_path: Path) -> None:
    root = cohort_counts_with_lengths(tmp_path / "counts", truth)
    table = pd.read_csv(root / "counts.txt.gz", sep="\t", dtype=str, keep_default_na=False)
    table.loc[5, "P1"] = ""
    table.to_csv(root / "counts.txt.gz", sep="\t", index=False)
    assert "blank_expression" in _codes(root)
    tpm_root = cohort_tpm_hgnc(tmp_path / "tpm", truth)
    table = pd.read_csv(tpm_root / "tpm_symbols.csv", dtype=str, keep_default_na=False)
    table.loc[table["gene_id"] == "CDK1", "P2"] = ""
    table.to_csv(tpm_root / "tpm_symbols.csv", index=False)
    report = validate_cohort(tpm_root, check_images=False)
    assert report.ok and ("missing_rsi_value", "P2") in {(p.code, p.patient_id) for p in report.warnings}
