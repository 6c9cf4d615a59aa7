"""Radiobiology engine: RSI, GARD, LQ/BED/EQD2, TCP with hypoxia, LKB NTCP, DVH, dose targets, dose painting.

Every formula is numpy-vectorised, validates its input (bad input raises
:class:`radiogenomics.errors.InputError`, a ``ValueError``, naming the argument) and cites its source in its
docstring. See ``docs/radiobiology.md`` for the formulas, conventions and which defaults are unverified.
"""

from radiogenomics.radiobiology.gard import (
    DEFAULT_BETA_PER_GY2,
    PatientLQ,
    alpha_from_rsi,
    check_rsi,
    dose_for_gard,
    dose_for_gard_fixed_n,
    dose_for_gard_lq,
    gard,
    gard_lq,
    max_valid_rsi,
    patient_lq,
)
from radiogenomics.radiobiology.lq import bed, eqd2, isoeffective_total_dose, surviving_fraction
from radiogenomics.radiobiology.ntcp import (
    NTCPParameters,
    geud,
    geud_for_ntcp,
    lkb_ntcp,
    load_ntcp_parameters,
    max_prescription_for_ntcp,
    ntcp_for_endpoint,
    ntcp_from_dvh,
    ntcp_parameters,
)
from radiogenomics.radiobiology.oxygen import (
    DEFAULT_K_MMHG,
    DEFAULT_OER_MAX,
    hypoxic_lq,
    oer_from_po2,
    omf_from_po2,
)
from radiogenomics.radiobiology.rsi import (
    RSI_COEFFICIENTS,
    RSI_GENES,
    RSI_SLOT_NAMES,
    RSI_THRESHOLD_2009,
    RSI_THRESHOLD_LATER,
    RSIScores,
    rsi_is_radioresistant,
    rsi_score,
    score_rsi,
    theoretical_rsi_range,
)
from radiogenomics.radiobiology.tcp import dose_for_tcp, effective_lq, log_survivors, tcp_poisson

__all__ = [
    "DEFAULT_BETA_PER_GY2",
    "DEFAULT_K_MMHG",
    "DEFAULT_OER_MAX",
    "NTCPParameters",
    "PatientLQ",
    "RSIScores",
    "RSI_COEFFICIENTS",
    "RSI_GENES",
    "RSI_SLOT_NAMES",
    "RSI_THRESHOLD_2009",
    "RSI_THRESHOLD_LATER",
    "alpha_from_rsi",
    "bed",
    "check_rsi",
    "dose_for_gard",
    "dose_for_gard_fixed_n",
    "dose_for_gard_lq",
    "dose_for_tcp",
    "effective_lq",
    "eqd2",
    "gard",
    "gard_lq",
    "geud",
    "geud_for_ntcp",
    "hypoxic_lq",
    "isoeffective_total_dose",
    "lkb_ntcp",
    "load_ntcp_parameters",
    "log_survivors",
    "max_prescription_for_ntcp",
    "max_valid_rsi",
    "ntcp_for_endpoint",
    "ntcp_from_dvh",
    "ntcp_parameters",
    "oer_from_po2",
    "omf_from_po2",
    "patient_lq",
    "rsi_is_radioresistant",
    "rsi_score",
    "score_rsi",
    "surviving_fraction",
    "tcp_poisson",
    "theoretical_rsi_range",
]
