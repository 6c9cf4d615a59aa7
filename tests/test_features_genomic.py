"""Genomic features: RSI, signature scores, normalisation and the missing-gene policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from records_compare import ABS, REL

from radiogenomics.errors import InputError
from radiogenomics.features import genomic
from radiogenomics.features.genomic import Signature, genomic_features, signature_score


def _expr() -> pd.DataFrame:
    return pd.DataFrame({"A": [1.0, 2.0, 3.0], "B": [2.0, 2.0, 8.0], "C": [0.0, 4.0, 1.0], "D": [5.0, 5.0, 5.0]},
                        index=pd.Index(["P1", "P2", "P3"], name="patient_id"))


SIG = Signature(name="toy", kind="test", genes={"A": 1.0, "B": -1.0}, source="test")


def test_shipped_signatures_have_sources_and_genes() -> None:
    sigs = genomic.shipped_signatures()
    kinds = {s.kind for s in sigs}
    assert {"hypoxia", "toxicity"} <= kinds
    for s in sigs:
        assert len(s.genes) >= 5
        assert any(ch.isdigit() for ch in s.source)  # a year / DOI / volume
        assert set(s.genes.values()) <= {1.0, -1.0}
    hypoxia = next(s for s in sigs if s.kind == "hypoxia")
    assert len(hypoxia.genes) == 15 and "Toustrup" in hypoxia.source


def test_signature_score_raw_and_directions() -> None:
    res = signature_score(_expr(), SIG, normalisation="none")
    # mean of (+A, -B)
    assert res["score"].tolist() == pytest.approx([(1 - 2) / 2, (2 - 2) / 2, (3 - 8) / 2])
    assert (res["coverage"] == 1.0).all()


def test_sample_median_normalisation_is_single_sample() -> None:
    expr = _expr()
    norm = genomic.normalise_expression(expr, "sample_median")
    assert norm.loc["P1"].tolist() == pytest.approx((expr.loc["P1"] - expr.loc["P1"].median()).tolist())
    # a patient's normalised values do not depend on the other patients
    alone = genomic.normalise_expression(expr.loc[["P2"]], "sample_median")
    assert alone.loc["P2"].tolist() == pytest.approx(norm.loc["P2"].tolist())
    shifted = expr + 3.0  # a global batch shift cancels
    assert genomic.normalise_expression(shifted, "sample_median").to_numpy() == pytest.approx(norm.to_numpy())


def test_no_cohort_level_normalisation() -> None:
    with pytest.raises(InputError, match="FeatureScaler"):
        genomic.normalise_expression(_expr(), "cohort_zscore")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        genomic.normalise_expression(_expr(), "quantile")  # type: ignore[arg-type]


def test_missing_gene_policies() -> None:
    expr = _expr().drop(columns=["B"])
    with pytest.raises(InputError, match="B"):
        signature_score(expr, SIG, missing="error")
    res = signature_score(expr, SIG, missing="available", min_coverage=0.5, normalisation="none")
    assert res["coverage"].tolist() == [0.5, 0.5, 0.5]
    assert res["score"].tolist() == pytest.approx([1.0, 2.0, 3.0])
    strict = signature_score(expr, SIG, missing="available", min_coverage=0.8)
    assert strict["score"].isna().all()
    blank = _expr()
    blank.loc["P2", "A"] = np.nan
    with pytest.raises(InputError, match="P2"):
        signature_score(blank, SIG, missing="error")
    res = signature_score(blank, SIG, missing="available", min_coverage=0.5, normalisation="none")
    assert res.loc["P2", "score"] == pytest.approx(-2.0) and res.loc["P2", "coverage"] == 0.5


def test_genomic_features_on_synthetic_cohort(synth_cohort: Path) -> None:
    from radiogenomics.cohort import load_cohort
    from radiogenomics.radiobiology import rsi_score

    cohort = load_cohort(synth_cohort)
    assert cohort.expression is not None
    feats = genomic_features(cohort.expression)
    assert feats.index.tolist() == cohort.expression.index.tolist()
    assert np.allclose(feats["genomic.rsi"], rsi_score(cohort.expression).to_numpy())
    assert (feats["genomic.rsi_coverage"] == 1.0).all()
    assert (feats["genomic.hypoxia_toustrup2011_coverage"] == 1.0).all()
    # the synthetic generator makes hypoxia genes rise with the true hypoxic fraction
    truth = pd.read_csv(synth_cohort / "truth.csv", dtype={"patient_id": str}).set_index("patient_id")
    joined = feats.join(truth)
    rho = joined["genomic.hypoxia_toustrup2011"].corr(joined["hypoxic_fraction"], method="spearman")
    assert rho > 0.6
    rho_tox = joined["genomic.toxicity_candidate_genes"].corr(joined["tox_susceptibility"], method="spearman")
    assert rho_tox > 0.4


def test_blank_rsi_genes_give_nan_not_an_imputed_value(synth_cohort: Path) -> None:
    from radiogenomics.cohort import load_cohort
    from radiogenomics.radiobiology import rsi_score

    expr = load_cohort(synth_cohort).expression
    assert expr is not None
    expr = expr.copy()
    one_blank, all_blank = expr.index[0], expr.index[1]
    expr.loc[one_blank, "STAT1"] = np.nan
    expr.loc[all_blank, :] = np.nan
    feats = genomic_features(expr)
    assert np.isnan(feats.loc[one_blank, "genomic.rsi"]) and feats.loc[one_blank, "genomic.rsi_coverage"] == 0.9
    assert np.isnan(feats.loc[all_blank, "genomic.rsi"]) and feats.loc[all_blank, "genomic.rsi_coverage"] == 0.0
    assert "genomic.rsi_imputed" not in feats
    rest = expr.index[2:]
    assert feats.loc[rest, "genomic.rsi"].to_numpy() == pytest.approx(rsi_score(expr.loc[rest]).to_numpy())
    available = genomic.genomic_available(feats)
    assert not available[all_blank] and available[one_blank] and available[rest].all()
    with pytest.raises(InputError, match=str(one_blank)):
        genomic_features(expr, rsi_missing="raise")
    with pytest.raises(InputError, match="RSIImputer"):
        genomic_features(expr, rsi_missing="median")  # type: ignore[arg-type]


@pytest.mark.blas_sensitive
def test_each_row_depends_on_its_patient_alone(synth_cohort: Path) -> None:
    from radiogenomics.cohort import load_cohort

    expr = load_cohort(synth_cohort).expression
    assert expr is not None
    expr = expr.copy()
    expr.iloc[0, expr.columns.get_loc("JUN")] = np.nan  # the old cohort-median imputation made this row depend
    expr.iloc[3, expr.columns.get_loc("JUN")] += 5.0     # on the others' JUN values
    full = genomic_features(expr)
    for others in ([1, 2], [3, 4, 5], []):
        part = genomic_features(expr.iloc[[0, *others]])
        # the scores are matrix products over the batch's rows: to rounding, not bit for bit
        pd.testing.assert_series_equal(part.iloc[0], full.iloc[0], check_exact=False, rtol=REL, atol=ABS)
