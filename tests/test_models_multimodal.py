"""Multimodal network: crops and their cache, sklearn API, determinism, missing modalities, learning a signal."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.pipeline import Pipeline

import radiogenomics.cohort
from radiogenomics.errors import InputError
from radiogenomics.models import MultimodalClassifier, MultimodalRegressor
from radiogenomics.models.crops import CropSpec, load_crops
from radiogenomics.models.multimodal import modality_dropout
from radiogenomics.synthetic import generate_cohort

N_PATIENTS = 40
FAST = {"crop_size": 16, "box_mm": 64.0, "epochs": 3, "batch_size": 8, "device": "cpu", "n_threads": 1}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_cohort(tmp_path_factory.mktemp("mm") / "cohort", n_patients=N_PATIENTS, seed=11, grid_size=20)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mm_cache")


@pytest.fixture(scope="module")
def table(cohort: Path) -> pd.DataFrame:
    """A small feature table: patient_id, two clinical covariates (one text), an outcome (never an input)."""
    patients = pd.read_csv(cohort / "patients.csv", dtype={"patient_id": str})
    return pd.DataFrame({"patient_id": patients["patient_id"], "clinical.age_years": patients["age_years"],
                         "clinical.sex": patients["sex"], "outcome.tox_xerostomia": patients["tox_xerostomia"]})


@pytest.fixture(scope="module")
def truth(cohort: Path) -> pd.DataFrame:
    return pd.read_csv(cohort / "truth.csv", dtype={"patient_id": str}).set_index("patient_id")


def _regressor(cohort: Path, cache_dir: Path, **kw: object) -> MultimodalRegressor:
    return MultimodalRegressor(cohort=str(cohort), cache_dir=str(cache_dir), **{**FAST, **kw})  # type: ignore[arg-type]


def test_crops_channels_presence_and_cache(cohort: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [f"SYN{i:04d}" for i in range(1, 6)]
    spec = CropSpec(size=16, box_mm=64.0)
    first = load_crops(cohort, ids, spec, cache_dir)
    assert first.images.shape == (5, 4, 16, 16, 16) and first.present.shape == (5, 3)
    assert (first.present == 1).all()
    assert 0.0 <= first.images[:, :3].min() and first.images[:, :3].max() <= 1.0  # windowed CT / PET
    mask = first.images[:, 3]
    assert set(np.unique(mask)) <= {0.0, 1.0} and (mask.sum(axis=(1, 2, 3)) > 0).all()
    reads: list[str] = []
    real = radiogenomics.cohort.read_image

    def counting(path: object) -> object:
        reads.append(str(path))
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(radiogenomics.cohort, "read_image", counting)
    again = load_crops(cohort, ids, spec, cache_dir)
    assert reads == []  # served from the cache: no image decoded
    assert np.array_equal(first.images, again.images) and np.array_equal(first.present, again.present)
    load_crops(cohort, ids[:1], CropSpec(size=12, box_mm=64.0), cache_dir)  # another spec: a new key
    assert sorted(Path(r).name for r in reads) == ["ct.nii.gz", "labels.nii.gz", "pet_fdg.nii.gz", "pet_fmiso.nii.gz"]
    for entry in (cache_dir / "multimodal").glob("??/*.npz"):
        entry.write_bytes(b"damaged")
    repaired = load_crops(cohort, ids, spec, cache_dir)  # damaged entries are recomputed, not returned
    assert np.array_equal(first.images, repaired.images) and len(reads) > 3


def test_missing_modality_gets_a_prediction(cohort: Path, cache_dir: Path, table: pd.DataFrame,
                                            tmp_path: Path) -> None:
    images = pd.read_csv(cohort / "images.csv", dtype=str, keep_default_na=False)
    no_pet, no_images = "SYN0003", "SYN0004"
    drop = ((images["patient_id"] == no_pet) & images["modality"].str.startswith("PET")) | (
        images["patient_id"] == no_images)
    partial = tmp_path / "partial"
    shutil.copytree(cohort, partial)
    images[~drop].to_csv(partial / "images.csv", index=False)
    crops = load_crops(partial, [no_pet, no_images, "SYN0005"], CropSpec(size=16, box_mm=64.0), cache_dir)
    assert crops.present.tolist() == [[1, 0, 0], [0, 0, 0], [1, 1, 1]]
    assert not crops.images[0, 1:3].any() and crops.images[0, 0].any()
    assert not crops.images[1].any()
    model = _regressor(cohort, cache_dir, modality_dropout=0.3).fit(table, table["clinical.age_years"])
    full = model.predict(table)
    pred = model.set_params(cohort=str(partial)).predict(table)  # the same network, PET / all images now absent
    assert pred.shape == (N_PATIENTS,) and np.isfinite(pred).all()
    rows = table["patient_id"].isin([no_pet, no_images]).to_numpy()
    assert np.allclose(pred[~rows], full[~rows], atol=1e-5)
    assert not np.isclose(pred[rows], full[rows]).any()


def test_modality_dropout_only_in_training(cohort: Path, cache_dir: Path, table: pd.DataFrame) -> None:
    gen = torch.Generator().manual_seed(0)
    images, present = torch.ones((2000, 4, 2, 2, 2)), torch.ones((2000, 4))
    dropped_images, dropped = modality_dropout(images, present, 0.3, gen)
    assert images.min() == 1 and present.min() == 1  # inputs unchanged
    assert abs(float(1 - dropped.mean()) - 0.3) < 0.03
    assert torch.equal(dropped_images[:, 3], images[:, 3])  # the ROI mask channel is never dropped
    assert torch.equal(dropped_images[:, :3, 0, 0, 0], dropped[:, :3])  # a dropped channel is zero, flag 0
    assert modality_dropout(images, present, 0.0, gen)[1] is present
    model = _regressor(cohort, cache_dir, modality_dropout=0.5).fit(table, table["clinical.age_years"])
    assert not model.network_.training
    assert np.array_equal(model.predict(table), model.predict(table))  # no random dropping at prediction


def test_deterministic_and_clonable(cohort: Path, cache_dir: Path, table: pd.DataFrame) -> None:
    y = table["clinical.age_years"]
    model = _regressor(cohort, cache_dir, random_state=3)
    copy = clone(model)
    assert copy.get_params() == model.get_params() and not hasattr(copy, "network_")
    a = model.fit(table, y).predict(table)
    b = copy.fit(table, y).predict(table)
    assert np.array_equal(a, b)
    c = _regressor(cohort, cache_dir, random_state=4).fit(table, y).predict(table)
    assert not np.allclose(a, c)
    assert not hasattr(clone(model), "network_")


def test_classifier_in_a_pipeline(cohort: Path, cache_dir: Path, table: pd.DataFrame) -> None:
    y = (table["outcome.tox_xerostomia"] >= 2).astype(int).to_numpy()
    pipe = Pipeline([("net", MultimodalClassifier(cohort=str(cohort), cache_dir=str(cache_dir), **FAST))])
    pipe.fit(table, y)
    proba = pipe.predict_proba(table)
    assert proba.shape == (N_PATIENTS, 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert set(pipe.predict(table)) <= {0, 1}
    assert list(pipe.named_steps["net"].classes_) == [0, 1]
    with pytest.raises(InputError, match="patient_id"):
        pipe.predict(table.drop(columns="patient_id"))
    with pytest.raises(InputError, match="one class"):
        clone(pipe).fit(table, np.zeros(N_PATIENTS, dtype=int))


def test_wrong_cohort_is_an_input_error(tmp_path: Path, cohort: Path, cache_dir: Path, table: pd.DataFrame) -> None:
    other = table.assign(patient_id=[f"X{i}" for i in range(N_PATIENTS)])
    with pytest.raises(InputError, match="GTV image"):
        _regressor(cohort, cache_dir).fit(other, other["clinical.age_years"])


def test_learns_gtv_volume_from_crops(cohort: Path, cache_dir: Path, table: pd.DataFrame,
                                      truth: pd.DataFrame) -> None:
    """Image branch alone (no tabular columns): GTV volume on held-out patients, Spearman > 0.5."""
    y = np.log(truth.loc[table["patient_id"], "gtv_volume_cc"].to_numpy())
    train, test = np.arange(30), np.arange(30, N_PATIENTS)
    model = _regressor(cohort, cache_dir, groups=(), epochs=25, lr=3e-3, patience=25, modality_dropout=0.0)
    model.fit(table.iloc[train], y[train])
    assert model.n_tabular_features_ == 0
    rho = spearmanr(model.predict(table.iloc[test]), y[test]).statistic
    assert rho > 0.5


def test_pickle_round_trip_and_prediction_without_a_cohort(cohort: Path, cache_dir: Path, table: pd.DataFrame,
                                                           tmp_path: Path) -> None:
    """The fitted network pickles as its weights (its class lives inside build_network); a fitted image network
    asked to predict without a cohort gets zero image channels (all modalities absent), not a shape error."""
    import joblib

    y = (table["outcome.tox_xerostomia"] >= 2).astype(int).to_numpy()
    model = MultimodalClassifier(cohort=str(cohort), cache_dir=str(cache_dir), **FAST).fit(table, y)
    joblib.dump(model, tmp_path / "model.joblib")
    again = joblib.load(tmp_path / "model.joblib")
    assert not again.network_.training
    np.testing.assert_array_equal(again.predict_proba(table), model.predict_proba(table))
    blind = again.set_params(cohort=None).predict_proba(table)
    assert np.isfinite(blind).all() and not np.allclose(blind, model.predict_proba(table))
