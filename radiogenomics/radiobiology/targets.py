"""Per-patient dose targets: GARD regimen figures, rails and toxicity at the planned dose.

Combines :mod:`gard` (Scott et al. Lancet Oncol 2017), :mod:`rails` (QUANTEC limits, site rails) and
:mod:`ntcp` (LKB, Burman 1991) into the dose fields of the prescription record (contract section 2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from radiogenomics.errors import InputError
from radiogenomics.radiobiology._validation import non_negative, positive
from radiogenomics.radiobiology.gard import PatientLQ, dose_for_gard_lq, gard_lq
from radiogenomics.radiobiology.ntcp import ntcp_from_dvh, ntcp_parameters
from radiogenomics.radiobiology.rails import Rails, _dvh_arrays, apply_rails, load_rails


@dataclass(frozen=True)
class DoseTargets:
    """The dose fields of one prescription record (names as in contract section 2)."""

    alpha_per_gy: float
    beta_per_gy2: float
    alpha_beta_gy: float
    dose_per_fraction_gy: float
    n_fractions: float
    gard: float
    target_gard: float
    dose_for_target_gard_gy: float
    recommended_total_dose_gy: float
    toxicity: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def as_record(self) -> dict[str, Any]:
        """The fields as a dict keyed by the contract's column names."""
        return {
            "alpha_per_gy": self.alpha_per_gy, "beta_per_gy2": self.beta_per_gy2,
            "alpha_beta_gy": self.alpha_beta_gy, "dose_per_fraction_gy": self.dose_per_fraction_gy,
            "n_fractions": self.n_fractions, "gard": self.gard, "target_gard": self.target_gard,
            "dose_for_target_gard_gy": self.dose_for_target_gard_gy,
            "recommended_total_dose_gy": self.recommended_total_dose_gy, "toxicity": dict(self.toxicity),
            "flags": list(self.flags),
        }


def toxicity_at_dose(oar_dvhs: Mapping[str, Any], reference_prescription_gy: float, prescription_gy: float, *,
                     rails: Rails | None = None) -> dict[str, float]:
    """NTCP per endpoint at ``prescription_gy``, each OAR DVH (planned at the reference) scaled with it.

    Endpoints come from the rails' OAR table (e.g. parotid -> xerostomia); several structures of one
    endpoint (left/right parotid) report the highest NTCP. LKB parameters from ntcp_parameters.yaml.
    """
    rails = rails or load_rails()
    ref = float(positive(reference_prescription_gy, "reference_prescription_gy"))
    scale = float(non_negative(prescription_gy, "prescription_gy")) / ref
    out: dict[str, float] = {}
    for name, value in oar_dvhs.items():
        lim = rails.oar(name)
        if lim is None or lim.endpoint is None:
            continue
        dose, vol, _, _ = _dvh_arrays(value, name)
        p = ntcp_parameters(lim.endpoint)
        ntcp = ntcp_from_dvh(dose * scale, vol, td50_gy=p.td50_gy, m=p.m, n=p.n)
        out[lim.endpoint] = max(out.get(lim.endpoint, 0.0), ntcp)
    return out


def dose_targets(lq: PatientLQ, *, site: str, target_gard: float, n_fractions: float = 35,
                 dose_per_fraction_gy: float = 2.0, oar_dvhs: Mapping[str, Any] | None = None,
                 reference_prescription_gy: float | None = None, rails: Rails | None = None) -> DoseTargets:
    """Dose fields of a prescription record for one patient (Scott 2017; rails; LKB).

    ``gard``: GARD of the regimen ``n_fractions x dose_per_fraction_gy``; ``dose_for_target_gard_gy``:
    total dose at ``dose_per_fraction_gy`` reaching ``target_gard`` (a parameter, never a constant);
    ``recommended_total_dose_gy``: that dose after :func:`apply_rails` (flags ``clipped_max`` /
    ``clipped_min``); ``toxicity``: NTCP per endpoint at the recommended dose when OAR DVHs are given.
    """
    rails = rails or load_rails()
    n = float(positive(n_fractions, "n_fractions"))
    d = float(positive(dose_per_fraction_gy, "dose_per_fraction_gy"))
    target = float(non_negative(target_gard, "target_gard"))
    regimen_gard = float(gard_lq(lq.alpha_per_gy, n * d, n, lq.beta_per_gy2))
    needed = float(dose_for_gard_lq(lq.alpha_per_gy, target, beta_per_gy2=lq.beta_per_gy2,
                                    dose_per_fraction_gy=d))
    decision = apply_rails(needed, site=site, dose_per_fraction_gy=d, oar_dvhs=oar_dvhs,
                           reference_prescription_gy=reference_prescription_gy, rails=rails)
    toxicity: dict[str, float] = {}
    if oar_dvhs and decision.feasible:
        if reference_prescription_gy is None:
            raise InputError("oar_dvhs need reference_prescription_gy.")
        toxicity = toxicity_at_dose(oar_dvhs, reference_prescription_gy, decision.recommended_total_dose_gy,
                                    rails=rails)
    flags = list(dict.fromkeys([*lq.flags, *decision.flags]))
    return DoseTargets(
        alpha_per_gy=lq.alpha_per_gy, beta_per_gy2=lq.beta_per_gy2,
        alpha_beta_gy=lq.alpha_beta_gy if lq.beta_per_gy2 > 0 else math.inf,
        dose_per_fraction_gy=d, n_fractions=n, gard=regimen_gard, target_gard=target,
        dose_for_target_gard_gy=needed, recommended_total_dose_gy=decision.recommended_total_dose_gy,
        toxicity=toxicity, flags=flags, reasons=[*lq.reasons, *decision.reasons])
