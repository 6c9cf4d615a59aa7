"""The synthetic generator checked from first principles, without radiogenomics.radiobiology.

tests/test_synth_relations.py checks the generator through the package's own ``rsi_score``, so a convention
inverted in both places (ranks, OER, the sign of a probit) would pass there. Here every quantity is recomputed
from the published formulas and constants (/work/shared/brief/radiobiology.md, sources below) and compared
with what the generator wrote; each check also shows that the inverted convention fails it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm, rankdata, spearmanr

from radiogenomics.synthetic import generate_cohort

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
from _common import VoxelTruth, synthetic_voxel_truth  # noqa: E402  (notebooks/_common.py)

N_PATIENTS = 100

#: Eschrich et al., IJROBP 2009;75:489, rank model, full precision from the authors' U133Predictor.R
#: (rsi-rnaseq; slot order AR, c-Jun, STAT1, PKC-beta, RelA, c-Abl, SUMO1, CDK1, HDAC1, IRF1)
RSI_COEFFICIENTS = {"AR": -0.00980092741843779, "JUN": 0.0128282697929755, "STAT1": 0.0254552046046931,
                    "PRKCB": -0.00175888592095915, "RELA": -0.00381713588908642, "ABL1": 0.107021274358643,
                    "SUMO1": -0.00025093287356907, "CDK1": -0.00924314364533049, "HDAC1": -0.020446868981449,
                    "IRF1": -0.0441682719957224}
#: GARD convention (Scott et al., Lancet Oncol 2017;18:202): beta fixed at 0.05 Gy^-2
BETA_GY2 = 0.05
#: oxygen effect (Alper & Howard-Flanders, Nature 1956;178:978): conventional OER_max 3, K 3 mmHg
OER_MAX, K_MMHG = 3.0, 3.0
#: xerostomia LKB (Dijkema et al., IJROBP 2010;78:449; QUANTEC, Deasy et al. IJROBP 2010;76:S58), n = 1
TD50_GY, M_SLOPE = 39.9, 0.40
#: GTV dose of the synthetic plan: at most 105 % of the prescription (docs/synthetic-cohort.md, DOSE)
MAX_GTV_DOSE_FRACTION = 1.05


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_cohort(tmp_path_factory.mktemp("synth_indep") / "cohort", n_patients=N_PATIENTS, seed=7,
                           grid_size=20, workers=1)


@pytest.fixture(scope="module")
def tables(cohort: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(cohort / f"{name}.csv", dtype={"patient_id": str}).set_index("patient_id")
            for name in ("patients", "truth", "expression")}


@pytest.fixture(scope="module")
def voxels(cohort: Path, tables: dict[str, pd.DataFrame]) -> dict[str, VoxelTruth]:
    maps = synthetic_voxel_truth(cohort, tables["truth"].index)
    assert len(maps) == N_PATIENTS
    return maps


def rsi_eschrich(expression: pd.DataFrame, *, highest_first: bool = False) -> pd.Series:
    """RSI = sum_g c_g rank_g, ranks within each sample over the 10 genes, 1 = lowest (R's ``rank()``, ties
    averaged), no intercept. ``highest_first`` gives the inverted ranking (1 = highest), for the negative check."""
    values = expression[list(RSI_COEFFICIENTS)].to_numpy(dtype=np.float64)
    ranks = rankdata(-values if highest_first else values, axis=1, method="average")
    return pd.Series(ranks @ np.array(list(RSI_COEFFICIENTS.values())), index=expression.index)


def voxel_tcp(v: VoxelTruth, *, inverted_oer: bool = False) -> float:
    """Voxel Poisson TCP with hypoxia (Webb & Nahum, PMB 1993;38:653): prod_i exp(-N_i SF_i),
    SF_i = exp(-n (alpha OMF_i d_i + beta OMF_i^2 d_i^2)), OMF(p) = (OER_max p + K) / (OER_max (p + K)) <= 1."""
    d = v.dose_gy / v.n_fractions
    omf = (OER_MAX * v.po2_mmhg + K_MMHG) / (OER_MAX * (v.po2_mmhg + K_MMHG))
    if inverted_oer:  # hypoxic cells more sensitive: the convention error this test must catch
        omf = 1.0 / omf
    log_sf = -v.n_fractions * (v.alpha_per_gy * omf * d + v.beta_per_gy2 * omf**2 * d**2)
    return math.exp(-float(np.sum(v.clonogens * np.exp(log_sf))))


def _rho(a: object, b: object) -> float:
    return float(spearmanr(a, b).statistic)


def test_truth_alpha_follows_gard_convention(tables: dict[str, pd.DataFrame]) -> None:
    """alpha = -ln(RSI)/2 - 2 beta (SF2 = RSI; Scott 2017), beta = 0.05, alpha/beta consistent."""
    truth = tables["truth"]
    assert np.allclose(truth["beta_per_gy2"], BETA_GY2)
    expected = -np.log(truth["rsi_true"]) / 2.0 - 2.0 * BETA_GY2
    assert np.allclose(truth["alpha_per_gy"], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(truth["alpha_per_gy"], np.log(truth["rsi_true"]) / 2.0 - 2.0 * BETA_GY2, atol=0.05)
    assert np.allclose(truth["alpha_beta_gy"], truth["alpha_per_gy"] / truth["beta_per_gy2"], rtol=1e-4)


def test_rsi_from_expression_with_published_coefficients(tables: dict[str, pd.DataFrame]) -> None:
    """RSI from expression.csv (published rank model) tracks the generator's RSI: high RSI = radioresistant."""
    truth = tables["truth"]
    rsi = rsi_eschrich(tables["expression"]).reindex(truth.index)
    assert rsi.between(-0.61, 1.22).all()  # the rank model's theoretical range
    rho_alpha = _rho(rsi, truth["alpha_per_gy"])
    assert -0.95 < rho_alpha <= -0.5  # noise and batch effects keep it imperfect (docs: about -0.65 to -0.75)
    assert _rho(rsi, truth["rsi_true"]) >= 0.5
    assert (rsi - truth["rsi_true"]).abs().median() < 0.15
    # the inverted ranking (1 = highest expression) is 11 * sum(c) - RSI: the correlation flips sign
    inverted = rsi_eschrich(tables["expression"], highest_first=True).reindex(truth.index)
    assert np.allclose(inverted, 11.0 * sum(RSI_COEFFICIENTS.values()) - rsi)
    assert _rho(inverted, truth["alpha_per_gy"]) == pytest.approx(-rho_alpha) and -rho_alpha >= 0.5


def test_tcp_closed_form_matches_truth(tables: dict[str, pd.DataFrame], voxels: dict[str, VoxelTruth]) -> None:
    """The voxel Poisson TCP recomputed here equals tcp_true (6 significant digits) for every patient."""
    truth = tables["truth"]
    tcp = pd.Series({pid: voxel_tcp(v) for pid, v in voxels.items()}).reindex(truth.index)
    assert np.allclose(tcp, truth["tcp_true"], rtol=1e-5, atol=1e-6)
    clonogens = pd.Series({pid: float(v.clonogens.sum()) for pid, v in voxels.items()}).reindex(truth.index)
    assert np.allclose(clonogens, truth["clonogens_total"], rtol=1e-5)
    assert tcp.between(0.05, 0.95).sum() >= 10  # the comparison is not all 0s and 1s
    inverted = pd.Series({pid: voxel_tcp(v, inverted_oer=True) for pid, v in voxels.items()}).reindex(truth.index)
    assert ((inverted - truth["tcp_true"]).abs() > 1e-3).sum() >= 10


def test_tcp_bounded_by_oxic_one_compartment_model(tables: dict[str, pd.DataFrame],
                                                   voxels: dict[str, VoxelTruth]) -> None:
    """From truth.csv and patients.csv alone: hypoxia only protects (OMF <= 1) and the GTV gets at most 105 % of
    the prescription, so tcp_true <= exp(-N exp(-n (alpha d + beta d^2))) at d = 1.05 Rx / n (all oxic)."""
    truth, patients = tables["truth"], tables["patients"].reindex(tables["truth"].index)
    n = patients["n_fractions"].astype(float)
    assert max(float(v.dose_gy.max()) / v.total_dose_gy for v in voxels.values()) <= MAX_GTV_DOSE_FRACTION
    d = MAX_GTV_DOSE_FRACTION * patients["total_dose_gy"] / n
    bound = np.exp(-truth["clonogens_total"] * np.exp(-n * (truth["alpha_per_gy"] * d + truth["beta_per_gy2"] * d**2)))
    assert (truth["tcp_true"] <= bound + 1e-6).all()
    inverted = pd.Series({pid: voxel_tcp(v, inverted_oer=True) for pid, v in voxels.items()}).reindex(truth.index)
    assert (inverted > bound + 1e-3).sum() >= 5  # hypoxic tumours break the bound under the inverted OER


def test_local_failure_rate_matches_tcp(tables: dict[str, pd.DataFrame], voxels: dict[str, VoxelTruth]) -> None:
    """Uncensored failures are Bernoulli(1 - TCP): the cohort rate is within 3 standard errors of mean(1 - TCP)."""
    truth = tables["truth"]
    tcp = pd.Series({pid: voxel_tcp(v) for pid, v in voxels.items()}).reindex(truth.index)
    se = math.sqrt(float((tcp * (1 - tcp)).sum())) / len(tcp)
    assert abs(truth["local_failure"].mean() - (1 - tcp).mean()) <= 3 * se
    inverted = pd.Series({pid: voxel_tcp(v, inverted_oer=True) for pid, v in voxels.items()}).reindex(truth.index)
    assert abs(truth["local_failure"].mean() - (1 - inverted).mean()) > 3 * se


def test_xerostomia_lkb_from_dvh(cohort: Path, tables: dict[str, pd.DataFrame]) -> None:
    """LKB NTCP = Phi((s gEUD - TD50) / (m TD50)) with n = 1 (gEUD = mean dose of both parotids, from dvh.csv)."""
    truth, patients = tables["truth"], tables["patients"].reindex(tables["truth"].index)
    dvh = pd.read_csv(cohort / "dvh.csv", dtype={"patient_id": str})
    parotids = dvh[dvh["structure"].isin(["parotid_l", "parotid_r"])]
    weighted = parotids.assign(dv=parotids["dose_gy"] * parotids["volume_cc"]).groupby("patient_id")
    mean_dose = (weighted["dv"].sum() / weighted["volume_cc"].sum()).reindex(truth.index)
    assert np.allclose(mean_dose, truth["parotid_mean_dose_gy"], atol=0.25)  # 0.5 Gy bins
    geud = truth["tox_susceptibility"] * mean_dose
    ntcp = norm.cdf((geud - TD50_GY) / (M_SLOPE * TD50_GY))
    assert np.allclose(ntcp, truth["ntcp_xerostomia"], atol=0.01)
    inverted = norm.cdf((TD50_GY - geud) / (M_SLOPE * TD50_GY))
    assert np.abs(inverted - truth["ntcp_xerostomia"]).max() > 0.2
    # P(grade >= 2) = NTCP: the observed grade >= 2 rate is within 3 standard errors of the mean NTCP
    se = math.sqrt(float(np.sum(ntcp * (1 - ntcp)))) / len(ntcp)
    rate = float((patients["tox_xerostomia"] >= 2).mean())
    assert abs(rate - float(np.mean(ntcp))) <= 3 * se
    assert abs(rate - float(np.mean(inverted))) > 3 * se
