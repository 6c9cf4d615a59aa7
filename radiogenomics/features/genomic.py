"""Genomic features from expression.csv: RSI and published gene-signature scores.

* RSI: :func:`radiogenomics.radiobiology.score_rsi` (Eschrich 2009), unchanged.
* Signatures: YAML files in ``features/data`` (name, source, ``genes: {symbol: direction}``). The score of a
  patient is the mean over the signature's genes of ``direction * normalised expression``.

Normalisation (``normalisation``):

``sample_median`` (default)
    each value minus the median of all genes of the same patient: a single-sample score, no information
    from other patients (no leakage), removes global per-sample shifts such as centre batch offsets.
``cohort_zscore``
    per-gene z-score over the patients given (or over ``reference`` statistics from a training cohort).
``none``
    raw log2 expression.

Missing genes (``missing``): ``error`` raises InputError naming the gene and patient; ``available`` (default)
scores each patient on the genes it has when they cover at least ``min_coverage`` of the signature, else NaN.
The coverage (fraction of the signature's genes used) is reported as its own column.
"""

from __future__ import annotations

import logging
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

Normalisation = Literal["sample_median", "cohort_zscore", "none"]
MissingPolicy = Literal["error", "available"]
RSIMissing = Literal["raise", "median", "mean"]


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


def normalise_expression(expression: pd.DataFrame, method: Normalisation = "sample_median",
                         reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Normalise log2 expression (patients x genes); see the module docstring for the methods.

    ``reference`` (cohort_zscore only): expression of the training patients whose per-gene mean and
    standard deviation are used, so that new patients are scored on the training scale.
    """
    table = expression.astype(np.float64)
    if method == "none":
        return table
    if method == "sample_median":
        return table.sub(table.median(axis=1, skipna=True), axis=0)
    if method == "cohort_zscore":
        ref = table if reference is None else reference.astype(np.float64)
        mean = ref.mean(axis=0, skipna=True)
        sd = ref.std(axis=0, ddof=1, skipna=True)
        sd = sd.where(sd > 0)
        return (table - mean.reindex(table.columns)) / sd.reindex(table.columns)
    raise InputError(f"unknown expression normalisation {method!r}",
                     fix="use 'sample_median', 'cohort_zscore' or 'none'")


def signature_score(expression: pd.DataFrame, signature: Signature, *, normalisation: Normalisation =
                    "sample_median", missing: MissingPolicy = "available", min_coverage: float = 0.8,
                    reference: pd.DataFrame | None = None) -> pd.DataFrame:
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
    normalised = normalise_expression(expression, normalisation, reference)
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
    score = signed.mean(axis=1, skipna=True).where(coverage >= min_coverage - 1e-12)
    if absent:
        log.warning("signature %s: %d of %d genes absent from expression (%s)", signature.name, len(absent),
                    len(genes), ", ".join(absent))
    low = coverage < min_coverage - 1e-12
    if low.any():
        log.warning("signature %s: %d patient(s) below %.0f%% gene coverage get NaN", signature.name,
                    int(low.sum()), 100 * min_coverage)
    return pd.DataFrame({"score": score.astype(np.float64), "coverage": coverage.astype(np.float64)})


def genomic_features(expression: pd.DataFrame, *, normalisation: Normalisation = "sample_median",
                     missing: MissingPolicy = "available", min_coverage: float = 0.8,
                     rsi_missing: RSIMissing = "median",
                     signatures: tuple[Signature, ...] | None = None,
                     gene_map: Mapping[str, str] | None = None) -> pd.DataFrame:
    """All genomic features, namespaced (``genomic.rsi``, ``genomic.hypoxia_toustrup2011``, ...).

    Columns: ``genomic.rsi`` (RSI, rank-based so normalisation-independent), ``genomic.rsi_imputed``
    (1 when ``rsi_missing`` imputed an RSI gene for that patient), and per signature its score and
    ``<name>_coverage``. Index: patient_id.
    """
    from radiogenomics.radiobiology import score_rsi

    table = expression.copy()
    table.index = table.index.map(str)
    table.index.name = naming.PATIENT_ID
    out = pd.DataFrame(index=table.index)
    try:
        scores = score_rsi(table, gene_map=gene_map, missing=rsi_missing)
    except InputError as exc:
        if missing == "error":
            raise
        log.warning("RSI not computed: %s", exc)
        out[naming.genomic_column("rsi")] = np.nan
        out[naming.genomic_column("rsi_imputed")] = np.nan
    else:
        out[naming.genomic_column("rsi")] = scores.rsi.reindex(out.index)
        imputed = pd.Series(0.0, index=out.index)
        imputed[imputed.index.isin(list(scores.imputed_genes))] = 1.0
        out[naming.genomic_column("rsi_imputed")] = imputed
    for sig in signatures if signatures is not None else shipped_signatures():
        res = signature_score(table, sig, normalisation=normalisation, missing=missing, min_coverage=min_coverage)
        out[naming.genomic_column(sig.name)] = res["score"]
        out[naming.genomic_column(f"{sig.name}_coverage")] = res["coverage"]
    return out
