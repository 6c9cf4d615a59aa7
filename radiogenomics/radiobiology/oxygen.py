"""Oxygen effect: oxygen modification factor (OMF) and dose-modifying OER from pO2.

Source: Alper T, Howard-Flanders P, "Role of oxygen in modifying the radiosensitivity of E. coli B",
Nature 1956;178:978-979 (the functional form), with the conventional OER_max = 3 and K = 3 mmHg.

``OMF(p) = (OER_max p + K) / (OER_max (p + K))`` is the radiosensitivity relative to fully oxic cells
(1/3 at 0 mmHg, -> 1 at high pO2). The contract's ``oer_from_po2`` returns the *dose-modifying* factor
relative to fully oxic cells, ``OER = 1/OMF >= 1`` (3 at 0 mmHg, -> 1 at high pO2). Hypoxia acts as a
dose modifier: ``alpha(p) = alpha_ox OMF``, ``beta(p) = beta_ox OMF^2``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from radiogenomics.errors import InputError
from radiogenomics.radiobiology._validation import FloatArray, FloatOrArray, non_negative, out, positive

#: Conventional maximum oxygen enhancement ratio (anoxic vs fully oxic).
DEFAULT_OER_MAX = 3.0
#: Conventional pO2 (mmHg) at which the effect is half-maximal.
DEFAULT_K_MMHG = 3.0


def _params(oer_max: Any, k_mmhg: Any) -> tuple[FloatArray, FloatArray]:
    oer = positive(oer_max, "oer_max")
    if (oer < 1).any():
        raise InputError(f"oer_max must be >= 1, got {oer!r}.", fix="use OER_max = 3 (conventional).")
    return oer, positive(k_mmhg, "k_mmhg")


def omf_from_po2(po2_mmhg: Any, oer_max: Any = DEFAULT_OER_MAX, k_mmhg: Any = DEFAULT_K_MMHG) -> FloatOrArray:
    """Oxygen modification factor relative to fully oxic cells (Alper & Howard-Flanders 1956).

    ``OMF = (OER_max p + K) / (OER_max (p + K))``: 1/OER_max at 0 mmHg, 1 as p -> infinity.
    """
    p = non_negative(po2_mmhg, "po2_mmhg")
    oer, k = _params(oer_max, k_mmhg)
    return out((oer * p + k) / (oer * (p + k)))


def oer_from_po2(po2_mmhg: Any, oer_max: Any = DEFAULT_OER_MAX, k_mmhg: Any = DEFAULT_K_MMHG) -> FloatOrArray:
    """Dose-modifying OER relative to fully oxic cells, ``1/OMF >= 1`` (Alper & Howard-Flanders 1956).

    ``OER = OER_max (p + K) / (OER_max p + K)``: OER_max (3) at 0 mmHg, 1 at high pO2. Defaults
    OER_max = 3, K = 3 mmHg (conventional values).
    """
    p = non_negative(po2_mmhg, "po2_mmhg")
    oer, k = _params(oer_max, k_mmhg)
    return out(oer * (p + k) / (oer * p + k))


def hypoxic_lq(alpha_per_gy: Any, beta_per_gy2: Any, po2_mmhg: Any, oer_max: Any = DEFAULT_OER_MAX,
               k_mmhg: Any = DEFAULT_K_MMHG) -> tuple[FloatOrArray, FloatOrArray]:
    """LQ parameters at ``po2_mmhg``: ``alpha_ox OMF`` and ``beta_ox OMF^2`` (dose-modifying hypoxia)."""
    omf = np.asarray(omf_from_po2(po2_mmhg, oer_max, k_mmhg))
    alpha = non_negative(alpha_per_gy, "alpha_per_gy")
    beta = non_negative(beta_per_gy2, "beta_per_gy2")
    return out(alpha * omf), out(beta * omf**2)
