"""Genomic features from expression.csv: RSI and published gene-signature scores, per patient.

Every value depends on the patient's own expression row alone (contract section 1): nothing is imputed,
normalised or standardised across the cohort here. Imputation and per-gene scaling are fitted inside
training folds (:mod:`radiogenomics.features.preprocessing`).

* RSI: :func:`radiogenomics.radiobiology.score_rsi` (Eschrich 2009) on the patients whose ten RSI genes
  all have a value; a patient with a blank or absent RSI gene gets NaN (``rsi_missing="nan"``, default) or
  an InputError (``"raise"``). ``genomic.rsi_coverage`` is the fraction of the ten genes observed.
* Signatures: YAML files in ``features/data`` (name, source, ``genes: {symbol: direction}``). The score of a
  patient is the mean over the signature's genes of ``direction * normalised expression``.

Normalisation (``normalisation``), single-sample only:

``sample_median`` (default)
    each value minus the median of all genes of the same patient: a single-sample score, no information
    from other patients (no leakage), removes global per-sample shifts such as centre batch offsets.
``none``
    raw log2 expression.

Missing genes (``missing``): ``error`` raises InputError naming the gene and patient; ``available`` (default)
scores each patient on the genes it has when they cover at least ``min_coverage`` of the signature, else NaN.
The coverage (fraction of the signature's genes used) is reported as its own column.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml

from radiogenomics.errors import InputError
from radiogenomics.features import naming

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
SIGNATURE_FILES = ("hypoxia_toustrup2011.yaml", "toxicity_candidate_genes.yaml")

Normalisation = Literal["sample_median", "none"]
MissingPolicy = Literal["error", "available"]
RSIMissing = Literal["nan", "raise"]

#: Genomic columns that describe how much was observed, not the biology (excluded from ``available.genomic``).
COVERAGE_SUFFIX = "_coverage"


@dataclass(frozen=True)
class Signature:
    """A gene signature: symbol -> direction (+1 / -1), with its published source."""

    name: str
    kind: str
    genes: dict[str, float]
    source: str
    description: str = ""


def load_signature(path: Path | str) -> Signature:
    """Read a signature YAML (keys: name, kind, source, genes: {symbol: direction})."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read gene signature: {exc}", file=str(path)) from exc
    if not isinstance(data, dict) or not isinstance(data.get("genes"), dict) or not data["genes"]:
        raise InputError("a signature file needs a non-empty 'genes' mapping", file=str(path))
    for key in ("name", "source"):
        if not data.get(key):
            raise InputError(f"signature file lacks '{key}'", file=str(path))
    genes = {str(g): float(d) for g, d in data["genes"].items()}
    if any(d not in (-1.0, 1.0) for d in genes.values()):
        raise InputError("signature gene directions must be +1 or -1", file=str(path))
    return Signature(name=str(data["name"]), kind=str(data.get("kind", "")), genes=genes,
                     source=" ".join(str(data["source"]).split()),
                     description=" ".join(str(data.get("description", "")).split()))


@lru_cache(maxsize=1)
def shipped_signatures() -> tuple[Signature, ...]:
    """The signatures shipped with the package (one hypoxia, one toxicity set)."""
    return tuple(load_signature(DATA_DIR / name) for name in SIGNATURE_FILES)


def normalise_expression(expression: pd.DataFrame, method: Normalisation = "sample_median") -> pd.DataFrame:
    """Normalise log2 expression (patients x genes) per sample; see the module docstring for the methods."""
    table = expression.astype(np.float64)
    if method == "none":
        return table
    if method == "sample_median":
        return table.sub(table.median(axis=1, skipna=True), axis=0)
    raise InputError(f"unknown expression normalisation {method!r}",
                     fix="use 'sample_median' or 'none'; per-gene scaling across patients belongs in training "
                         "(radiogenomics.features.preprocessing.FeatureScaler, fitted inside folds)")


def signature_score(expression: pd.DataFrame, signature: Signature, *, normalisation: Normalisation =
                    "sample_median", missing: MissingPolicy = "available", min_coverage: float = 0.8) -> pd.DataFrame:
    """Score one signature: DataFrame (index patient_id) with columns ``score`` and ``coverage``."""
    if missing not in ("error", "available"):
        raise InputError(f"unknown missing-gene policy {missing!r}", fix="use 'error' or 'available'")
    if not 0.0 < min_coverage <= 1.0:
        raise InputError(f"min_coverage must be in (0, 1], got {min_coverage}")
    genes = list(signature.genes)
    absent = [g for g in genes if g not in expression.columns]
    if missing == "error" and absent:
        raise InputError(f"signature {signature.name}: gene(s) {', '.join(absent)} missing from expression.csv",
                         fix="add the genes, or use the 'available' missing-gene policy")
    normalised = normalise_expression(expression, normalisation)
    values = normalised.reindex(columns=genes)
    if missing == "error":
        blank = values.isna()
        if blank.to_numpy().any():
            pid, gene = next((p, g) for p in blank.index for g in genes if blank.at[p, g])
            raise InputError(f"signature {signature.name}: gene {gene} has no value", patient_id=str(pid),
                             fix="provide the value or use the 'available' missing-gene policy")
    directions = pd.Series(signature.genes, dtype=np.float64)
    signed = values.mul(directions, axis=1)
    coverage = signed.notna().sum(axis=1) / len(genes)
    score = _row_means(signed).where(coverage >= min_coverage - 1e-12)
    if absent:
        log.warning("signature %s: %d of %d genes absent from expression (%s)", signature.name, len(absent),
                    len(genes), ", ".join(absent))
    low = coverage < min_coverage - 1e-12
    if low.any():
        log.warning("signature %s: %d patient(s) below %.0f%% gene coverage get NaN", signature.name,
                    int(low.sum()), 100 * min_coverage)
    return pd.DataFrame({"score": score.astype(np.float64), "coverage": coverage.astype(np.float64)})


def rsi_features(expression: pd.DataFrame, *, gene_map: Mapping[str, str] | None = None,
                 rsi_missing: RSIMissing = "nan") -> pd.DataFrame:
    """``rsi`` and ``rsi_coverage`` per patient (index patient_id), each from the patient's own row.

    RSI is computed only where all ten signature genes have a value (nothing is imputed); elsewhere it is
    NaN (``rsi_missing="nan"``) or an InputError naming the patient and gene (``"raise"``).
    """
    from radiogenomics.radiobiology import score_rsi
    from radiogenomics.radiobiology.rsi import RSI_GENES

    if rsi_missing not in ("nan", "raise"):
        raise InputError(f"unknown RSI missing-gene policy {rsi_missing!r}",
                         fix="use 'nan' (blank RSI gene -> NaN RSI) or 'raise'; impute inside training folds "
                             "with radiogenomics.features.preprocessing.RSIImputer")
    columns = [dict(gene_map or {}).get(g, g) for g in RSI_GENES]
    raw = expression.reindex(columns=columns)
    values = raw.apply(pd.to_numeric, errors="coerce").astype(np.float64)
    bad = values.isna() & raw.notna()
    if bad.to_numpy().any():
        pid, gene = next((p, g) for p in bad.index for g in columns if bad.at[p, g])
        raise InputError(f"expression of RSI gene {gene} is not numeric: {raw.at[pid, gene]!r}",
                         patient_id=str(pid), fix="use normalised log2 expression values")
    observed = values.notna()
    coverage = observed.sum(axis=1) / len(RSI_GENES)
    complete = observed.all(axis=1)
    if rsi_missing == "raise" and not complete.all():
        pid = complete.index[~complete.to_numpy()][0]
        gene = next(c for c in columns if not observed.at[pid, c])
        raise InputError(f"RSI gene {gene} has no value", patient_id=str(pid),
                         fix="provide the value, or extract with rsi_missing='nan' (NaN RSI for that patient)")
    rsi = pd.Series(np.nan, index=expression.index, dtype=np.float64)
    for position in np.flatnonzero(complete.to_numpy()):  # one patient at a time: BLAS sums depend on the
        one = expression.iloc[[position]]                  # batch shape, a patient's RSI must not
        rsi.iloc[position] = float(score_rsi(one, gene_map=gene_map, missing="raise").rsi.iloc[0])
    incomplete = int((~complete).sum())
    if incomplete:
        absent = [c for c in columns if c not in expression.columns]
        log.warning("RSI is NaN for %d patient(s) with a blank RSI gene%s (nothing is imputed at extraction)",
                    incomplete, f"; absent column(s): {', '.join(absent)}" if absent else "")
    return pd.DataFrame({"rsi": rsi, "rsi_coverage": coverage.astype(np.float64)}, index=expression.index)


def _row_means(values: pd.DataFrame) -> pd.Series:
    """Mean of the non-blank values of each row, correctly rounded (``math.fsum``): the same bits for a
    patient whatever other rows are in the table (vectorised sums change their order with the table's shape)."""
    means = [math.fsum(row[~np.isnan(row)]) / int((~np.isnan(row)).sum()) if (~np.isnan(row)).any() else np.nan
             for row in values.to_numpy(dtype=np.float64)]
    return pd.Series(means, index=values.index, dtype=np.float64)


def genomic_available(features: pd.DataFrame) -> pd.Series:
    """True where a patient has at least one genomic feature value (coverage columns do not count)."""
    values = [c for c in features.columns if not str(c).endswith(COVERAGE_SUFFIX)]
    return features[values].notna().any(axis=1)


def genomic_features(expression: pd.DataFrame, *, normalisation: Normalisation = "sample_median",
                     missing: MissingPolicy = "available", min_coverage: float = 0.8,
                     rsi_missing: RSIMissing = "nan",
                     signatures: tuple[Signature, ...] | None = None,
                     gene_map: Mapping[str, str] | None = None) -> pd.DataFrame:
    """All genomic features, namespaced (``genomic.rsi``, ``genomic.hypoxia_toustrup2011``, ...).

    Columns: ``genomic.rsi`` (RSI, rank-based so normalisation-independent; NaN unless all ten genes were
    observed), ``genomic.rsi_coverage`` (fraction of the ten RSI genes observed), and per signature its score
    and ``<name>_coverage``. Index: patient_id. Each row depends on that patient's expression alone.
    """
    table = expression.copy()
    table.index = table.index.map(str)
    table.index.name = naming.PATIENT_ID
    if missing == "error" and rsi_missing == "nan":
        rsi_missing = "raise"
    rsi = rsi_features(table, gene_map=gene_map, rsi_missing=rsi_missing)
    out = pd.DataFrame({naming.genomic_column("rsi"): rsi["rsi"],
                        naming.genomic_column("rsi" + COVERAGE_SUFFIX): rsi["rsi_coverage"]}, index=table.index)
    for sig in signatures if signatures is not None else shipped_signatures():
        res = signature_score(table, sig, normalisation=normalisation, missing=missing, min_coverage=min_coverage)
        out[naming.genomic_column(sig.name)] = res["score"]
        out[naming.genomic_column(f"{sig.name}{COVERAGE_SUFFIX}")] = res["coverage"]
    return out
