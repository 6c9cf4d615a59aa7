"""End-to-end extraction: fused table, dictionary, cache re-runs and failure isolation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from test_features_helpers import subset_cohort, write_fast_params

from radiogenomics.features import naming
from radiogenomics.features.pipeline import ExtractOptions, ExtractSummary, extract, output_paths
from radiogenomics.features.radiomics_extraction import extract_radiomics, params_for_modality


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
    assert namespaces == {"ct", "pet_fdg", "pet_fmiso", "dose", "genomic", "clinical", "available"}
    assert not [c for c in table.columns if c.startswith(("clinical.lc_", "clinical.tox_"))]  # outcomes excluded
    avail = table.filter(like="available.")
    assert set(avail.dtypes.astype(str)) == {"int8"} and (avail == 1).all().all()
    radiomics = table[[c for c in table.columns if c.startswith(("ct.", "pet_"))]]
    assert all(str(t) == "float64" for t in radiomics.dtypes)
    assert np.isfinite(radiomics.to_numpy()).mean() > 0.99
    # gtv dose close to prescription, parotid below it
    assert (table["dose.gtv.mean_gy"] > table["dose.parotid_l.mean_gy"]).all()


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
    assert set(entries["source"]) == {"id", "clinical", "availability", "genomic", "dose", "radiomics"}


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
