"""The generator's promised relations hold statistically on a larger cohort (160 patients, 28^3 voxels).

These go through the package's own ``rsi_score``; tests/test_synth_independent.py recomputes RSI, TCP and NTCP
from the published formulas without the package.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import SimpleITK as sitk
from scipy.stats import spearmanr

from radiogenomics.radiobiology import rsi_score
from radiogenomics.synthetic import generate_cohort
from radiogenomics.synthetic.genomics import HYPOXIA_GENES

N_PATIENTS = 160


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth_rel") / "cohort"
    return generate_cohort(out, n_patients=N_PATIENTS, seed=2024, grid_size=28, workers=2)


@pytest.fixture(scope="module")
def tables(cohort: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(cohort / f"{name}.csv", dtype={"patient_id": str}).set_index("patient_id")
            for name in ("patients", "truth", "expression")}


@pytest.fixture(scope="module")
def image_features(cohort: Path, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per patient, from the written images only: GTV FMISO/FDG means, GTV CT SD, parotid mean dose."""
    rows = {}
    for pid in tables["patients"].index:
        folder = cohort / "images" / pid
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labels.nii.gz")))
        read = {name: sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{name}.nii.gz"))).astype(float)
                for name in ("ct", "pet_fdg", "pet_fmiso", "dose")}
        gtv = labels == 1
        parotids = (labels == 2) | (labels == 3)
        rows[pid] = {"fmiso_gtv_mean": read["pet_fmiso"][gtv].mean(), "fdg_gtv_mean": read["pet_fdg"][gtv].mean(),
                     "ct_gtv_sd": read["ct"][gtv].std(), "parotid_mean_dose": read["dose"][parotids].mean()}
    return pd.DataFrame.from_dict(rows, orient="index")


def _rho(a: object, b: object) -> float:
    return float(spearmanr(a, b).statistic)


def test_rsi_from_expression_tracks_truth_alpha(tables: dict[str, pd.DataFrame]) -> None:
    rsi = rsi_score(tables["expression"])  # the published 10-gene rank model (Eschrich 2009)
    alpha = tables["truth"].loc[rsi.index, "alpha_per_gy"]
    rho = _rho(rsi, alpha)
    assert rho <= -0.5
    assert rho > -0.95  # noise and batch effects keep it imperfect


def test_fmiso_uptake_follows_hypoxia(tables: dict[str, pd.DataFrame], image_features: pd.DataFrame) -> None:
    truth = tables["truth"].loc[image_features.index]
    assert _rho(image_features["fmiso_gtv_mean"], truth["hypoxic_fraction"]) > 0.4
    assert _rho(image_features["fmiso_gtv_mean"], truth["median_po2_mmhg"]) < -0.4


def test_fdg_uptake_follows_clonogen_density(tables: dict[str, pd.DataFrame],
                                             image_features: pd.DataFrame) -> None:
    truth = tables["truth"].loc[image_features.index]
    assert _rho(image_features["fdg_gtv_mean"], truth["log10_clonogen_density"]) > 0.5


def test_ct_texture_carries_imperfect_alpha_signal(tables: dict[str, pd.DataFrame],
                                                   image_features: pd.DataFrame) -> None:
    """GTV HU standard deviation (first-order texture): radioresistant tumours are more heterogeneous."""
    rho = _rho(image_features["ct_gtv_sd"], tables["truth"].loc[image_features.index, "alpha_per_gy"])
    assert -0.9 < rho < -0.2


def test_xerostomia_rises_with_parotid_mean_dose(tables: dict[str, pd.DataFrame],
                                                 image_features: pd.DataFrame) -> None:
    dose = image_features["parotid_mean_dose"]
    assert dose.min() < 15.0 and dose.max() > 38.0  # plans vary (about 10-50 Gy)
    grade2 = (tables["patients"].loc[dose.index, "tox_xerostomia"] >= 2).astype(float)
    assert _rho(dose, grade2) > 0.1
    low, high = dose <= dose.quantile(1 / 3), dose >= dose.quantile(2 / 3)
    assert grade2[high].mean() > grade2[low].mean() + 0.05
    # the truth NTCP rises with the dose read back from the images
    assert _rho(dose, tables["truth"].loc[dose.index, "ntcp_xerostomia"]) > 0.6


def test_local_control_is_realistic(tables: dict[str, pd.DataFrame]) -> None:
    p, t = tables["patients"], tables["truth"]
    assert 0.55 <= 1 - t["local_failure"].mean() <= 0.88  # H&N cohorts: LC ~ 60-80 %
    assert p["lc_event"].sum() >= 10 and (p["lc_event"] == 0).sum() >= 10
    assert p.loc[p["lc_event"] == 1].index.isin(t.index[t["local_failure"] == 1]).all()
    # TCP spans a useful range and failures concentrate where TCP is low
    assert t["tcp_true"].min() < 0.1 and t["tcp_true"].max() > 0.9
    assert t.loc[t["local_failure"] == 1, "tcp_true"].mean() < t.loc[t["local_failure"] == 0, "tcp_true"].mean()
    # radioresistant (high RSI) tumours fail more often
    assert _rho(t["rsi_true"], t["local_failure"]) > 0.1


def test_hypoxia_genes_follow_hypoxic_fraction(tables: dict[str, pd.DataFrame]) -> None:
    ex = tables["expression"]
    centred = ex.sub(ex.median(axis=1), axis=0)
    score = centred[list(HYPOXIA_GENES)].mean(axis=1)
    assert _rho(score, tables["truth"].loc[score.index, "hypoxic_fraction"]) > 0.6


def test_centres_differ(tables: dict[str, pd.DataFrame], image_features: pd.DataFrame) -> None:
    """Batch effects: expression shifts by centre."""
    p = tables["patients"]
    assert p["center"].nunique() >= 3
    ex = tables["expression"]
    level = ex.mean(axis=1).groupby(p.loc[ex.index, "center"]).mean()
    assert level.max() - level.min() > 0.2
