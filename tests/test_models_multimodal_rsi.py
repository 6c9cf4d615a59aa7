"""MultimodalRSI: split-conformal coverage, the image-free (Mondrian) quantile, the measured-RSI rules shared with
RSISurrogate, prediction sources, the cohort= keyword, and pickling into a fresh process.

Fast networks throughout (a few epochs, 16^3 crops, width 4); the image tests use the session's 24-patient
extracted cohort of ``prescriber_factory``.
"""

from __future__ import annotations

import copy
import math
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from prescriber_factory import extracted_cohort, session_base
from scipy.stats import norm
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from radiogenomics.errors import InputError
from radiogenomics.models import MultimodalRegressor, MultimodalRSI, RSISurrogate
from radiogenomics.models.crops import Crops
from radiogenomics.models.multimodal_rsi import conformal_quantile, has_images
from radiogenomics.models.rsi_measured import RSI_COLUMN

TINY = {"epochs": 2, "crop_size": 16, "width": 4, "hidden": 8, "batch_size": 8, "patience": 2, "augment": False,
        "device": "cpu", "n_threads": 1}
Z90 = float(norm.ppf(0.95))


def simulate(n: int, seed: int) -> pd.DataFrame:
    """A noisy linear RSI (known truth): two imaging columns carry it, noise SD 0.04; no images."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    return pd.DataFrame({
        "patient_id": [f"S{seed}_{i:05d}" for i in range(n)],
        "ct.gtv.original_firstorder_Mean": x[:, 0],
        "ct.gtv.original_glcm_Contrast": x[:, 1],
        "pet_fdg.gtv.original_firstorder_Mean": x[:, 2],
        "clinical.age_years": rng.normal(61, 9, n),
        RSI_COLUMN: 0.45 + 0.08 * x[:, 0] - 0.05 * x[:, 1] + 0.04 * rng.standard_normal(n),
    })


def tabular_rsi(**kw: object) -> MultimodalRSI:
    network = MultimodalRegressor(cohort=None, random_state=0,
                                  **{**TINY, "epochs": 20, "patience": 5, "lr": 3e-3})  # type: ignore[arg-type]
    return MultimodalRSI(network, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, Path]:
    """(cohort, feature table, crop cache) of the session's extracted 24-patient cohort."""
    from radiogenomics.features.schema import read_feature_table

    cohort, features = extracted_cohort(session_base(tmp_path_factory))
    return cohort, read_feature_table(features), tmp_path_factory.mktemp("mm_rsi_crops")


@pytest.fixture(scope="module")
def image_model(images: tuple[Path, pd.DataFrame, Path]) -> MultimodalRSI:
    cohort, table, cache = images
    network = MultimodalRegressor(cohort=str(cohort), cache_dir=str(cache), random_state=0, **TINY)  # type: ignore[arg-type]
    return MultimodalRSI(network, calibration_fraction=0.5, measured="ignore").fit(table)


def test_conformal_quantile_rank_gives_exact_finite_sample_coverage() -> None:
    """Exchangeable residuals: P(new residual <= q) = ceil((n+1)(1-alpha)) / (n+1) exactly (Lei et al. 2018)."""
    rng = np.random.default_rng(0)
    for n, level in ((19, 0.9), (39, 0.8)):
        draws = rng.exponential(size=(20000, n + 1))
        q = np.array([conformal_quantile(row[:n], level) for row in draws])
        expected = math.ceil((n + 1) * level) / (n + 1)
        assert abs(np.mean(draws[:, n] <= q) - expected) < 4 * math.sqrt(expected * (1 - expected) / 20000)
    assert conformal_quantile(np.arange(9.0), 0.9) == 8.0  # rank ceil(10 * 0.9) = 9 of 9: the largest
    assert conformal_quantile(np.arange(8.0), 0.9) == math.inf  # rank 9 of 8: no finite guarantee


def test_split_conformal_coverage_on_a_noisy_linear_target() -> None:
    """Coverage of many held-out points, pooled over calibration splits, within the beta-binomial tolerance."""
    n_train, n_test, seeds = 400, 2000, range(6)
    test = simulate(n_test, 99)
    y = test[RSI_COLUMN].to_numpy()
    covered, widths = [], []
    for seed in seeds:
        model = tabular_rsi(measured="ignore", random_state=seed).fit(simulate(n_train, seed))
        point, bounds, source = model.predict_all(test)
        assert (source == "predicted").all() and not model.uses_images_
        np.testing.assert_allclose(bounds[:, 1] - point, model.quantile_, rtol=1e-9)
        assert model.quantile_ == model.quantile_without_images_  # no image branch: one taxonomy class
        covered.append(np.mean((y >= bounds[:, 0]) & (y <= bounds[:, 1])))
        widths.append(2 * model.quantile_)
    # coverage given the calibration set is Beta(k, n_cal + 1 - k) (Vovk 2012); test points add binomial noise
    n_cal = round(0.25 * n_train)
    k = math.ceil((n_cal + 1) * 0.9)
    a, b = k, n_cal + 1 - k
    mean = a / (a + b)
    var = (a * b / ((a + b) ** 2 * (a + b + 1)) + mean * (1 - mean) / n_test) / len(seeds)
    assert abs(np.mean(covered) - mean) < 3.5 * math.sqrt(var), covered
    # the network learnt: narrower than a constant's (2 z SD(y) = 0.34), above the noise floor (2 z 0.04 = 0.13)
    assert 2 * Z90 * 0.04 < np.mean(widths) < 0.25


def test_images_predict_source_and_the_image_free_quantile(images: tuple[Path, pd.DataFrame, Path],
                                                           image_model: MultimodalRSI, tmp_path: Path) -> None:
    cohort, table, _ = images
    model = image_model
    assert model.uses_images_ and model.n_calibration_ == 12 and model.n_calibration_with_images_ == 12
    # both quantiles recomputed from the calibration patients: with their crops, and with every image absent
    calibration = table[table["patient_id"].isin(model.calibration_ids_)]
    crops = model.network_.image_crops(calibration, cohort)
    y = calibration[RSI_COLUMN].to_numpy(dtype=float)
    with_images = model.network_.predict_crops(calibration, crops)
    image_free = model.network_.predict_crops(calibration, None)
    assert not np.allclose(with_images, image_free)
    assert model.quantile_ == conformal_quantile(np.abs(y - with_images), 0.9)
    assert model.quantile_without_images_ == conformal_quantile(np.abs(y - image_free), 0.9)
    # a cohort folder in which one patient has no image: that row is predicted without images
    partial = tmp_path / "partial"
    shutil.copytree(cohort, partial)
    rows = pd.read_csv(cohort / "images.csv", dtype=str, keep_default_na=False)
    lost = str(table["patient_id"].iloc[0])
    rows[rows["patient_id"] != lost].to_csv(partial / "images.csv", index=False)
    head = table.head(4)
    point, bounds, source = model.predict_all(head, cohort=partial)
    assert source.tolist() == ["predicted_without_images", "predicted", "predicted", "predicted"]
    assert model.predict_source(head, cohort=partial).tolist() == source.tolist()
    half = (bounds[:, 1] - bounds[:, 0]) / 2
    np.testing.assert_allclose(half, [model.quantile_without_images_] + [model.quantile_] * 3, rtol=1e-9)
    assert point[0] == pytest.approx(np.clip(model.network_.predict_crops(head.iloc[:1], None)[0], *model.clip))
    np.testing.assert_allclose(point[1:], model.predict(head, cohort=cohort)[1:])
    # patients the cohort does not know: image-free predictions, never an error
    strangers = head.assign(patient_id=[f"NEW{i}" for i in range(4)])
    assert (model.predict_source(strangers, cohort=cohort) == "predicted_without_images").all()
    assert np.isfinite(model.predict(strangers, cohort=cohort)).all()
    with pytest.raises(InputError, match="does not exist"):
        model.predict(head, cohort=tmp_path / "nowhere")


def test_prediction_never_reads_the_training_cohort(images: tuple[Path, pd.DataFrame, Path],
                                                    image_model: MultimodalRSI, tmp_path: Path) -> None:
    """Issue 15.6: rows whose patient_id equals a training patient's get no image without cohort= (the image-free
    path), and with cohort= another folder holding that ID, that folder's images, never the training ones."""
    cohort, table, _ = images
    model = image_model
    head = table.head(2)  # two training patients' IDs and features
    a, b = (str(p) for p in head["patient_id"])
    point, bounds, source = model.predict_all(head)  # no cohort=: the training cohort is not consulted
    assert source.tolist() == ["predicted_without_images"] * 2
    assert model.predict_source(head).tolist() == source.tolist()
    np.testing.assert_allclose(point, np.clip(model.network_.predict_crops(head, None), *model.clip), rtol=1e-12)
    np.testing.assert_allclose((bounds[:, 1] - bounds[:, 0]) / 2, model.quantile_without_images_, rtol=1e-9)
    # another cohort folder (a copy) in which patient a's images.csv rows name the files of patient b
    other = tmp_path / "other"
    shutil.copytree(cohort, other)
    rows = pd.read_csv(cohort / "images.csv", dtype=str, keep_default_na=False)
    swapped = rows[rows["patient_id"] == b].assign(patient_id=a)
    pd.concat([rows[rows["patient_id"] != a], swapped]).to_csv(other / "images.csv", index=False)
    row = head.iloc[:1]
    crops_b = model.network_.image_crops(table[table["patient_id"] == b], cohort)
    assert crops_b is not None
    expected = model.network_.predict_crops(row, Crops((a,), crops_b.images, crops_b.present))
    own = model.network_.predict_crops(row, model.network_.image_crops(row, cohort))
    # b's images give a's row another prediction (a tiny network: ~1e-6 apart, far above the 1e-12 checked below)
    assert np.abs(expected - own).min() > 1e-9
    point, _, source = model.predict_all(row, cohort=other)
    assert source.tolist() == ["predicted"]
    np.testing.assert_allclose(point, np.clip(expected, *model.clip), rtol=1e-12)
    np.testing.assert_allclose(model.predict(row, cohort=cohort), np.clip(own, *model.clip), rtol=1e-12)


def test_fitted_model_keeps_no_training_cohort_path(images: tuple[Path, pd.DataFrame, Path],
                                                    image_model: MultimodalRSI) -> None:
    """The fitted network forgets the folder; the pickle holds no path of it; an older pickle loads without it."""
    cohort, table, _ = images
    assert image_model.network_.cohort is None
    assert image_model.network.cohort == str(cohort)  # the unfitted configuration, in memory: get_params intact
    data = pickle.dumps(image_model)
    assert str(cohort).encode() not in data
    loaded = pickle.loads(data)
    assert loaded.network.cohort is None and loaded.network_.cohort is None
    head = table.head(3)
    np.testing.assert_array_equal(loaded.predict(head, cohort=cohort), image_model.predict(head, cohort=cohort))
    old = copy.deepcopy(image_model)
    old.network_.cohort = str(cohort)  # a model pickled before the rule: the fitted network names the folder
    assert pickle.loads(pickle.dumps(old)).network_.cohort is None
    unfitted = pickle.loads(pickle.dumps(clone(image_model)))  # configuration, not a fitted model: kept
    assert unfitted.network.cohort == str(cohort)


def test_image_free_interval_is_wider_when_images_carry_signal(images: tuple[Path, pd.DataFrame, Path]) -> None:
    """Image-only network on a target the crops carry (GTV size from the mask channel): without images it
    predicts a constant, so the Mondrian image-free quantile is wider than the one with images."""
    cohort, table, cache = images
    volume = np.log(pd.to_numeric(table["ct.gtv.original_shape_MeshVolume"]).to_numpy(dtype=float))
    y = 0.5 + 0.1 * (volume - volume.mean()) / volume.std()
    network = MultimodalRegressor(cohort=str(cohort), cache_dir=str(cache), groups=(), random_state=0,
                                  **{**TINY, "epochs": 25, "patience": 25, "lr": 3e-3})  # type: ignore[arg-type]
    model = MultimodalRSI(network, calibration_fraction=0.5, measured="ignore").fit(table, y)
    assert model.network_.n_tabular_features_ == 0
    assert model.quantile_without_images_ > model.quantile_


def test_measured_rsi_rules_are_rsisurrogates(images: tuple[Path, pd.DataFrame, Path],
                                              image_model: MultimodalRSI) -> None:
    """use / fuse / ignore, assay-noise interval and clipping: the same rules (one shared implementation)."""
    cohort, table, _ = images
    head = table.head(6).copy()
    head.loc[head.index[:2], RSI_COLUMN] = np.nan
    head.loc[head.index[2], RSI_COLUMN] = -0.2  # a rank-model RSI outside (0, 1): clipped
    surrogate = RSISurrogate(regressor="ridge", n_screen=10, cv=3, random_state=0).fit(table)
    own = image_model.predict_all(head, cohort=cohort)  # measured="ignore": the network's prediction everywhere
    measured = head[RSI_COLUMN].to_numpy(dtype=float)
    use = copy.deepcopy(image_model).set_params(measured="use")  # the same fit
    point, bounds, source = use.predict_all(head, cohort=cohort)
    s_point, s_bounds, s_source = surrogate.predict_all(head)
    assert source.tolist() == s_source.tolist() == ["predicted"] * 2 + ["measured"] * 4
    np.testing.assert_array_equal(point[2:], s_point[2:])  # measured rows: model-independent
    np.testing.assert_array_equal(bounds[2:], s_bounds[2:])
    assert point[2] == pytest.approx(0.001)
    half = Z90 * 0.05  # the assay-noise interval, clipped
    np.testing.assert_allclose(bounds[3:], np.clip(np.column_stack([measured[3:] - half, measured[3:] + half]),
                                                   0.001, 0.999), rtol=1e-9)
    np.testing.assert_allclose(point[:2], own[0][:2])
    use.set_params(measured="fuse", measured_sd=0.1)
    fused, fused_bounds, fused_source = use.predict_all(head, cohort=cohort)
    assert (fused_source[2:] == "fused").all()
    var_model = (image_model.quantile_ / Z90) ** 2
    weight = var_model / (var_model + 0.1**2)
    unclipped = weight * measured[3:] + (1 - weight) * own[0][3:]  # inverse-variance weights
    np.testing.assert_allclose(fused[3:], np.clip(unclipped, 0.001, 0.999), rtol=1e-9)
    fused_half = Z90 * math.sqrt(weight) * 0.1
    np.testing.assert_allclose(fused_bounds[3:], np.clip(np.column_stack([unclipped - fused_half,
                                                                          unclipped + fused_half]), 0.001, 0.999),
                               rtol=1e-9)


def test_estimator_api_and_bad_input(images: tuple[Path, pd.DataFrame, Path]) -> None:
    _, table, _ = images
    model = tabular_rsi(calibration_fraction=0.3)
    assert MultimodalRSI.accepts_images is True
    copy = clone(model)
    assert copy.get_params()["network__epochs"] == 20 and copy.get_params()["calibration_fraction"] == 0.3
    with pytest.raises(NotFittedError):
        copy.predict(table)
    with pytest.raises(InputError, match="calibration_fraction"):
        tabular_rsi(calibration_fraction=1.0).fit(table)
    with pytest.raises(InputError, match="patient_id"):
        tabular_rsi().fit(table.drop(columns="patient_id"))
    with pytest.raises(InputError, match="too few"):
        tabular_rsi().fit(table.head(4))
    fitted = tabular_rsi(measured="ignore").fit(table)
    # the label and other genomic, dose and outcome columns never reach the network
    assert not any(c.split(".")[0] in ("genomic", "dose", "treatment", "outcome")
                   for c in fitted.network_.tabular_.selector_.columns_)
    assert has_images(None, 3).tolist() == [False] * 3
    with pytest.raises(TypeError, match="cohort="):
        fitted.predict(table, workers=2)


PICKLE_CHECK = """
import sys, joblib, numpy as np
from radiogenomics.features.schema import read_feature_table
model = joblib.load(sys.argv[1])
point, bounds, source = model.predict_all(read_feature_table(sys.argv[2]))
np.savez(sys.argv[3], point=point, bounds=bounds, source=source.astype(str))
"""


def test_pickled_model_predicts_the_same_in_a_fresh_process(images: tuple[Path, pd.DataFrame, Path],
                                                             image_model: MultimodalRSI, tmp_path: Path,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    _, table, _ = images
    _, features = extracted_cohort(session_base(tmp_path_factory))
    model = copy.deepcopy(image_model).set_params(measured="use")
    joblib.dump(model, tmp_path / "model.joblib")
    proc = subprocess.run([sys.executable, "-c", PICKLE_CHECK, str(tmp_path / "model.joblib"), str(features),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    point, bounds, source = model.predict_all(table)
    with np.load(tmp_path / "out.npz") as loaded:
        np.testing.assert_array_equal(loaded["point"], point)
        np.testing.assert_array_equal(loaded["bounds"], bounds)
        assert loaded["source"].tolist() == source.tolist()


def test_prescriber_gives_the_network_the_cohort_and_flags_image_free_predictions(
        images: tuple[Path, pd.DataFrame, Path], image_model: MultimodalRSI, tmp_path: Path) -> None:
    """Through the prescriber: with the patients' cohort the network reads their crops (no missing_imaging);
    a patient it finds no image for gets the image-free prediction and interval, flagged missing_imaging;
    JSON rows (the REST API's path) behave like the DataFrame; a cohort folder that does not exist is an error."""
    from radiogenomics.features.schema import read_feature_schema
    from radiogenomics.models.prescriber import FLAG_MISSING_IMAGING, Prescriber
    from radiogenomics.models.rsi_measured import SOURCE_PREDICTED_WITHOUT_IMAGES

    cohort, table, _ = images
    _, features_path = extracted_cohort(cohort.parent)
    schema = read_feature_schema(features_path)
    prescriber = Prescriber.from_training(table, schema, image_model, applicability=None)
    rows = table.drop(columns=[c for c in table.columns if c.startswith("outcome.")]).head(4).copy()
    rows[RSI_COLUMN] = np.nan  # no expression: the RSI comes from the network
    with_images = prescriber.predict_records(rows, cohort=cohort)
    assert not any(FLAG_MISSING_IMAGING in r["flags"] for r in with_images)
    point, _, _ = image_model.predict_all(prescriber.prepare(rows)[0], cohort=cohort)
    np.testing.assert_allclose([r["rsi"] for r in with_images], point, rtol=1e-12)

    renamed = rows.assign(patient_id=[f"NEW{i}" for i in range(len(rows))])
    without = prescriber.predict_records(renamed, cohort=cohort)  # NEW* have no image there
    assert all(FLAG_MISSING_IMAGING in r["flags"] for r in without)
    _, free_bounds, free_source = image_model.predict_all(prescriber.prepare(renamed)[0], cohort=cohort)
    assert set(free_source) == {SOURCE_PREDICTED_WITHOUT_IMAGES}
    np.testing.assert_allclose([r["rsi_upper"] - r["rsi_lower"] for r in without],
                               np.minimum(free_bounds[:, 1], 0.999) - np.maximum(free_bounds[:, 0], 0.001),
                               rtol=1e-9)
    as_rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v.item() if hasattr(v, "item") else v)
                for k, v in row.items() if v is not pd.NA} for row in renamed.to_dict(orient="records")]
    assert [r["rsi"] for r in prescriber.predict_records(as_rows)] == [r["rsi"] for r in without]
    with pytest.raises(InputError):
        prescriber.predict_records(rows, cohort=tmp_path / "no-such-cohort")
