"""Radiosensitivity Index (RSI) from the 10-gene expression signature.

Source: Eschrich SA et al., "Systems biology modeling of the radiation sensitivity network: a biomarker
discovery platform", Int J Radiat Oncol Biol Phys 2009;75:489-496, and the authors' reference
implementation (``rsi-rnaseq``, ``src/U133Predictor.R``).

``RSI = sum_g c_g * rank_g`` with **no intercept**; ``rank_g`` is the rank of gene ``g`` among the ten
signature genes *within one sample* (lowest expression = 1, highest = 10, ties averaged). High RSI means
radioresistant (RSI is read as the surviving fraction at 2 Gy, SF2).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from radiogenomics.errors import InputError

logger = logging.getLogger(__name__)

#: HGNC symbols of the 10 signature genes, in slot order (Eschrich 2009, Table 1).
RSI_GENES: tuple[str, ...] = (
    "AR", "JUN", "STAT1", "PRKCB", "RELA", "ABL1", "SUMO1", "CDK1", "HDAC1", "IRF1",
)

#: Slot names as printed in the paper, in the same order as :data:`RSI_GENES`.
RSI_SLOT_NAMES: tuple[str, ...] = (
    "AR", "c-Jun", "STAT1", "PKC-beta", "RelA", "c-Abl", "SUMO1", "CDK1 (p34cdc2)", "HDAC1", "IRF1",
)

#: Rank coefficients, full precision, from the authors' reference code (no intercept).
RSI_COEFFICIENTS: dict[str, float] = {
    "AR": -0.00980092741843779,
    "JUN": 0.0128282697929755,
    "STAT1": 0.0254552046046931,
    "PRKCB": -0.00175888592095915,
    "RELA": -0.00381713588908642,
    "ABL1": 0.107021274358643,
    "SUMO1": -0.00025093287356907,
    "CDK1": -0.00924314364533049,
    "HDAC1": -0.020446868981449,
    "IRF1": -0.0441682719957224,
}

#: RSI threshold between radiosensitive and radioresistant tumours (Eschrich 2009; verified).
RSI_THRESHOLD_2009 = 0.46
#: Threshold used in later literature (*unverified* default; pass it explicitly if you rely on it).
RSI_THRESHOLD_LATER = 0.3745

MissingPolicy = Literal["raise", "median", "mean", "values"]

#: Flag added to a patient's record when any RSI gene was imputed (contract section 2).
FLAG_MISSING_GENOMICS = "missing_genomics"


@dataclass(frozen=True)
class RSIScores:
    """Result of :func:`score_rsi`.

    ``rsi``: Series named ``"rsi"`` indexed by patient_id. ``imputed_genes``: patient_id -> the signature
    genes (HGNC slot symbols) whose value was imputed. ``flags``: patient_id -> contract flags
    (``"missing_genomics"`` when anything was imputed).
    """

    rsi: pd.Series
    imputed_genes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    flags: dict[str, list[str]] = field(default_factory=dict)


def theoretical_rsi_range() -> tuple[float, float]:
    """Lowest and highest RSI the model can produce (rank 10 on the largest positive coefficients, ...).

    About -0.605 to 1.219 (radiobiology brief); clinical cohorts lie roughly in 0..1.
    """
    coefs = np.sort(np.array(list(RSI_COEFFICIENTS.values())))
    ranks = np.arange(1, 11, dtype=np.float64)
    return float(coefs @ ranks[::-1]), float(coefs @ ranks)


def _expression_table(expression: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(expression, pd.DataFrame):
        raise InputError(f"expression must be a pandas DataFrame, got {type(expression).__name__}.",
                         fix="pass patients as rows and genes as columns.")
    table = expression.set_index("patient_id") if "patient_id" in expression.columns \
        else expression.copy(deep=False)  # never modify the caller's frame
    table.index = table.index.map(str)
    table.index.name = "patient_id"
    if table.index.has_duplicates:
        dup = table.index[table.index.duplicated()][0]
        raise InputError(f"expression has duplicate patient_id {dup!r}.", fix="keep one row per patient.")
    return table


def score_rsi(expression: pd.DataFrame, *, gene_map: Mapping[str, str] | None = None,
              missing: MissingPolicy = "raise",
              impute_values: Mapping[str, float] | None = None) -> RSIScores:
    """Compute RSI per patient and report what was imputed (Eschrich et al. IJROBP 2009;75:489).

    Parameters
    ----------
    expression:
        Normalised log2 expression; one row per patient (index = patient_id, or a ``patient_id`` column),
        genes as columns.
    gene_map:
        Slot (HGNC symbol in :data:`RSI_GENES`) -> column to read instead, e.g. ``{"CDK1": "PAK2"}`` to
        reproduce the authors' array code, which fills the CDK1 slot with probe 205962_at (PAK2).
    missing:
        ``"raise"`` (default): a missing gene column or a blank value raises InputError naming the gene.
        ``"median"`` / ``"mean"``: blank values are imputed with the cohort median / mean of that gene
        (an absent column still raises). ``"values"``: blanks and absent columns are imputed from
        ``impute_values`` (slot symbol -> log2 expression, e.g. training-cohort medians).
        Every imputation is flagged ``missing_genomics`` in :attr:`RSIScores.flags`.
    """
    if missing not in ("raise", "median", "mean", "values"):
        raise InputError(f"missing must be 'raise', 'median', 'mean' or 'values', got {missing!r}.")
    if missing == "values" and impute_values is None:
        raise InputError("missing='values' needs impute_values.",
                         fix="pass impute_values={gene: log2 expression, ...}.")
    gene_map = dict(gene_map or {})
    unknown = sorted(set(gene_map) - set(RSI_GENES))
    if unknown:
        raise InputError(f"gene_map keys must be RSI slots {RSI_GENES}, got {unknown}.")
    table = _expression_table(expression)

    columns: dict[str, pd.Series] = {}
    for gene in RSI_GENES:
        col = gene_map.get(gene, gene)
        if col in table.columns:
            values = pd.to_numeric(table[col], errors="coerce")
            non_numeric = values.isna() & table[col].notna()
            if non_numeric.any():
                pid = non_numeric[non_numeric].index[0]
                raise InputError(f"expression of RSI gene {col} is not numeric: {table.at[pid, col]!r}.",
                                 patient_id=str(pid), fix="use normalised log2 expression values.")
            columns[gene] = values.astype(np.float64)
        elif missing == "values" and impute_values is not None and gene in impute_values:
            columns[gene] = pd.Series(np.nan, index=table.index, dtype=np.float64)
        else:
            slot = f" (slot {gene})" if col != gene else ""
            raise InputError(f"RSI gene {col}{slot} is missing from the expression table.",
                             fix=f"add a {col} column, map the slot with gene_map, or choose "
                                 "missing='values' with impute_values.")
    values_df = pd.DataFrame(columns, index=table.index)
    arr = values_df.to_numpy(dtype=np.float64, copy=True)
    if np.isinf(arr).any():
        r, c = np.argwhere(np.isinf(arr))[0]
        raise InputError(f"expression of RSI gene {RSI_GENES[c]} is infinite.",
                         patient_id=str(table.index[int(r)]),
                         fix="use finite normalised log2 expression values.")
    isna = np.isnan(arr)
    imputed: dict[str, tuple[str, ...]] = {}
    if isna.any():
        if missing == "raise":
            r, c = np.argwhere(isna)[0]
            raise InputError(f"RSI gene {gene_map.get(RSI_GENES[c], RSI_GENES[c])} has no value.",
                             patient_id=str(table.index[int(r)]),
                             fix="provide the value or choose an explicit imputation policy "
                                 "(missing='median', 'mean' or 'values').")
        for c, gene in enumerate(RSI_GENES):
            col_na = isna[:, c]
            if not col_na.any():
                continue
            if missing == "values":
                assert impute_values is not None
                if gene not in impute_values:
                    raise InputError(f"RSI gene {gene} has blanks and no value in impute_values.",
                                     fix=f"add {gene} to impute_values.")
                fill = float(impute_values[gene])
            else:
                observed = arr[~col_na, c]
                if observed.size == 0:
                    raise InputError(f"RSI gene {gene} has no value for any patient: cannot impute the "
                                     f"cohort {missing}.", fix="use missing='values' with impute_values.")
                fill = float(np.median(observed) if missing == "median" else np.mean(observed))
            if not math.isfinite(fill):
                raise InputError(f"imputation value for RSI gene {gene} is not finite.")
            arr[col_na, c] = fill
        for r in np.flatnonzero(isna.any(axis=1)):
            imputed[str(table.index[int(r)])] = tuple(g for c, g in enumerate(RSI_GENES) if isna[r, c])
        logger.warning("RSI: imputed (%s policy) missing genes for %d patient(s); flagged %s",
                       missing, len(imputed), FLAG_MISSING_GENOMICS)

    ranks = rankdata(arr, method="average", axis=1) if arr.size else arr
    coefs = np.array([RSI_COEFFICIENTS[g] for g in RSI_GENES], dtype=np.float64)
    rsi = pd.Series(ranks @ coefs, index=table.index, name="rsi", dtype=np.float64)
    flags = {pid: [FLAG_MISSING_GENOMICS] for pid in imputed}
    return RSIScores(rsi=rsi, imputed_genes=imputed, flags=flags)


def rsi_score(expression: pd.DataFrame, *, gene_map: Mapping[str, str] | None = None,
              missing: MissingPolicy = "raise",
              impute_values: Mapping[str, float] | None = None) -> pd.Series:
    """RSI per patient: Series named ``"rsi"`` indexed by patient_id (Eschrich et al. IJROBP 2009;75:489).

    ``RSI = sum_g c_g * rank_g`` (no intercept; ranks within each sample, lowest = 1, ties averaged).
    Options as in :func:`score_rsi`. When an imputation policy was used, the Series carries
    ``attrs["imputed_genes"]`` (patient_id -> genes) and ``attrs["flags"]`` (patient_id ->
    ``["missing_genomics"]``); call :func:`score_rsi` for a typed result.
    """
    scores = score_rsi(expression, gene_map=gene_map, missing=missing, impute_values=impute_values)
    rsi = scores.rsi
    rsi.attrs["imputed_genes"] = scores.imputed_genes
    rsi.attrs["flags"] = scores.flags
    return rsi


def rsi_is_radioresistant(rsi: float, threshold: float = RSI_THRESHOLD_2009) -> bool:
    """True when ``rsi`` is at or above ``threshold`` (0.46 in Eschrich 2009; 0.3745 *unverified*)."""
    if not math.isfinite(rsi):
        raise InputError(f"rsi must be finite, got {rsi!r}.")
    return rsi >= threshold
