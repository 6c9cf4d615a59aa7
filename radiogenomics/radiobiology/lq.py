"""Linear-quadratic model: surviving fraction, BED, EQD2 and isoeffective regimen conversion.

Source: Fowler JF, "The linear-quadratic formula and progress in fractionated radiotherapy",
Br J Radiol 1989;62:679-694. ``SF = exp(-n(alpha d + beta d^2))``, ``BED = n d (1 + d/(alpha/beta))``,
``EQD2 = BED / (1 + 2/(alpha/beta))``. Anchor: 50 Gy in 5 fractions gives BED10 = 100 Gy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from radiogenomics.errors import InputError
from radiogenomics.radiobiology._validation import FloatOrArray, non_negative, out, positive


def surviving_fraction(total_dose_gy: Any, n_fractions: Any, alpha_per_gy: Any,
                       beta_per_gy2: Any) -> FloatOrArray:
    """LQ surviving fraction ``exp(-n (alpha d + beta d^2))`` with ``d = D/n`` (Fowler 1989)."""
    dose = non_negative(total_dose_gy, "total_dose_gy")
    n = positive(n_fractions, "n_fractions")
    alpha = non_negative(alpha_per_gy, "alpha_per_gy")
    beta = non_negative(beta_per_gy2, "beta_per_gy2")
    d = dose / n
    return out(np.exp(-dose * (alpha + beta * d)))


def bed(total_dose_gy: Any, n_fractions: Any, alpha_beta_gy: Any) -> FloatOrArray:
    """Biologically effective dose ``BED = D (1 + d/(alpha/beta))``, ``d = D/n`` (Fowler 1989), in Gy.

    50 Gy in 5 fractions at alpha/beta = 10 Gy gives BED = 100 Gy.
    """
    dose = non_negative(total_dose_gy, "total_dose_gy")
    n = positive(n_fractions, "n_fractions")
    ab = positive(alpha_beta_gy, "alpha_beta_gy")
    return out(dose * (1.0 + dose / n / ab))


def eqd2(total_dose_gy: Any, n_fractions: Any, alpha_beta_gy: Any) -> FloatOrArray:
    """Equivalent dose in 2 Gy fractions ``EQD2 = BED / (1 + 2/(alpha/beta))`` (Fowler 1989), in Gy."""
    ab = positive(alpha_beta_gy, "alpha_beta_gy")
    return out(np.asarray(bed(total_dose_gy, n_fractions, ab)) / (1.0 + 2.0 / ab))


def isoeffective_total_dose(total_dose_gy: Any, n_fractions: Any, alpha_beta_gy: Any, *,
                            new_dose_per_fraction_gy: Any = None,
                            new_n_fractions: Any = None) -> FloatOrArray:
    """Total dose of a new regimen with the same BED as ``total_dose_gy`` in ``n_fractions`` (Fowler 1989).

    Give exactly one of ``new_dose_per_fraction_gy`` (then ``D' = BED / (1 + d'/(alpha/beta))``) or
    ``new_n_fractions`` (then ``D'`` solves ``D'^2/(n' alpha/beta) + D' - BED = 0``). With
    ``new_dose_per_fraction_gy=2`` this is EQD2.
    """
    if (new_dose_per_fraction_gy is None) == (new_n_fractions is None):
        raise InputError("give exactly one of new_dose_per_fraction_gy or new_n_fractions.",
                         fix="fix either the new dose per fraction or the new number of fractions.")
    ab = positive(alpha_beta_gy, "alpha_beta_gy")
    b = np.asarray(bed(total_dose_gy, n_fractions, ab))
    if new_dose_per_fraction_gy is not None:
        d_new = positive(new_dose_per_fraction_gy, "new_dose_per_fraction_gy")
        return out(b / (1.0 + d_new / ab))
    n_new = positive(new_n_fractions, "new_n_fractions")
    # D'^2/(n' ab) + D' - BED = 0  ->  D' = 2 BED / (1 + sqrt(1 + 4 BED/(n' ab)))  (stable root)
    return out(2.0 * b / (1.0 + np.sqrt(1.0 + 4.0 * b / (n_new * ab))))
