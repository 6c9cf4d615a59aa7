"""End-to-end extraction: fused table, dictionary, cache re-runs and failure isolation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from records_compare import ABS, REL
from test_features_helpers import subset_cohort, write_fast_params

from radiogenomics.features import naming
from radiogenomics.features.pipeline import ExtractOptions, ExtractSummary, extract, output_paths
from radiogenomics.features.radiomics_extraction import extract_radiomics, params_for_modality
from radiogenomics.features.schema import column_group, read_feature_schema, read_feature_table


@pytest.fixture(scope="module")
def full_run(synth_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ExtractSummary, Path, Path]:
    root = tmp_path_factory.mktemp("full")
    out = root / "features.parquet"
    summary = extract(synth_cohort, out, ExtractOptions(workers=2, cache_dir=root / "cache"))
    return summary, out, root / "cache"


def test_fused_table_layout(full_run: tuple[ExtractSummary, Path, Path], synth_cohort: Path) -> None:
    summary, out, _ = full_run
    table = pd.read_parquet(out)
    patients = pd.read_csv(synth_cohort / "patients.csv", dtype=str)
    assert table["patient_id"].tolist() == patients["patient_id"].tolist()
    assert summary.failed == 0 and summary.computed == summary.n_items > 0
    for column in ("ct.gtv.original_firstorder_Mean", "pet_fdg.gtv.original_glcm_Contrast",
                   "pet_fmiso.gtv.original_firstorder_Maximum", "ct.parotid_l.original_shape_VoxelVolume",
                   "dose.parotid_l.mean_gy", "dose.spinal_cord.max_gy", "dose.gtv.geud_gy",
                   "genomic.rsi", "genomic.hypoxia_toustrup2011", "clinical.age_years", "clinical.center",
                   "available.ct", "available.pet_fdg", "available.pet_fmiso", "available.dose",
                   "available.genomic"):
        assert column in table.columns, column
    namespaces = {naming.namespace(c) for c in table.columns if c != "patient_id"}
    assert namespaces == {"ct", "pet_fdg", "pet_fmiso", "dose", "genomic", "clinical", "outcome", "available"}
    # outcome-like patients.csv columns are kept under outcome.* (group outcome, never a default feature)
    assert not [c for c in table.columns if c.startswith(("clinical.lc_", "clinical.tox_"))]
    outcomes = [c for c in table.columns if column_group(c) == "outcome"]
    assert outcomes == ["outcome.lc_event", "outcome.lc_months", "outcome.tox_dysphagia", "outcome.tox_xerostomia"]
    assert column_group("clinical.total_dose_gy") == "treatment" and "clinical.total_dose_gy" in table.columns
    avail = table.filter(like="available.")
    assert set(avail.dtypes.astype(str)) == {"int8"} and (avail == 1).all().all()
    radiomics = table[[c for c in table.columns if c.startswith(("ct.", "pet_"))]]
    assert all(str(t) == "float64" for t in radiomics.dtypes)
    assert np.isfinite(radiomics.to_numpy()).mean() > 0.99
    # gtv dose close to prescription, parotid below it
    assert (table["dose.gtv.mean_gy"] > table["dose.parotid_l.mean_gy"]).all()


def test_dvh_csv_structures_without_masks_get_dose_features(full_run: tuple[ExtractSummary, Path, Path],
                                                            synth_cohort: Path) -> None:
    """The constrictors have rows in dvh.csv but no mask: their features come from dvh.csv; a structure the
    DOSE grid covers keeps the grid's exact values (its max is a voxel value, not a bin centre)."""
    from radiogenomics.features.dosimetric import dvh_table_features

    _, out, _ = full_run
    table = pd.read_parquet(out).set_index("patient_id")
    dvh = pd.read_csv(synth_cohort / "dvh.csv", dtype={"patient_id": str})
    from_csv = dvh_table_features(dvh)
    column = "dose.pharyngeal_constrictors.mean_gy"
    assert table[column].notna().all()
    np.testing.assert_allclose(table[column], from_csv.loc[table.index, column], rtol=1e-12)
    grid_max, csv_max = table["dose.parotid_l.max_gy"], from_csv.loc[table.index, "dose.parotid_l.max_gy"]
    assert not np.allclose(grid_max, csv_max, rtol=0, atol=1e-9)  # the grid's values, not the table's bins


def test_values_equal_direct_pyradiomics(full_run: tuple[ExtractSummary, Path, Path], synth_cohort: Path) -> None:
    from radiogenomics.cohort import load_cohort

    _, out, _ = full_run
    table = pd.read_parquet(out).set_index("patient_id")
    cohort = load_cohort(synth_cohort)
    row = cohort.images[(cohort.images["modality"] == "PET_FMISO") & (cohort.images["roi"] == "parotid_r")].iloc[2]
    image = cohort.read_image(row)
    direct = extract_radiomics(image, cohort.read_mask(row, image), params_for_modality("PET_FMISO") or {})
    for key in ("original_firstorder_Mean", "original_glszm_ZoneEntropy", "original_shape_MeshVolume"):
        assert table.at[row["patient_id"], f"pet_fmiso.parotid_r.{key}"] == pytest.approx(direct[key])


def test_data_dictionary_describes_every_column(full_run: tuple[ExtractSummary, Path, Path]) -> None:
    _, out, _ = full_run
    table = pd.read_parquet(out)
    dictionary = pd.read_csv(output_paths(out)[0], keep_default_na=False)
    assert dictionary["column"].tolist() == table.columns.tolist()
    entries = dictionary.set_index("column")
    assert entries.at["dose.parotid_l.mean_gy", "unit"] == "Gy"
    assert entries.at["dose.parotid_l.v30gy_pct", "unit"] == "%"
    assert entries.at["ct.gtv.original_firstorder_Mean", "unit"] == "HU"
    assert entries.at["pet_fdg.gtv.original_firstorder_Mean", "unit"] == "SUV"
    assert entries.at["ct.gtv.original_shape_MeshVolume", "unit"] == "mm3"
    assert entries.at["ct.gtv.original_shape_MeshVolume", "roi"] == "gtv"
    assert (entries["description"] != "").all()
    assert set(entries["source"]) == {"id", "clinical", "outcome", "availability", "genomic", "dose", "radiomics"}
    assert entries["group"].to_dict() == {c: column_group(c) for c in table.columns}


def test_rerun_is_served_from_cache(full_run: tuple[ExtractSummary, Path, Path], synth_cohort: Path,
                                    tmp_path: Path) -> None:
    first, out, cache = full_run
    again = extract(synth_cohort, tmp_path / "again.parquet", ExtractOptions(workers=2, cache_dir=cache))
    assert again.computed == 0 and again.cached == first.n_items and again.failed == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(tmp_path / "again.parquet"))


def test_changed_parameters_are_recomputed(synth_cohort: Path, tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    subset_cohort(synth_cohort, cohort, 1)
    params = write_fast_params(tmp_path / "fast.yaml")
    opts = ExtractOptions(workers=1, cache_dir=tmp_path / "cache", params=params)
    first = extract(cohort, tmp_path / "a.parquet", opts)
    assert first.computed == first.n_items
    params.write_text(params.read_text().replace("binWidth: 25", "binWidth: 10"))
    second = extract(cohort, tmp_path / "b.parquet", opts)
    n_dose_items = 4  # one per ROI (GTV, parotids, cord); they do not depend on pyradiomics parameters
    assert second.computed == second.n_items - n_dose_items and second.cached == n_dose_items
    a, b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    assert set(a.columns) == set(b.columns)
    assert a["ct.gtv.original_firstorder_Entropy"].iloc[0] < b["ct.gtv.original_firstorder_Entropy"].iloc[0]
    assert a["ct.gtv.original_firstorder_Mean"].iloc[0] == pytest.approx(b["ct.gtv.original_firstorder_Mean"].iloc[0])


def _break_cohort(cohort: Path, ids: list[str]) -> None:
    corrupt, empty_roi, mismatch = ids[0], ids[1], ids[2]
    ct = cohort / "images" / corrupt / "ct.nii.gz"
    ct.write_bytes(ct.read_bytes()[:300])  # truncated file
    images = pd.read_csv(cohort / "images.csv", dtype=str, keep_default_na=False)
    sel = (images["patient_id"] == empty_roi) & (images["roi"] == "GTV") & (images["modality"] == "PET_FDG")
    images.loc[sel, "label"] = "9"  # a label value absent from the label map
    images.to_csv(cohort / "images.csv", index=False)
    labels_path = cohort / "images" / mismatch / "labels.nii.gz"
    labels = sitk.ReadImage(str(labels_path))
    shrunk = sitk.Resample(labels, [s - 2 for s in labels.GetSize()], sitk.Transform(), sitk.sitkNearestNeighbor,
                           labels.GetOrigin(), labels.GetSpacing(), labels.GetDirection(), 0, labels.GetPixelID())
    sitk.WriteImage(shrunk, str(labels_path))


def test_bad_patients_are_reported_and_the_rest_completes(synth_cohort: Path, tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    ids = subset_cohort(synth_cohort, cohort, 4)
    _break_cohort(cohort, ids)
    out = tmp_path / "out" / "features.parquet"
    summary = extract(cohort, out, ExtractOptions(workers=2, cache_dir=tmp_path / "cache",
                                                  params=write_fast_params(tmp_path / "fast.yaml")))
    assert summary.failed > 0
    assert set(summary.failed_patients) == set(ids[:3])
    failures = pd.read_csv(output_paths(out)[1], dtype=str)
    assert len(failures) == summary.failed
    reasons = failures.groupby("patient_id")["reason"].apply(" ".join)
    assert "cannot read image" in reasons[ids[0]] and "ct.nii.gz" in reasons[ids[0]]
    assert "no voxels" in reasons[ids[1]]
    assert "geometry" in reasons[ids[2]]
    assert set(failures.loc[failures["patient_id"] == ids[1], "modality"]) == {"PET_FDG"}
    table = pd.read_parquet(out).set_index("patient_id")
    assert table.index.tolist() == ids
    good = table.loc[ids[3]]
    assert good.filter(like="ct.").notna().all() and good["available.ct"] == 1
    assert table.at[ids[0], "available.ct"] == 0 and table.at[ids[0], "available.pet_fdg"] == 1
    assert np.isnan(table.at[ids[0], "ct.gtv.original_firstorder_Mean"])
    assert np.isnan(table.at[ids[1], "pet_fdg.gtv.original_firstorder_Mean"])
    assert np.isfinite(table.at[ids[1], "pet_fdg.parotid_l.original_firstorder_Mean"])
    assert table.at[ids[2], "available.ct"] == 0  # every mask of that patient mismatches
    again = extract(cohort, out, ExtractOptions(workers=1, cache_dir=tmp_path / "cache",
                                                params=tmp_path / "fast.yaml"))
    assert not again.up_to_date and again.failed == summary.failed  # failed items are retried, not skipped
    assert again.cached == summary.n_items - summary.failed and again.computed == 0


def test_output_must_be_parquet(synth_cohort: Path, tmp_path: Path) -> None:
    from radiogenomics.errors import InputError

    with pytest.raises(InputError, match="parquet"):
        extract(synth_cohort, tmp_path / "features.csv", ExtractOptions(workers=1, cache_dir=tmp_path / "c"))


def test_truncated_gzip_is_detected(synth_cohort: Path, tmp_path: Path) -> None:
    import gzip

    from radiogenomics.cohort.integrity import check_gzip_complete
    from radiogenomics.errors import InputError

    good = synth_cohort / "images" / pd.read_csv(synth_cohort / "patients.csv", dtype=str)["patient_id"][0]
    check_gzip_complete(str(good / "ct.nii.gz"))  # intact: no error
    data = (good / "pet_fdg.nii.gz").read_bytes()
    for cut in (200, len(data) // 2, len(data) - 3):
        bad = tmp_path / f"cut{cut}.nii.gz"
        bad.write_bytes(data[:cut])
        with pytest.raises(InputError, match="truncated"):
            check_gzip_complete(str(bad))
    other = tmp_path / "table.csv.gz"
    other.write_bytes(gzip.compress(b"a,b\n1,2\n" * 1000)[:-20])
    with pytest.raises(InputError):
        check_gzip_complete(str(other))
    check_gzip_complete(None)
    check_gzip_complete(str(tmp_path / "plain.nii"))  # not gzip: nothing to check


def test_unchanged_rerun_is_skipped_and_any_change_is_not(synth_cohort: Path, tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    subset_cohort(synth_cohort, cohort, 2)
    params = write_fast_params(tmp_path / "fast.yaml")
    out = tmp_path / "features.parquet"
    opts = ExtractOptions(workers=1, cache_dir=tmp_path / "cache", params=params)
    first = extract(cohort, out, opts)
    assert not first.up_to_date and first.computed == first.n_items and first.run_key
    parquet = out.read_bytes()
    second = extract(cohort, out, opts)
    assert second.up_to_date and second.computed == 0 and second.cached == first.n_items
    assert out.read_bytes() == parquet
    # an input byte changes: no skip; every imaging item still comes from the item cache
    expr = pd.read_csv(cohort / "expression.csv", dtype=str, keep_default_na=False)
    expr.loc[0, "STAT1"] = str(float(expr.loc[0, "STAT1"]) + 1.0)
    expr.to_csv(cohort / "expression.csv", index=False)
    third = extract(cohort, out, opts)
    assert not third.up_to_date and third.computed == 0 and third.cached == first.n_items
    assert out.read_bytes() != parquet  # the genomic features changed
    assert extract(cohort, out, opts).up_to_date
    # an edited or deleted output: rebuilt
    output_paths(out)[0].unlink()
    fourth = extract(cohort, out, opts)
    assert not fourth.up_to_date and output_paths(out)[0].is_file()
    # other parameters: no skip, radiomics recomputed
    params.write_text(params.read_text().replace("binWidth: 25", "binWidth: 10"))
    fifth = extract(cohort, out, opts)
    assert not fifth.up_to_date and fifth.computed > 0
    # --no-cache never skips
    sixth = extract(cohort, out, ExtractOptions(workers=1, use_cache=False, params=params))
    assert not sixth.up_to_date and sixth.computed == sixth.n_items


def test_table_carries_its_schema(full_run: tuple[ExtractSummary, Path, Path]) -> None:
    from radiogenomics.features.dosimetric import metric_names
    from radiogenomics.features.expected import radiomics_keys
    from radiogenomics.features.radiomics_extraction import canonical_json

    _, out, _ = full_run
    table = pd.read_parquet(out)
    schema = read_feature_schema(out)
    assert schema.names == table.columns.tolist()
    typed = read_feature_table(out)
    assert [c.dtype for c in schema.columns] == [str(t) for t in typed.dtypes]
    assert str(typed["outcome.tox_xerostomia"].dtype) == "Int64" and str(typed["clinical.center"].dtype) == "str"
    assert typed["available.ct"].dtype == np.int8 and typed["genomic.rsi"].dtype == np.float64
    assert all(c.group == column_group(c.name) for c in schema.columns)
    assert schema.params["radiomics_params"] is None and schema.params["deep"] is False
    assert schema.params["genomic_normalisation"] == "sample_median"
    # the columns a group would have if every patient failed are the ones real patients produce
    ct_gtv = [c[len("ct.gtv."):] for c in table.columns if c.startswith("ct.gtv.")]
    assert sorted(radiomics_keys(canonical_json(params_for_modality("CT") or {}))) == sorted(ct_gtv)
    assert sorted(metric_names()) == sorted(c[len("dose.gtv."):] for c in table.columns if c.startswith("dose.gtv."))
    from radiogenomics.features.deep import DeepConfig
    from radiogenomics.features.expected import item_keys
    from radiogenomics.features.tasks import DEEP, WorkItem

    deep = WorkItem(kind=DEEP, patient_id="P", modality="CT", roi="GTV", image="", params=DeepConfig().to_params())
    assert item_keys(deep) == tuple(str(i) for i in range(DeepConfig().embedding_dim))


def _pick_cohort(src: Path, dst: Path, ids: list[str]) -> None:
    """Copy the patients ``ids`` (in that order) of a cohort to ``dst``."""
    import shutil

    dst.mkdir(parents=True)
    for name in ("patients.csv", "images.csv", "expression.csv", "dvh.csv"):
        if (src / name).exists():
            table = pd.read_csv(src / name, dtype=str, keep_default_na=False)
            table = table[table["patient_id"].isin(ids)]
            if name in ("patients.csv", "expression.csv"):
                table = table.set_index("patient_id").loc[ids].reset_index()
            table.to_csv(dst / name, index=False)
    for pid in ids:
        shutil.copytree(src / "images" / pid, dst / "images" / pid)


def _blank_expression(cohort: Path, pid: str, genes: list[str] | None) -> None:
    expr = pd.read_csv(cohort / "expression.csv", dtype=str, keep_default_na=False)
    expr.loc[expr["patient_id"] == pid, genes or [c for c in expr.columns if c != "patient_id"]] = ""
    expr.to_csv(cohort / "expression.csv", index=False)


@pytest.fixture(scope="module")
def two_cohorts(synth_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Cohort A (4 patients) and cohort B (2 of A's patients with 2 others, another order), extracted."""
    root = tmp_path_factory.mktemp("pair")
    ids = pd.read_csv(synth_cohort / "patients.csv", dtype=str)["patient_id"].tolist()
    runs: dict[str, object] = {"ids": ids, "root": root, "params": write_fast_params(root / "fast.yaml")}
    for name, members in (("a", ids[0:4]), ("b", [ids[2], ids[0], ids[5], ids[6]])):
        _pick_cohort(synth_cohort, root / name, members)
        _blank_expression(root / name, ids[2], ["JUN"])  # one RSI gene blank
        if name == "a":
            _blank_expression(root / name, ids[1], None)  # an entirely blank expression row
        runs[name] = root / f"{name}.parquet"
        extract(root / name, root / f"{name}.parquet",
                ExtractOptions(workers=1, cache_dir=root / "cache", params=root / "fast.yaml"))
    return runs


@pytest.mark.blas_sensitive
def test_same_patient_same_row_whatever_the_cohort(two_cohorts: dict[str, object]) -> None:
    ids = two_cohorts["ids"]
    assert isinstance(ids, list)
    a = pd.read_parquet(two_cohorts["a"]).set_index("patient_id")
    b = pd.read_parquet(two_cohorts["b"]).set_index("patient_id")
    assert a.columns.tolist() == b.columns.tolist()
    for pid in (ids[0], ids[2]):
        # genomic scores are matrix products over each cohort's rows: to rounding, not bit for bit
        pd.testing.assert_series_equal(a.loc[pid], b.loc[pid], check_exact=False, rtol=REL, atol=ABS)
    assert np.isfinite(a.at[ids[0], "genomic.rsi"]) and a.at[ids[0], "available.genomic"] == 1
    assert np.isnan(a.at[ids[2], "genomic.rsi"]) and a.at[ids[2], "genomic.rsi_coverage"] == 0.9
    assert np.isfinite(a.at[ids[2], "genomic.hypoxia_toustrup2011"]) and a.at[ids[2], "available.genomic"] == 1
    # an all-blank expression row is no genomics: no RSI, no scores, availability 0
    assert np.isnan(a.at[ids[1], "genomic.rsi"]) and a.at[ids[1], "genomic.rsi_coverage"] == 0.0
    assert a.loc[ids[1], ["genomic.hypoxia_toustrup2011", "genomic.toxicity_candidate_genes"]].isna().all()
    assert a.at[ids[1], "available.genomic"] == 0


def test_columns_exist_when_every_patient_fails(two_cohorts: dict[str, object], tmp_path: Path) -> None:
    ids = two_cohorts["ids"]
    assert isinstance(ids, list) and isinstance(two_cohorts["root"], Path)
    cohort = tmp_path / "cohort"
    _pick_cohort(two_cohorts["root"] / "a", cohort, ids[0:2])
    for pid in ids[0:2]:
        ct = cohort / "images" / pid / "ct.nii.gz"
        ct.write_bytes(ct.read_bytes()[:300])  # every CT item fails
    pd.read_csv(cohort / "expression.csv").iloc[:0].to_csv(cohort / "expression.csv", index=False)  # header only
    out = tmp_path / "failed.parquet"
    summary = extract(cohort, out, ExtractOptions(workers=1, cache_dir=tmp_path / "cache",
                                                  params=two_cohorts["params"]))  # type: ignore[arg-type]
    assert summary.failed > 0
    table = pd.read_parquet(out).set_index("patient_id")
    reference = pd.read_parquet(two_cohorts["a"]).set_index("patient_id")  # type: ignore[arg-type]
    ct_columns = [c for c in reference.columns if c.startswith("ct.")]
    assert ct_columns and [c for c in table.columns if c.startswith("ct.")] == ct_columns
    assert table[ct_columns].isna().all().all() and (table["available.ct"] == 0).all()
    assert (table["available.genomic"] == 0).all() and (table["available.pet_fdg"] == 1).all()


def test_schema_from_reindexes_a_new_cohort(two_cohorts: dict[str, object], synth_cohort: Path, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    from radiogenomics.errors import InputError
    from radiogenomics.features.radiomics_extraction import load_params

    ids = two_cohorts["ids"]
    reference_path = two_cohorts["a"]
    assert isinstance(ids, list) and isinstance(reference_path, Path)
    cohort = tmp_path / "new"
    _pick_cohort(synth_cohort, cohort, ids[8:10])
    images = pd.read_csv(cohort / "images.csv", dtype=str, keep_default_na=False)
    images[images["modality"] != "PET_FMISO"].to_csv(cohort / "images.csv", index=False)  # no FMISO PET
    patients = pd.read_csv(cohort / "patients.csv", dtype=str, keep_default_na=False)
    patients["smoking_pack_years"] = ["10", "20"]  # a column the reference does not have
    patients.to_csv(cohort / "patients.csv", index=False)
    (cohort / "expression.csv").unlink()
    out = tmp_path / "new.parquet"
    cache = tmp_path / "cache"
    with caplog.at_level("WARNING"):
        extract(cohort, out, ExtractOptions(workers=1, cache_dir=cache, schema_from=reference_path))
    reference = read_feature_schema(reference_path)
    table = read_feature_table(out)
    assert table.columns.tolist() == reference.names
    assert [str(t) for t in table.dtypes] == [c.dtype for c in reference.columns]
    assert read_feature_schema(out).names == reference.names
    assert "1 column(s) absent from the reference" in caplog.text and "clinical.smoking_pack_years" in caplog.text
    fmiso = [c for c in table.columns if c.startswith("pet_fmiso.")]
    assert fmiso and table[fmiso].isna().all().all() and (table["available.pet_fmiso"] == 0).all()
    assert table.filter(like="genomic.").isna().all().all() and (table["available.genomic"] == 0).all()
    assert table["ct.gtv.original_firstorder_Mean"].notna().all()  # computed with the reference's parameters
    assert load_params(tmp_path / "new.params.yaml") == load_params(two_cohorts["params"])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="filters"):
        extract(cohort, tmp_path / "x.parquet", ExtractOptions(workers=1, cache_dir=cache, filters=("original", "log"),
                                                               schema_from=reference_path))
    other = write_fast_params(tmp_path / "other.yaml")
    other.write_text(other.read_text().replace("binWidth: 25", "binWidth: 10"))
    with pytest.raises(InputError, match="radiomics_params"):
        extract(cohort, tmp_path / "y.parquet", ExtractOptions(workers=1, cache_dir=cache, schema_from=reference_path,
                                                               params=other))
    same = extract(cohort, tmp_path / "z.parquet", ExtractOptions(workers=1, cache_dir=cache, params=two_cohorts[
        "params"], schema_from=reference_path))  # type: ignore[arg-type]
    assert same.failed == 0 and pd.read_parquet(tmp_path / "z.parquet").columns.tolist() == reference.names
