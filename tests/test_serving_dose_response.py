"""Dose-response curves: TCP rises with dose and with alpha, NTCP is monotone and meets the record."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from prescriber_factory import Bundle

from radiogenomics.errors import InputError
from radiogenomics.models.prescriber import RSI_COLUMN, ModelInfo, Prescriber
from radiogenomics.radiobiology import alpha_from_rsi, load_rails, tcp_poisson
from radiogenomics.serving.dose_response import (
    CLONOGEN_DENSITY_PER_CC,
    DEFAULT_GTV_VOLUME_CC,
    GTV_VOLUME_COLUMNS,
    dose_response,
)

INFO = ModelInfo(name="radiogenomics-prescriber", version="1", uri="models:/radiogenomics-prescriber/1")
KEYS = {"patient_id", "total_dose_gy", "tcp", "tcp_low", "tcp_high", "ntcp", "rails", "recommended_total_dose_gy",
        "dose_for_target_gard_gy", "tcp_source"}


@pytest.fixture(scope="module")
def patient(bundle: Bundle) -> pd.DataFrame:
    """One patient with a measured RSI inside the LQ domain (alpha from the RSI)."""
    rsi = pd.to_numeric(bundle.table[RSI_COLUMN], errors="coerce")
    row = bundle.table.loc[rsi.between(0.2, 0.6)].iloc[[0]].reset_index(drop=True)
    return row.drop(columns=[c for c in row.columns if c.startswith("outcome.")])


@pytest.fixture(scope="module")
def curve(prescriber: Prescriber, patient: pd.DataFrame) -> dict:
    return dose_response(prescriber, patient, INFO)


def test_keys_rails_and_grid(curve: dict, patient: pd.DataFrame, prescriber: Prescriber) -> None:
    assert set(curve) == KEYS
    assert curve["patient_id"] == str(patient["patient_id"].iloc[0])
    doses = np.asarray(curve["total_dose_gy"])
    assert 61 <= doses.size <= 63 and (np.diff(doses) > 0).all() and doses[0] > 0
    site = load_rails().site(str(patient["clinical.site"].iloc[0]))
    assert curve["rails"] == {"min_total_dose_gy": site.min_total_dose_gy, "max_total_dose_gy": site.max_total_dose_gy}
    assert doses[-1] >= 1.25 * site.max_total_dose_gy
    record = prescriber.predict_records(patient, model=INFO)[0]
    assert curve["recommended_total_dose_gy"] == pytest.approx(record["recommended_total_dose_gy"], abs=0)
    assert curve["recommended_total_dose_gy"] in curve["total_dose_gy"]
    assert curve["dose_for_target_gard_gy"] == pytest.approx(record["dose_for_target_gard_gy"])
    assert len(curve["tcp"]) == doses.size and all(len(v) == doses.size for v in curve["ntcp"].values())


def test_tcp_rises_with_dose_and_matches_poisson_lq(curve: dict, patient: pd.DataFrame,
                                                     prescriber: Prescriber) -> None:
    """The band's ends are single-alpha Poisson TCP at the RSI interval's alpha ends; the curve is their average
    over alpha ~ N(alpha, sd), checked here against an independent quadrature (scipy.integrate.quad)."""
    from scipy import integrate, stats

    tcp, low, high = (np.asarray(curve[k]) for k in ("tcp", "tcp_low", "tcp_high"))
    for values in (tcp, low, high):
        assert (np.diff(values) >= -1e-12).all() and values[0] < 0.01 and values[-1] > 0.9
    assert (low <= high + 1e-12).all()  # the average is not inside the band everywhere: the tail of alpha counts
    record = prescriber.predict_records(patient, model=INFO)[0]
    volume_mm3 = float(patient[GTV_VOLUME_COLUMNS[0]].iloc[0])
    assert GTV_VOLUME_COLUMNS[0] in curve["tcp_source"] and "averaged over alpha" in curve["tcp_source"]
    n0 = CLONOGEN_DENSITY_PER_CC * volume_mm3 / 1000.0
    d, beta = record["dose_per_fraction_gy"], record["beta_per_gy2"]
    alpha_lo = -math.log(record["rsi_upper"]) / 2 - 2 * beta
    alpha_hi = -math.log(record["rsi_lower"]) / 2 - 2 * beta
    i = int(np.argmin(np.abs(tcp - 0.5)))
    dose = curve["total_dose_gy"][i]
    # the closed form of one uniform compartment: TCP = exp(-N0 exp(-D (alpha + beta d)))
    assert low[i] == pytest.approx(math.exp(-n0 * math.exp(-dose * (alpha_lo + beta * d))), rel=1e-9)
    assert high[i] == pytest.approx(math.exp(-n0 * math.exp(-dose * (alpha_hi + beta * d))), rel=1e-9)
    assert low[i] == pytest.approx(tcp_poisson(dose, n0, alpha_lo, beta, dose / d), rel=1e-9)
    sd = (alpha_hi - alpha_lo) / (2 * 1.6448536269514722)
    mean = record["alpha_per_gy"]
    density = stats.norm(mean, sd)

    def integrand(a: float) -> float:
        return math.exp(-n0 * math.exp(-dose * (a + beta * d))) * density.pdf(a)

    expected = integrate.quad(integrand, 0.0, mean + 10 * sd, points=[mean])[0] / (1 - density.cdf(0.0))
    assert tcp[i] == pytest.approx(expected, rel=1e-3)
    # not a step: the averaged curve rises over a wider dose range than the single-alpha curve at the mean alpha
    single = np.asarray(tcp_poisson(np.asarray(curve["total_dose_gy"]), n0, mean, beta,
                                    np.asarray(curve["total_dose_gy"]) / d, axis=()))
    doses = np.asarray(curve["total_dose_gy"])
    assert np.ptp(doses[(tcp > 0.05) & (tcp < 0.95)]) > np.ptp(doses[(single > 0.05) & (single < 0.95)])


def test_more_radiosensitive_patient_has_higher_tcp(prescriber: Prescriber, patient: pd.DataFrame) -> None:
    sensitive, resistant = patient.copy(), patient.copy()
    sensitive[RSI_COLUMN], resistant[RSI_COLUMN] = 0.30, 0.50
    assert alpha_from_rsi(0.30) > alpha_from_rsi(0.50)
    a = dose_response(prescriber, sensitive, INFO, n_points=31)
    b = dose_response(prescriber, resistant, INFO, n_points=31)
    common = sorted(set(a["total_dose_gy"]) & set(b["total_dose_gy"]))
    assert len(common) >= 31
    tcp_a = dict(zip(a["total_dose_gy"], a["tcp"], strict=True))
    tcp_b = dict(zip(b["total_dose_gy"], b["tcp"], strict=True))
    assert all(tcp_a[d] >= tcp_b[d] for d in common)
    assert any(tcp_a[d] > tcp_b[d] + 0.1 for d in common)
    assert b["dose_for_target_gard_gy"] > a["dose_for_target_gard_gy"]  # the resistant one needs more dose


def test_ntcp_is_monotone_and_is_the_toxicity_at_the_recommended_regimen(curve: dict, patient: pd.DataFrame,
                                                                          prescriber: Prescriber,
                                                                          bundle: Bundle) -> None:
    record = prescriber.predict_records(patient, model=INFO)[0]
    assert set(curve["ntcp"]) == set(record["toxicity"]) == {"xerostomia_grade_ge2"}
    i = curve["total_dose_gy"].index(curve["recommended_total_dose_gy"])
    table, _ = prescriber.prepare(patient)
    model = bundle.toxicity["xerostomia"]
    # the toxicity at the recommended regimen: recommended_total_dose_gy in recommended_n_fractions fractions
    at_regimen = model.predict_proba_at_dose(table, prescription_gy=record["recommended_total_dose_gy"],
                                             n_fractions=record["recommended_n_fractions"])[0, 1]
    ntcp = np.asarray(curve["ntcp"]["xerostomia_grade_ge2"])
    assert ((ntcp >= 0) & (ntcp <= 1)).all()
    assert (np.diff(ntcp) >= -1e-12).all()
    assert ntcp[-1] > ntcp[0]
    assert ntcp[i] == pytest.approx(at_regimen, rel=1e-9, abs=1e-12)
    assert ntcp[i] == pytest.approx(record["toxicity"]["xerostomia_grade_ge2"], rel=1e-9, abs=1e-12)
    # at the record's dose per fraction d the curve's plan has D/d fractions: a higher d gives a higher NTCP
    d = record["dose_per_fraction_gy"]
    j = i - 5
    dose = curve["total_dose_gy"][j]
    expected = model.predict_proba_at_dose(table, prescription_gy=dose, n_fractions=dose / d)[0, 1]
    assert ntcp[j] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    hypo = model.predict_proba_at_dose(table, prescription_gy=dose, n_fractions=dose / (d + 0.5))[0, 1]
    assert hypo > expected


def test_regimen_and_missing_volume(prescriber: Prescriber, patient: pd.DataFrame) -> None:
    no_volume = patient.drop(columns=[c for c in GTV_VOLUME_COLUMNS if c in patient.columns])
    hypo = dose_response(prescriber, no_volume, INFO, dose_per_fraction_gy=2.2, target_gard=40.0)
    assert f"default {DEFAULT_GTV_VOLUME_CC:g} cm^3" in hypo["tcp_source"]
    assert "2.2 Gy per fraction" in hypo["tcp_source"]
    record = prescriber.predict_records(no_volume, model=INFO, dose_per_fraction_gy=2.2, target_gard=40.0)[0]
    assert hypo["dose_for_target_gard_gy"] == pytest.approx(record["dose_for_target_gard_gy"])
    assert record["target_gard"] == 40.0


def test_bad_input(prescriber: Prescriber, bundle: Bundle, patient: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="exactly one patient"):
        dose_response(prescriber, bundle.table.iloc[:2], INFO)
    with pytest.raises(InputError, match="exactly one patient"):
        dose_response(prescriber, bundle.table.iloc[:0], INFO)
    with pytest.raises(InputError, match="n_points"):
        dose_response(prescriber, patient, INFO, n_points=1)
    with pytest.raises(InputError, match="unknown feature"):
        dose_response(prescriber, patient.assign(**{"ct.gtv.no_such_feature": 1.0}), INFO)
    with pytest.raises(InputError, match="n_fractions"):
        dose_response(prescriber, patient, INFO, n_fractions=-3)
