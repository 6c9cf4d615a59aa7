"""Synthetic tumour expression (normalised log2) coupled to the latent biology.

* The 10 RSI genes: the patient's true profile is a draw from the population expression distribution
  *conditioned on* its rank-based RSI (Eschrich et al. IJROBP 2009;75:489, computed with
  :func:`radiogenomics.radiobiology.rsi_score`'s model) matching the patient's true RSI
  (= SF2, GARD convention, Scott et al. Lancet Oncol 2017): we draw many candidate profiles and keep the one
  whose RSI is closest (approximate rejection sampling).
* Hypoxia genes: the Toustrup et al. 15-gene hypoxia classifier (Cancer Res 2011;71:5923), each rising
  with the patient's GTV hypoxic fraction.
* Toxicity genes: candidate normal-tissue radiosensitivity genes (ATM, TGFB1, XRCC1, XRCC3, SOD2, TNF;
  reviewed by Andreassen & Alsner, Radiother Oncol 2009;92:299) coupled to the latent toxicity
  susceptibility (coupling is an assumption of this generator).
* ~200 background genes (real HGNC symbols) in correlated modules (proliferation, immune, HPV,
  squamous differentiation, stroma, ...) driven by patient-level factors, with HPV+ tumours showing
  high CDKN2A (p16) and an immune-hot profile.
* All genes then get technical noise and a centre batch effect (global shift + gene-specific shift).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from radiogenomics.radiobiology import RSI_GENES, rsi_score
from radiogenomics.synthetic.model import Centre, PatientLatent, SynthParameters

#: Toustrup et al. Cancer Res 2011;71:5923 (15-gene hypoxia classifier for HNSCC)
HYPOXIA_GENES: tuple[str, ...] = (
    "ADM", "ALDOA", "ANKRD37", "BNIP3", "BNIP3L", "FAM162A", "KCTD11", "NDRG1", "P4HA1", "P4HA2",
    "PDK1", "PFKFB3", "SLC2A1", "ALDOC", "LOX",
)

#: candidate normal-tissue toxicity genes and the sign of their coupling to susceptibility (assumption)
TOXICITY_GENES: dict[str, float] = {
    "ATM": -0.45, "TGFB1": 0.50, "XRCC1": -0.35, "XRCC3": -0.30, "SOD2": -0.30, "TNF": 0.40,
}

#: background modules: name -> genes (real HGNC symbols)
BACKGROUND_MODULES: dict[str, tuple[str, ...]] = {
    "proliferation": (
        "MKI67", "TOP2A", "CCNB1", "CCNB2", "CCNA2", "CCNE1", "MCM2", "MCM3", "MCM7", "PCNA", "BUB1",
        "BUB1B", "AURKA", "AURKB", "PLK1", "CDC20", "TYMS", "RRM2", "FOXM1", "E2F1", "CENPF", "KIF2C",
        "TPX2", "UBE2C"),
    "immune": (
        "PTPRC", "CD3E", "CD8A", "CD4", "GZMA", "GZMB", "PRF1", "CD274", "PDCD1", "CTLA4", "LAG3", "CXCL9",
        "CXCL10", "HLA-DRA", "CD68", "CD163", "MS4A1", "CD19", "FOXP3", "IFNG", "ISG15", "MX1", "OAS1",
        "IFIT1", "IFIT3"),
    "hpv": ("CDKN2A", "SYCP2", "STAG3", "SMC1B", "TAF7L", "RFC4"),
    "squamous": (
        "KRT5", "KRT6A", "KRT13", "KRT14", "KRT16", "KRT17", "KRT19", "SPRR1A", "SPRR1B", "SPRR3", "IVL",
        "TP63", "SOX2", "DSG3", "S100A8", "S100A9"),
    "stroma": (
        "VIM", "FN1", "COL1A1", "COL1A2", "COL3A1", "SPARC", "ACTA2", "FAP", "PDGFRB", "TWIST1", "SNAI2",
        "ZEB1", "MMP2", "MMP9", "POSTN", "THBS1", "TAGLN", "CDH2"),
    "signalling": (
        "EGFR", "ERBB2", "ERBB3", "KRAS", "HRAS", "NRAS", "PIK3CA", "PTEN", "AKT1", "MTOR", "MAPK1",
        "MAPK3", "MAP2K1", "BRAF", "MET", "FGFR1", "CCND1", "MYC", "CDK4", "CDK6", "NOTCH1", "NOTCH3",
        "JAG1", "HES1", "CTNNB1", "AXIN2", "WNT5A", "FZD7", "TCF7L2", "SMAD2", "SMAD3", "SMAD4",
        "TGFBR1", "TGFBR2"),
    "dna_repair": (
        "BRCA1", "BRCA2", "RAD51", "PARP1", "XRCC5", "XRCC6", "PRKDC", "MRE11", "NBN", "RAD50", "CHEK1",
        "CHEK2", "TP53BP1", "MDM2", "TP53", "ERCC1", "MSH2", "MLH1"),
    "apoptosis": ("BCL2", "BCL2L1", "BAX", "BAK1", "MCL1", "BIRC5", "CASP3", "CASP8", "CASP9", "FAS"),
    "metabolism": (
        "FASN", "ACACA", "SCD", "HMGCR", "LDLR", "IDH1", "IDH2", "GLS", "SLC1A5", "SLC7A11", "G6PD", "NQO1",
        "GPX2", "TXNRD1", "AKR1C1", "AKR1C3", "CYP1B1", "ALDH1A1", "ALDH3A1"),
    "housekeeping": (
        "ACTB", "GAPDH", "B2M", "TBP", "HPRT1", "PPIA", "RPLP0", "UBC", "YWHAZ", "GUSB", "HMBS", "SDHA",
        "TFRC", "POLR2A", "EEF1A1", "RPL13A", "RPS18", "TUBB", "ALAS1", "ACTG1"),
    "adhesion": (
        "CDH1", "EPCAM", "ITGB1", "ITGA6", "CD44", "EZH2", "DNMT1", "KDM5B", "ARID1A", "KMT2D", "NSD1",
        "FAT1", "NOTCH2", "CASP10"),
}

#: modules driven by the HPV status factor, with their sign (HPV+ -> high p16/CDKN2A, immune-hot)
_HPV_LOADING = {"hpv": 1.2, "immune": 0.4, "proliferation": 0.2}
#: the RSI genes' population log2 means (normalised RNA-seq-like scale) and between-patient sd
RSI_GENE_MEANS: dict[str, float] = {
    "AR": 8.0, "JUN": 9.4, "STAT1": 9.6, "PRKCB": 8.2, "RELA": 9.0, "ABL1": 9.1, "SUMO1": 9.3,
    "CDK1": 8.6, "HDAC1": 9.2, "IRF1": 8.8,
}
RSI_GENE_SD = 0.9
#: candidate profiles drawn per patient for the RSI-conditioned draw
N_RSI_CANDIDATES = 4096
#: technical (assay) noise sd in log2 units (assumption)
TECHNICAL_SD = 0.20
#: the gene panel's fixed per-gene constants come from this seed: the same "platform" for every cohort
PANEL_SEED = 20091015


def background_genes() -> tuple[str, ...]:
    return tuple(g for genes in BACKGROUND_MODULES.values() for g in genes)


def all_genes() -> tuple[str, ...]:
    """Column order of expression.csv (after patient_id)."""
    return (*RSI_GENES, *HYPOXIA_GENES, *TOXICITY_GENES, *background_genes())


def _panel() -> dict[str, np.ndarray]:
    """Fixed per-gene constants (means, loadings, residual sd) of the non-RSI genes."""
    rng = np.random.default_rng(PANEL_SEED)
    n_h, n_b = len(HYPOXIA_GENES), len(background_genes())
    return {
        "hyp_mean": rng.uniform(6.5, 11.5, n_h),
        "hyp_loading": rng.uniform(0.45, 0.95, n_h),
        "hyp_sd": rng.uniform(0.25, 0.45, n_h),
        "tox_mean": rng.uniform(6.5, 10.5, len(TOXICITY_GENES)),
        "tox_sd": rng.uniform(0.25, 0.4, len(TOXICITY_GENES)),
        "bg_mean": rng.uniform(4.5, 13.0, n_b),
        "bg_loading": rng.uniform(0.3, 0.9, n_b) * rng.choice([-1.0, 1.0], n_b, p=[0.2, 0.8]),
        "bg_sd": rng.uniform(0.25, 0.6, n_b),
    }


_PANEL_CACHE: dict[str, np.ndarray] | None = None


def panel() -> dict[str, np.ndarray]:
    global _PANEL_CACHE
    if _PANEL_CACHE is None:
        _PANEL_CACHE = _panel()
    return _PANEL_CACHE


def rsi_of_profiles(profiles: np.ndarray) -> np.ndarray:
    """Rank-based RSI (Eschrich 2009, :func:`radiogenomics.radiobiology.rsi_score`) of rows of log2 values
    given in :data:`RSI_GENES` order."""
    frame = pd.DataFrame(profiles, columns=list(RSI_GENES))
    return rsi_score(frame).to_numpy(dtype=np.float64)


def rsi_gene_profile(rng: np.random.Generator, target_rsi: float) -> np.ndarray:
    """A population draw of the 10 RSI genes whose rank-based RSI is closest to ``target_rsi``."""
    means = np.array([RSI_GENE_MEANS[g] for g in RSI_GENES])
    level = rng.normal(0.0, 0.3)  # sample-wide level (does not change ranks)
    cands = means + level + RSI_GENE_SD * rng.standard_normal((N_RSI_CANDIDATES, len(RSI_GENES)))
    rsi = rsi_of_profiles(cands)
    best = int(np.argmin(np.abs(rsi - target_rsi)))
    return np.asarray(cands[best])


def hypoxia_z(hypoxic_fraction: float) -> float:
    """Standardised hypoxia score: logit of the GTV hypoxic fraction over 1.5 (population scale)."""
    hf = min(max(hypoxic_fraction, 0.02), 0.98)
    return math.log(hf / (1.0 - hf)) / 1.5


def _centre_gene_shift(centre: Centre, n_genes: int, sd: float) -> np.ndarray:
    return np.random.default_rng(centre.expr_gene_shift_seed).normal(0.0, sd, n_genes)


def expression_profile(rng: np.random.Generator, patient: PatientLatent, hypoxic_fraction: float,
                       params: SynthParameters) -> dict[str, float]:
    """Measured log2 expression of :func:`all_genes` for one patient (rounded to 4 decimals)."""
    pan = panel()
    rsi_part = rsi_gene_profile(rng, patient.rsi_true)
    hz = hypoxia_z(hypoxic_fraction)
    hyp = pan["hyp_mean"] + pan["hyp_loading"] * hz + pan["hyp_sd"] * rng.standard_normal(len(HYPOXIA_GENES))
    tz = math.log(patient.tox_susceptibility) / params.tox_log_sd
    tox_load = np.array(list(TOXICITY_GENES.values()))
    tox = pan["tox_mean"] + tox_load * tz + pan["tox_sd"] * rng.standard_normal(len(TOXICITY_GENES))
    hpv = 1.0 if patient.hpv == "pos" else -1.0
    factors = {name: rng.standard_normal() + _HPV_LOADING.get(name, 0.0) * hpv for name in BACKGROUND_MODULES}
    factors["stroma"] += 0.3 * hz  # hypoxia induces a stromal/EMT programme (assumption)
    module_factor = np.concatenate([np.full(len(g), factors[m]) for m, g in BACKGROUND_MODULES.items()])
    bg = pan["bg_mean"] + pan["bg_loading"] * module_factor \
        + pan["bg_sd"] * rng.standard_normal(module_factor.size)
    values = np.concatenate([rsi_part, hyp, tox, bg])
    centre = patient.centre
    values = values + TECHNICAL_SD * rng.standard_normal(values.size) + centre.expr_shift \
        + _centre_gene_shift(centre, values.size, params.expr_centre_gene_sd)
    values = np.clip(values, 0.5, 16.0)
    return {g: round(float(v), 4) for g, v in zip(all_genes(), values, strict=True)}
