"""RSI: hand-computed sample, rank conventions, gene mapping, missing-gene policies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radiogenomics.errors import InputError
from radiogenomics.radiobiology import (
    RSI_COEFFICIENTS,
    RSI_GENES,
    rsi_is_radioresistant,
    rsi_score,
    score_rsi,
    theoretical_rsi_range,
)

# One sample with distinct values: ranks (lowest = 1) written out by hand below.
SAMPLE = {"AR": 5.0, "JUN": 3.0, "STAT1": 8.0, "PRKCB": 1.0, "RELA": 7.0, "ABL1": 10.0, "SUMO1": 2.0,
          "CDK1": 9.0, "HDAC1": 4.0, "IRF1": 6.0}
HAND_RSI = (-0.00980092741843779 * 5 + 0.0128282697929755 * 3 + 0.0254552046046931 * 8
            - 0.00175888592095915 * 1 - 0.00381713588908642 * 7 + 0.107021274358643 * 10
            - 0.00025093287356907 * 2 - 0.00924314364533049 * 9 - 0.020446868981449 * 4
            - 0.0441682719957224 * 6)


def _frame(rows: dict[str, dict[str, float]]) -> pd.DataFrame:
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "patient_id"
    return df


def test_genes_and_coefficients_in_slot_order() -> None:
    assert RSI_GENES == ("AR", "JUN", "STAT1", "PRKCB", "RELA", "ABL1", "SUMO1", "CDK1", "HDAC1", "IRF1")
    assert RSI_COEFFICIENTS["ABL1"] == 0.107021274358643
    assert RSI_COEFFICIENTS["IRF1"] == -0.0441682719957224
    assert list(RSI_COEFFICIENTS) == list(RSI_GENES)


def test_hand_computed_sample() -> None:
    frame = _frame({"P1": SAMPLE})
    rsi = rsi_score(frame)
    assert frame.index.name == "patient_id" and frame.shape == (1, 10)  # input untouched
    assert rsi.name == "rsi"
    assert rsi.index.tolist() == ["P1"]
    assert rsi["P1"] == pytest.approx(HAND_RSI, abs=1e-14)
    assert 0.0 < HAND_RSI < 1.0


def test_log2_values_are_ranked_not_used_directly() -> None:
    # a monotone transform of the sample keeps the ranks, hence the RSI
    transformed = {g: 2.0 ** v + 100.0 for g, v in SAMPLE.items()}
    rsi = rsi_score(_frame({"A": SAMPLE, "B": transformed}))
    assert rsi["B"] == pytest.approx(rsi["A"], abs=1e-14)


def test_ranks_are_within_sample_not_across_patients() -> None:
    other = {g: -v for g, v in SAMPLE.items()}  # reversed ranks
    alone = rsi_score(_frame({"A": SAMPLE}))["A"]
    together = rsi_score(_frame({"A": SAMPLE, "Z": other}))
    assert together["A"] == pytest.approx(alone, abs=1e-14)
    reversed_expected = sum(RSI_COEFFICIENTS[g] * (11 - r) for g, r in
                            zip(SAMPLE, [5, 3, 8, 1, 7, 10, 2, 9, 4, 6], strict=True))
    assert together["Z"] == pytest.approx(reversed_expected, abs=1e-14)


def test_ties_get_average_rank() -> None:
    tied = dict(SAMPLE)
    tied["JUN"] = 1.0  # ties PRKCB (lowest): both get rank 1.5; SUMO1 becomes 3, ...
    values = np.array([tied[g] for g in RSI_GENES])
    # hand ranks: PRKCB=1.5, JUN=1.5, SUMO1=3, HDAC1=4, AR=5, IRF1=6, RELA=7, STAT1=8, CDK1=9, ABL1=10
    ranks = {"PRKCB": 1.5, "JUN": 1.5, "SUMO1": 3, "HDAC1": 4, "AR": 5, "IRF1": 6, "RELA": 7, "STAT1": 8,
             "CDK1": 9, "ABL1": 10}
    assert values.size == 10
    expected = sum(RSI_COEFFICIENTS[g] * r for g, r in ranks.items())
    assert rsi_score(_frame({"T": tied}))["T"] == pytest.approx(expected, abs=1e-14)


def test_patient_id_column_and_extra_genes() -> None:
    df = pd.DataFrame([{"patient_id": "P7", **SAMPLE, "TP53": 99.0}])
    rsi = rsi_score(df)
    assert rsi.index.tolist() == ["P7"]
    assert rsi["P7"] == pytest.approx(HAND_RSI, abs=1e-14)


def test_cdk1_slot_mapped_to_pak2() -> None:
    row = dict(SAMPLE)
    row["PAK2"] = row.pop("CDK1")
    df = _frame({"P1": row})
    with pytest.raises(InputError, match="CDK1"):
        rsi_score(df)
    rsi = rsi_score(df, gene_map={"CDK1": "PAK2"})
    assert rsi["P1"] == pytest.approx(HAND_RSI, abs=1e-14)
    # with both columns present the map decides which one fills the slot
    both = dict(SAMPLE, PAK2=0.5)  # PAK2 lowest -> CDK1 slot rank 1
    mapped = rsi_score(_frame({"P1": both}), gene_map={"CDK1": "PAK2"})["P1"]
    assert mapped != pytest.approx(HAND_RSI, abs=1e-6)
    with pytest.raises(InputError, match="gene_map"):
        rsi_score(df, gene_map={"NOTAGENE": "PAK2"})


def test_missing_gene_column_raises_naming_gene() -> None:
    row = {g: v for g, v in SAMPLE.items() if g != "STAT1"}
    with pytest.raises(InputError, match="STAT1"):
        rsi_score(_frame({"P1": row}))
    # the column is absent for everybody: a cohort median cannot be computed either
    with pytest.raises(InputError, match="STAT1"):
        rsi_score(_frame({"P1": row}), missing="median")


def test_blank_value_raises_unless_policy_and_is_flagged() -> None:
    rows = {"A": dict(SAMPLE), "B": dict(SAMPLE, HDAC1=np.nan), "C": dict(SAMPLE, HDAC1=6.5)}
    df = _frame(rows)
    with pytest.raises(InputError, match="HDAC1") as err:
        rsi_score(df)
    assert "B" in str(err.value)
    scores = score_rsi(df, missing="median")
    assert scores.imputed_genes == {"B": ("HDAC1",)}
    assert scores.flags == {"B": ["missing_genomics"]}
    # median of 4.0 and 6.5 = 5.25 -> same ranks as filling 5.25 by hand
    filled = rsi_score(_frame({"B": dict(SAMPLE, HDAC1=5.25)}))["B"]
    assert scores.rsi["B"] == pytest.approx(filled, abs=1e-14)
    series = rsi_score(df, missing="mean")
    assert series.attrs["flags"] == {"B": ["missing_genomics"]}
    assert "A" not in series.attrs["imputed_genes"]


def test_impute_values_policy_fills_absent_column() -> None:
    row = {g: v for g, v in SAMPLE.items() if g != "IRF1"}
    scores = score_rsi(_frame({"P1": row}), missing="values", impute_values={"IRF1": 6.0})
    assert scores.rsi["P1"] == pytest.approx(HAND_RSI, abs=1e-14)
    assert scores.flags["P1"] == ["missing_genomics"]
    with pytest.raises(InputError, match="impute_values"):
        score_rsi(_frame({"P1": row}), missing="values")


def test_bad_tables() -> None:
    with pytest.raises(InputError, match="infinite"):
        rsi_score(_frame({"P1": dict(SAMPLE, AR=np.inf)}))
    with pytest.raises(InputError, match="not numeric"):
        rsi_score(pd.DataFrame([{"patient_id": "P1", **SAMPLE, "AR": "high"}]))
    with pytest.raises(InputError, match="duplicate"):
        rsi_score(pd.DataFrame([{"patient_id": "P1", **SAMPLE}, {"patient_id": "P1", **SAMPLE}]))
    with pytest.raises(InputError, match="missing must be"):
        rsi_score(_frame({"P1": SAMPLE}), missing="zero")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="DataFrame"):
        rsi_score([SAMPLE])  # type: ignore[arg-type]


def test_theoretical_range_and_threshold() -> None:
    lo, hi = theoretical_rsi_range()
    assert lo == pytest.approx(-0.605, abs=1e-3)
    assert hi == pytest.approx(1.219, abs=1e-3)
    assert rsi_is_radioresistant(0.5)
    assert not rsi_is_radioresistant(0.4)
    assert rsi_is_radioresistant(0.4, threshold=0.3745)
