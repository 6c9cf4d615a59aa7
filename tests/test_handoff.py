"""The optimizer hand-off (contract section 7) on the 24-patient bundle: files, RT Dose, map, failures, API, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from prescriber_factory import Bundle
from records_compare import assert_records_close
from serving_factory import MODEL, new_token

from radiogenomics.cli.app import main
from radiogenomics.errors import InputError
from radiogenomics.models.prescriber import RECORD_FIELDS
from radiogenomics.planning import HandoffResult, handoff, validate_objectives
from radiogenomics.planning.dose_map import PETImages, prescription_map
from radiogenomics.radiobiology import load_rails, read_rtdose_gy


@pytest.fixture(scope="module")
def full(bundle: Bundle, registry: Path, tmp_path_factory: pytest.TempPathFactory) -> HandoffResult:
    """All 24 patients, from the registry, with the cohort's PET."""
    return handoff(MODEL, bundle.features_path, tmp_path_factory.mktemp("handoff") / "out", cohort=bundle.cohort)


def gtv_mask(bundle: Bundle, patient_id: str) -> np.ndarray:
    rows = pd.read_csv(bundle.cohort / "images.csv")
    row = rows[(rows.patient_id == patient_id) & (rows.modality == "PET_FDG") & (rows.roi == "GTV")].iloc[0]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(bundle.cohort / row["mask"])))
    return labels == int(row["label"])


def test_every_patient_gets_all_files(full: HandoffResult, bundle: Bundle) -> None:
    ids = sorted(bundle.table["patient_id"].astype(str))
    assert sorted(p.patient_id for p in full.patients) == ids and full.failures == []
    assert pd.read_csv(full.failures_csv).empty
    manifest = json.loads(full.manifest.read_text())
    assert manifest["model_version"] == full.model_version != "" and len(manifest["patients"]) == len(ids)
    for pid in ids:
        folder = full.out_dir / pid
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["prescription.json", "objectives.json", "dose_prescription.nii.gz", "dose_prescription.dcm"])
        record = json.loads((folder / "prescription.json").read_text())
        assert list(record) == list(RECORD_FIELDS) and record["patient_id"] == pid
        objectives = json.loads((folder / "objectives.json").read_text())
        validate_objectives(objectives)
        assert objectives["input_sha256"] == record["input_sha256"]
        assert objectives["model_version"] == record["model_version"] == full.model_version
        assert objectives["flags"] == record["flags"]
        target = objectives["structures"][0]
        d = record["recommended_dose_per_fraction_gy"]
        assert target["objectives"][0]["effect_per_fraction"] == pytest.approx(
            record["alpha_per_gy"] * d + record["beta_per_gy2"] * d**2)
        # OARs: the patient's own ROIs of images.csv (synthetic cohort: both parotids and the cord)
        assert [s["tg263_name"] for s in objectives["structures"][1:]] == ["Parotid_L", "Parotid_R", "SpinalCord"]


def test_records_match_the_registered_model_in_process(full: HandoffResult, bundle: Bundle) -> None:
    from radiogenomics.training.registry.prediction import load_prescriber

    prescriber, info = load_prescriber(MODEL)
    features = bundle.table.drop(columns=[c for c in bundle.table.columns if c.startswith("outcome.")])
    from radiogenomics.features.patient_dvhs import cohort_dvhs

    dvhs = cohort_dvhs(bundle.cohort)  # the hand-off checks the OAR limits on the cohort's dose grids
    expected = {r["patient_id"]: r for r in prescriber.predict_records(features, model=info, oar_dvhs=dvhs)}
    for p in full.patients:
        record = json.loads((full.out_dir / p.patient_id / "prescription.json").read_text())
        assert record["input_sha256"] == expected[p.patient_id]["input_sha256"]
        assert record["recommended_total_dose_gy"] == pytest.approx(expected[p.patient_id]["recommended_total_dose_gy"])


def test_rtdose_reads_back_as_the_nifti_map(full: HandoffResult, bundle: Bundle) -> None:
    rails = load_rails().site("head_neck")
    for p in full.patients:
        folder = full.out_dir / p.patient_id
        nifti = sitk.ReadImage(str(folder / "dose_prescription.nii.gz"))
        rtdose = read_rtdose_gy(folder / "dose_prescription.dcm")
        assert rtdose.GetSize() == nifti.GetSize()
        assert np.allclose(rtdose.GetOrigin(), nifti.GetOrigin(), atol=1e-4)
        assert np.allclose(rtdose.GetSpacing(), nifti.GetSpacing(), atol=1e-6)
        a, b = sitk.GetArrayFromImage(nifti).astype(np.float64), sitk.GetArrayFromImage(rtdose)
        import pydicom

        scaling = float(pydicom.dcmread(folder / "dose_prescription.dcm", stop_before_pixels=True).DoseGridScaling)
        # DICOM: uint32 steps of DoseGridScaling; NIfTI: float32
        assert np.max(np.abs(a - b)) <= scaling + 1e-6 * a.max()
        mask = gtv_mask(bundle, p.patient_id)
        record = json.loads((folder / "prescription.json").read_text())
        assert a[mask].mean() == pytest.approx(record["recommended_total_dose_gy"], rel=0.01)
        assert (a[~mask] == 0).all()
        assert a[mask].min() >= rails.min_total_dose_gy - 1e-4 and a[mask].max() <= rails.max_voxel_dose_gy + 1e-4


def test_higher_fmiso_hypoxia_gives_higher_local_dose() -> None:
    """Uniform FDG, FMISO uptake 3x the reference in one half of the target, 1x in the other."""
    reference = sitk.Image(6, 6, 6, sitk.sitkFloat64)
    reference.SetSpacing((4.0, 4.0, 4.0))
    mask = np.zeros((6, 6, 6), bool)
    mask[1:5, 1:5, 1:5] = True
    fmiso = np.ones((6, 6, 6))
    fmiso[1:5, 1:5, 1:3] = 2.5
    pet = PETImages(reference, mask, fdg_suv=np.full((6, 6, 6), 8.0), fmiso_suv=fmiso, target_roi="GTV")
    record = {"patient_id": "P", "alpha_per_gy": 0.3, "beta_per_gy2": 0.05, "recommended_n_fractions": 35.0,
              "recommended_total_dose_gy": 70.0}
    dose = prescription_map(record, pet, site="head_neck", fmiso_reference_suv=1.0).dose_gy
    hypoxic, oxic = dose[1:5, 1:5, 1:3], dose[1:5, 1:5, 3:5]
    assert hypoxic.min() > oxic.max() and dose[mask].mean() == pytest.approx(70.0, rel=1e-6)
    uniform = prescription_map(record, PETImages(reference, mask, np.full((6, 6, 6), 8.0), np.ones((6, 6, 6))),
                               site="head_neck", fmiso_reference_suv=1.0).dose_gy
    assert np.allclose(uniform[mask], 70.0)


@pytest.fixture(scope="module")
def edited_cohort(bundle: Bundle, full: HandoffResult,
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A copy of the cohort: one patient has no PET rows; another, whose map is not flat (above the site's
    minimum dose), has its FMISO uptake tripled in the lower half of its GTV (more hypoxia there)."""
    cohort = tmp_path_factory.mktemp("edited") / "cohort"
    shutil.copytree(bundle.cohort, cohort)
    rows = pd.read_csv(cohort / "images.csv", dtype=str, keep_default_na=False)
    hypoxic = next(p.patient_id for p in full.patients
                   if p.map_max_dose_gy is not None and p.map_max_dose_gy - p.map_min_dose_gy > 5.0)
    no_pet = next(p for p in sorted(rows["patient_id"].unique()) if p != hypoxic)
    rows = rows[~((rows.patient_id == no_pet) & rows.modality.str.startswith("PET"))]
    rows.to_csv(cohort / "images.csv", index=False)
    row = rows[(rows.patient_id == hypoxic) & (rows.modality == "PET_FMISO")].iloc[0]
    image = sitk.ReadImage(str(cohort / row["image"]))
    values = sitk.GetArrayFromImage(image).astype(np.float64)
    mask = gtv_mask(bundle, hypoxic)
    lower = mask & (np.arange(mask.shape[0])[:, None, None] <= np.median(np.nonzero(mask)[0]))
    values[lower] *= 3.0
    edited = sitk.GetImageFromArray(values.astype(np.float32))
    edited.CopyInformation(image)
    sitk.WriteImage(edited, str(cohort / row["image"]))
    return cohort, no_pet, hypoxic


def test_missing_pet_bad_ids_and_hypoxia_end_to_end(full: HandoffResult, bundle: Bundle,
                                                    edited_cohort: tuple[Path, str, str], tmp_path: Path) -> None:
    cohort, no_pet, hypoxic = edited_cohort
    out = tmp_path / "out"
    shutil.copytree(full.out_dir / no_pet, out / no_pet)  # an earlier run's map for no_pet must go
    result = handoff(MODEL, bundle.features_path, out, cohort=cohort,
                     patients=[no_pet, "NOT_A_PATIENT", hypoxic, "../escape"])
    assert [p.patient_id for p in result.patients] == [no_pet, hypoxic]
    failures = pd.read_csv(out / "failures.csv")
    assert failures["patient_id"].tolist() == ["NOT_A_PATIENT", "../escape"]
    assert "not in the feature table" in failures["reason"].iloc[0] and not (tmp_path / "escape").exists()
    assert sorted(p.name for p in (out / no_pet).iterdir()) == ["objectives.json", "prescription.json"]
    notes = {p.patient_id: p.notes for p in result.patients}
    assert any("no FDG or FMISO PET" in n for n in notes[no_pet])
    manifest = json.loads((out / "handoff.json").read_text())
    assert any("no FDG or FMISO PET" in n for n in manifest["patients"][0]["notes"])
    # the tripled FMISO uptake raised the dose where it was tripled, at the same mean dose
    before = sitk.GetArrayFromImage(sitk.ReadImage(str(full.out_dir / hypoxic / "dose_prescription.nii.gz")))
    after = sitk.GetArrayFromImage(sitk.ReadImage(str(out / hypoxic / "dose_prescription.nii.gz")))
    mask = gtv_mask(bundle, hypoxic)
    lower = mask & (np.arange(mask.shape[0])[:, None, None] <= np.median(np.nonzero(mask)[0]))
    assert after[mask].mean() == pytest.approx(before[mask].mean(), rel=1e-4)
    assert after[lower].mean() > before[lower].mean() + 0.5
    assert after[mask & ~lower].mean() < before[mask & ~lower].mean()


@pytest.mark.blas_sensitive
def test_through_the_rest_api(full: HandoffResult, bundle: Bundle, registry: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from radiogenomics.serving.api import create_app

    tokens, token = new_token(tmp_path)
    app = create_app(MODEL, tokens_file=tokens, audit_db=tmp_path / "audit.db", workdir=tmp_path / "work")
    ids = [p.patient_id for p in full.patients[:3]]
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        result = handoff(MODEL, bundle.features_path, tmp_path / "api", patients=[*ids, "NOT_A_PATIENT"],
                         http_client=client)
        assert [p.patient_id for p in result.patients] == ids and result.source.startswith("API")
        assert [f[0] for f in result.failures] == ["NOT_A_PATIENT"]
        from radiogenomics.jsonio import json_safe
        from radiogenomics.training.registry.prediction import load_prescriber

        prescriber, info = load_prescriber(MODEL)
        rows = bundle.table[bundle.table["patient_id"].isin(ids)]
        rows = rows.drop(columns=[c for c in rows.columns if c.startswith("outcome.")])
        local = {r["patient_id"]: json_safe(r) for r in prescriber.predict_records(rows, model=info)}
        for pid in ids:
            via_api = json.loads((tmp_path / "api" / pid / "prescription.json").read_text())
            # all but created_at; figures to rounding (the batch size differs), the rest exactly
            assert_records_close(via_api, local[pid])
        with pytest.raises(InputError, match="not radiogenomics-other"):
            handoff("models:/radiogenomics-other@champion", bundle.features_path, tmp_path / "x", patients=ids[:1],
                    http_client=client)
    with TestClient(app, headers={"Authorization": "Bearer wrong"}) as client, \
            pytest.raises(InputError, match="refused the token"):
        handoff(MODEL, bundle.features_path, tmp_path / "y", patients=ids[:1], http_client=client)


def test_cli(bundle: Bundle, registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
             monkeypatch: pytest.MonkeyPatch) -> None:
    pid = str(bundle.table["patient_id"].iloc[0])
    out = tmp_path / "cli"
    args = ["handoff", "--model", MODEL, "--features", str(bundle.features_path), "--out", str(out)]
    assert main([*args, "--patients", f"{pid},NOPE", "--cohort", str(bundle.cohort)]) == 0
    captured = capsys.readouterr()
    assert pid in captured.out and "1 patient(s) from" in captured.out and "NOPE" in captured.err
    assert (out / pid / "dose_prescription.dcm").is_file()
    assert main([*args, "--patients", "NOPE"]) == 2
    assert captured.err.count("\n") <= 1 and "no patient could be handed off" in capsys.readouterr().err
    monkeypatch.delenv("RADIOGENOMICS_TOKEN", raising=False)
    assert main([*args, "--api-url", "http://127.0.0.1:9"]) == 2
    assert "RADIOGENOMICS_TOKEN" in capsys.readouterr().err
    assert main([*args[:4], str(tmp_path / "missing.parquet"), *args[5:]]) == 2


def test_in_process_and_api_hand_offs_agree_on_a_table_with_columns_the_model_does_not_know(
        bundle: Bundle, registry: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A feature table made for another model (features of an ROI this model never saw): the table-reading routes
    drop the same columns with one warning naming them and the fix, and give the same records (issue 16)."""
    import logging

    import pandas as pd
    from fastapi.testclient import TestClient

    from radiogenomics.features.fusion import write_parquet
    from radiogenomics.features.schema import build_schema, read_feature_schema
    from radiogenomics.serving.api import create_app

    ids = [str(p) for p in bundle.table["patient_id"].head(2)]
    extra = bundle.table.assign(**{"ct.gtv_1.original_firstorder_Mean": 1.0, "ct.gtv_1.original_shape_Sphericity": 0.5})
    path = tmp_path / "other-model-features.parquet"
    write_parquet(extra, path, build_schema(extra, read_feature_schema(bundle.features_path).params).to_metadata())
    with caplog.at_level(logging.WARNING):
        local = handoff(MODEL, path, tmp_path / "local", patients=ids)
    warnings = [r.getMessage() for r in caplog.records if "not trained on" in r.getMessage()]
    assert len(warnings) == 1 and "ct.gtv_1.original_firstorder_Mean" in warnings[0] and "--schema-from" in warnings[0]
    tokens, token = new_token(tmp_path)
    app = create_app(MODEL, tokens_file=tokens, audit_db=tmp_path / "audit.db", workdir=tmp_path / "work")
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        via_api = handoff(MODEL, path, tmp_path / "api", patients=ids, http_client=client)
    assert [p.patient_id for p in local.patients] == [p.patient_id for p in via_api.patients] == ids
    for pid in ids:
        a = json.loads((tmp_path / "local" / pid / "prescription.json").read_text())
        b = json.loads((tmp_path / "api" / pid / "prescription.json").read_text())
        assert_records_close(a, b)
    assert pd.read_parquet(path).shape[1] == bundle.table.shape[1] + 2  # the table itself is left as it was
