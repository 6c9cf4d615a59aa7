"""Poisson tumour control probability with voxel clonogens and hypoxia, and the uniform dose for a TCP.

Source: Webb S, Nahum AE, "A model for calculating tumour control probability in radiotherapy including
the effects of inhomogeneous distributions of dose and clonogenic cell density", Phys Med Biol
1993;38:653-666. ``TCP = prod_i exp(-N_i SF_i)``, ``SF_i = exp(-n (alpha_i d_i + beta_i d_i^2))``,
``d_i = D_i / n``. Hypoxia (Alper & Howard-Flanders 1956) scales ``alpha`` by OMF and ``beta`` by OMF^2.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import logsumexp

from radiogenomics.errors import InputError
from radiogenomics.radiobiology._validation import (
    FloatArray,
    FloatOrArray,
    non_negative,
    out,
    positive,
    probability_open,
)
from radiogenomics.radiobiology.oxygen import DEFAULT_K_MMHG, DEFAULT_OER_MAX, omf_from_po2

#: Clonogen density of a tumour without imaging of it: 10^7 per cm^3 (Webb & Nahum, PMB 1993;38:653).
CLONOGEN_DENSITY_PER_CC = 1e7


def effective_lq(alpha_per_gy: Any, beta_per_gy2: Any, po2_mmhg: Any = None, *,
                 oer_max: Any = DEFAULT_OER_MAX,
                 k_mmhg: Any = DEFAULT_K_MMHG) -> tuple[FloatArray, FloatArray]:
    """alpha, beta after the oxygen effect (``alpha OMF``, ``beta OMF^2``); unchanged when pO2 is None."""
    alpha = non_negative(alpha_per_gy, "alpha_per_gy")
    beta = non_negative(beta_per_gy2, "beta_per_gy2")
    if po2_mmhg is None:
        return alpha, beta
    omf = np.asarray(omf_from_po2(po2_mmhg, oer_max, k_mmhg))
    return alpha * omf, beta * omf**2


def log_survivors(dose_gy: Any, clonogens: Any, alpha_per_gy: Any, beta_per_gy2: Any, n_fractions: Any,
                  po2_mmhg: Any = None, *, oer_max: Any = DEFAULT_OER_MAX,
                  k_mmhg: Any = DEFAULT_K_MMHG) -> FloatArray:
    """Per-voxel ``ln(N_i SF_i)`` (``-inf`` where N_i = 0), broadcast over all inputs (Webb & Nahum 1993)."""
    dose = non_negative(dose_gy, "dose_gy")
    n_clon = non_negative(clonogens, "clonogens")
    n = positive(n_fractions, "n_fractions")
    alpha, beta = effective_lq(alpha_per_gy, beta_per_gy2, po2_mmhg, oer_max=oer_max, k_mmhg=k_mmhg)
    with np.errstate(divide="ignore"):
        return np.log(n_clon) - dose * (alpha + beta * dose / n)


def tcp_poisson(dose_gy: Any, clonogens: Any, alpha_per_gy: Any, beta_per_gy2: Any, n_fractions: Any,
                po2_mmhg: Any = None, *, oer_max: Any = DEFAULT_OER_MAX, k_mmhg: Any = DEFAULT_K_MMHG,
                axis: int | tuple[int, ...] | None = None) -> FloatOrArray:
    """Poisson TCP ``exp(-sum_i N_i SF_i)`` over voxels (Webb & Nahum, Phys Med Biol 1993;38:653).

    ``dose_gy``: total physical dose per voxel (Gy); ``clonogens``: clonogen number per voxel; LQ
    parameters are those of fully oxic cells; ``po2_mmhg`` (optional) applies the oxygen effect
    (``alpha OMF``, ``beta OMF^2``, Alper & Howard-Flanders 1956). All inputs broadcast together; the
    product runs over ``axis`` (default: all voxels -> a float).
    """
    ls = log_survivors(dose_gy, clonogens, alpha_per_gy, beta_per_gy2, n_fractions, po2_mmhg,
                       oer_max=oer_max, k_mmhg=k_mmhg)
    return out(np.exp(-np.exp(ls).sum(axis=axis)))


def dose_for_tcp(target_tcp: float, clonogens: Any, alpha_per_gy: Any, beta_per_gy2: Any, *,
                 dose_per_fraction_gy: float | None = None, n_fractions: float | None = None,
                 po2_mmhg: Any = None, oer_max: Any = DEFAULT_OER_MAX, k_mmhg: Any = DEFAULT_K_MMHG) -> float:
    """Uniform total dose (Gy) giving Poisson TCP = ``target_tcp`` (Webb & Nahum 1993).

    Give exactly one of ``dose_per_fraction_gy`` or ``n_fractions``. For one homogeneous, oxic compartment
    at fixed d this is the closed form ``D = (ln N0 - ln(-ln TCP)) / (alpha + beta d)``; with clonogen and
    pO2 maps (arrays broadcast per voxel) the monotone equation ``sum_i N_i SF_i(D) = -ln TCP`` is solved
    numerically (Brent, in log space).
    """
    if (dose_per_fraction_gy is None) == (n_fractions is None):
        raise InputError("give exactly one of dose_per_fraction_gy or n_fractions.")
    tcp = float(probability_open(target_tcp, "target_tcp"))
    n_clon = non_negative(clonogens, "clonogens")
    alpha, beta = effective_lq(alpha_per_gy, beta_per_gy2, po2_mmhg, oer_max=oer_max, k_mmhg=k_mmhg)
    n_clon, alpha, beta = np.broadcast_arrays(n_clon, alpha, beta)
    keep = n_clon > 0
    if not keep.any():
        return 0.0
    log_n = np.log(n_clon[keep])
    a, b = alpha[keep], beta[keep]
    log_target = math.log(-math.log(tcp))
    if logsumexp(log_n) <= log_target:
        return 0.0
    if dose_per_fraction_gy is not None:
        d = float(positive(dose_per_fraction_gy, "dose_per_fraction_gy"))
        slope = a + b * d
        if (slope <= 0).any():
            raise InputError("alpha_per_gy and beta_per_gy2 are zero for a voxel with clonogens: "
                             "no dose reaches the TCP target.")
        if slope.size == 1 or np.all(slope == slope.flat[0]):
            return float((logsumexp(log_n) - log_target) / slope.flat[0])

        def f(dose: float) -> float:
            return float(logsumexp(log_n - dose * slope)) - log_target
    else:
        n = float(positive(n_fractions, "n_fractions"))
        if ((a <= 0) & (b <= 0)).any():
            raise InputError("alpha_per_gy and beta_per_gy2 are zero for a voxel with clonogens: "
                             "no dose reaches the TCP target.")

        def f(dose: float) -> float:
            return float(logsumexp(log_n - dose * (a + b * dose / n))) - log_target

    hi = 1.0
    while f(hi) > 0:
        hi *= 2.0
        if hi > 1e6:
            raise InputError("no dose below 1e6 Gy reaches target_tcp; check the LQ parameters.")
    return float(brentq(f, 0.0, hi, xtol=1e-10, rtol=1e-12))
