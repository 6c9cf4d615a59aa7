"""Lyman-Kutcher-Burman NTCP with the generalised equivalent uniform dose (gEUD).

Sources: Lyman JT, Radiat Res Suppl 1985;8:S13; Kutcher GJ, Burman C, IJROBP 1989;16:1623;
Burman C et al., IJROBP 1991;21:123 (parameters); Niemierko A, Med Phys 1997;24:103 (gEUD).
``gEUD = (sum_i v_i D_i^a)^(1/a)`` with fractional volumes ``v_i`` of a differential DVH and
``a = 1/n`` (n = 1: mean dose); ``NTCP = Phi((gEUD - TD50) / (m TD50))``. Parameter sets are data
(``data/ntcp_parameters.yaml``, one source per row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.optimize import brentq
from scipy.special import ndtr, ndtri

from radiogenomics.errors import InputError
from radiogenomics.radiobiology._validation import (
    FloatArray,
    FloatOrArray,
    finite,
    non_negative,
    out,
    positive,
    probability_open,
)


@dataclass(frozen=True)
class NTCPParameters:
    """One LKB parameter set: TD50 (Gy), slope m, volume parameter n (a = 1/n), and its source."""

    endpoint: str
    td50_gy: float
    m: float
    n: float
    source: str
    organ: str = ""
    description: str = ""
    verified: bool = True

    @property
    def a(self) -> float:
        """gEUD exponent ``a = 1/n``."""
        return 1.0 / self.n


def _check_row(endpoint: str, row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise InputError(f"NTCP parameters for {endpoint!r} must be a mapping.", file=where)
    for key in ("td50_gy", "m", "n"):
        value = row.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or value <= 0:
            raise InputError(f"NTCP parameter {endpoint}.{key} must be a positive number, got {value!r}.",
                             file=where, fix=f"set {key} > 0.")
    source = row.get("source")
    if not isinstance(source, str) or not source.strip():
        raise InputError(f"NTCP parameter set {endpoint!r} has no source.", file=where,
                         fix="every row needs a literature source.")
    return {"td50_gy": float(row["td50_gy"]), "m": float(row["m"]), "n": float(row["n"]), "source": source,
            "organ": str(row.get("organ", "")), "description": str(row.get("description", "")),
            "verified": bool(row.get("verified", True))}


@lru_cache(maxsize=8)
def _load(path: str | None) -> dict[str, dict[str, Any]]:
    if path is None:
        text = resources.files("radiogenomics.radiobiology").joinpath("data/ntcp_parameters.yaml").read_text()
        where = "ntcp_parameters.yaml"
    else:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise InputError(f"cannot read NTCP parameter file: {exc}.", file=path) from exc
        where = path
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"NTCP parameter file is not valid YAML: {exc}.", file=where) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("endpoints"), dict) or not doc["endpoints"]:
        raise InputError("NTCP parameter file needs a non-empty 'endpoints' mapping.", file=where)
    return {str(k): _check_row(str(k), v, where) for k, v in doc["endpoints"].items()}


def load_ntcp_parameters(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The LKB parameter table: endpoint -> {td50_gy, m, n, source, organ, description, verified}.

    Default: the packaged ``data/ntcp_parameters.yaml`` (Burman 1991, Dijkema 2010, Dawson 2002). Pass
    ``path`` to use another validated table of the same form. Returns a fresh copy.
    """
    table = _load(None if path is None else str(path))
    return {k: dict(v) for k, v in table.items()}


def ntcp_parameters(endpoint: str, path: str | Path | None = None) -> NTCPParameters:
    """The :class:`NTCPParameters` of one endpoint (e.g. ``"xerostomia"``)."""
    table = load_ntcp_parameters(path)
    if endpoint not in table:
        raise InputError(f"unknown NTCP endpoint {endpoint!r}.", fix=f"use one of {sorted(table)}.")
    return NTCPParameters(endpoint=endpoint, **table[endpoint])


def geud(dose_gy: Any, volume: Any, a: float) -> FloatOrArray:
    """Generalised EUD (Gy) of a differential DVH: ``(sum_i v_i D_i^a)^(1/a)`` (Niemierko 1997).

    ``dose_gy``: bin doses (Gy); ``volume``: bin volumes (cc or fractions; normalised to sum 1 along the
    last axis). ``a = 1/n`` of the LKB model (a = 1: mean dose; large a -> max dose; a < 0 for targets).
    Leading axes broadcast (several DVHs at once).
    """
    dose = non_negative(dose_gy, "dose_gy")
    vol = non_negative(volume, "volume")
    a_f = float(finite(a, "a"))
    if a_f == 0:
        raise InputError("a must be non-zero (a = 1/n).", fix="pass a = 1/n with n > 0.")
    dose, vol = np.broadcast_arrays(np.atleast_1d(dose), np.atleast_1d(vol))
    total = vol.sum(axis=-1, keepdims=True)
    if (total <= 0).any():
        raise InputError("volume sums to zero: the DVH is empty.", fix="pass a DVH with positive volume.")
    v = vol / total
    occupied = v > 0
    if a_f > 0:
        scale = np.where(occupied, dose, 0.0).max(axis=-1, keepdims=True)
        safe = np.where(scale > 0, scale, 1.0)
        s = (v * (dose / safe) ** a_f).sum(axis=-1)
        result = np.where(scale[..., 0] > 0, safe[..., 0] * s ** (1.0 / a_f), 0.0)
    else:
        zero_dose = (occupied & (dose == 0)).any(axis=-1)
        scale = np.where(occupied, dose, np.inf).min(axis=-1, keepdims=True)
        safe = np.where((scale > 0) & np.isfinite(scale), scale, 1.0)
        with np.errstate(divide="ignore"):
            s = (np.where(occupied, v * (np.where(occupied, dose, 1.0) / safe) ** a_f, 0.0)).sum(axis=-1)
        result = np.where(zero_dose, 0.0, safe[..., 0] * s ** (1.0 / a_f))
    return out(result)


def lkb_ntcp(geud_gy: Any, td50_gy: Any, m: Any) -> FloatOrArray:
    """LKB NTCP ``Phi((gEUD - TD50) / (m TD50))`` (Lyman 1985; Kutcher & Burman 1989; Burman 1991)."""
    g = non_negative(geud_gy, "geud_gy")
    td50 = positive(td50_gy, "td50_gy")
    m_ = positive(m, "m")
    return out(ndtr((g - td50) / (m_ * td50)))


def geud_for_ntcp(ntcp: Any, td50_gy: Any, m: Any) -> FloatOrArray:
    """Inverse of :func:`lkb_ntcp`: the gEUD (Gy) whose NTCP equals ``ntcp``: ``TD50 (1 + m Phi^-1(p))``."""
    p = probability_open(ntcp, "ntcp")
    td50 = positive(td50_gy, "td50_gy")
    m_ = positive(m, "m")
    return out(np.maximum(td50 * (1.0 + m_ * ndtri(p)), 0.0))


def _eqd2_bins(dose: FloatArray, n_fractions: float | None, alpha_beta_gy: float | None) -> FloatArray:
    if (n_fractions is None) != (alpha_beta_gy is None):
        raise InputError("give both n_fractions and alpha_beta_gy (EQD2 conversion) or neither.")
    if n_fractions is None or alpha_beta_gy is None:
        return dose
    n = float(positive(n_fractions, "n_fractions"))
    ab = float(positive(alpha_beta_gy, "alpha_beta_gy"))
    return dose * (1.0 + dose / n / ab) / (1.0 + 2.0 / ab)


def ntcp_from_dvh(dose_gy: Any, volume: Any, *, td50_gy: float, m: float, n: float,
                  n_fractions: float | None = None, alpha_beta_gy: float | None = None) -> float:
    """LKB NTCP of a differential DVH (Burman 1991). With ``n_fractions`` and ``alpha_beta_gy`` each bin is
    first converted to EQD2 (Fowler 1989) so that non-2-Gy regimens use the conventional parameters."""
    dose = _eqd2_bins(non_negative(dose_gy, "dose_gy"), n_fractions, alpha_beta_gy)
    g = geud(dose, volume, 1.0 / float(positive(n, "n")))
    return float(lkb_ntcp(g, td50_gy, m))


def ntcp_for_endpoint(dose_gy: Any, volume: Any, endpoint: str, *, n_fractions: float | None = None,
                      alpha_beta_gy: float | None = None, parameters_path: str | Path | None = None) -> float:
    """LKB NTCP of a DVH with the tabulated parameters of ``endpoint`` (see ntcp_parameters.yaml)."""
    p = ntcp_parameters(endpoint, parameters_path)
    return ntcp_from_dvh(dose_gy, volume, td50_gy=p.td50_gy, m=p.m, n=p.n, n_fractions=n_fractions,
                         alpha_beta_gy=alpha_beta_gy)


def max_prescription_for_ntcp(dose_gy: Any, volume: Any, reference_prescription_gy: float, ntcp_limit: float,
                              *, td50_gy: float, m: float, n: float, n_fractions: float | None = None,
                              alpha_beta_gy: float | None = None) -> float:
    """Highest prescription (Gy) whose NTCP stays <= ``ntcp_limit``, the OAR DVH scaling with it.

    ``dose_gy``/``volume``: the OAR's differential DVH planned at ``reference_prescription_gy``; a
    prescription P gives bin doses ``D_i P / P_ref``. Without EQD2 conversion gEUD is homogeneous of degree
    1, so ``P_max = P_ref gEUD_max / gEUD_ref`` with ``gEUD_max = TD50 (1 + m Phi^-1(limit))`` (LKB,
    Burman 1991); with ``n_fractions`` and ``alpha_beta_gy`` (EQD2 per bin, Fowler 1989, fixed number of
    fractions) it is solved numerically. Returns ``inf`` when the OAR receives no dose.
    """
    dose = non_negative(dose_gy, "dose_gy")
    ref = float(positive(reference_prescription_gy, "reference_prescription_gy"))
    g_max = float(geud_for_ntcp(ntcp_limit, td50_gy, m))
    a = 1.0 / float(positive(n, "n"))
    g_ref = float(geud(dose, volume, a))
    if g_ref <= 0:
        return math.inf
    if n_fractions is None and alpha_beta_gy is None:
        return ref * g_max / g_ref
    _eqd2_bins(dose, n_fractions, alpha_beta_gy)  # validates the pair

    def excess(scale: float) -> float:
        return float(geud(_eqd2_bins(dose * scale, n_fractions, alpha_beta_gy), volume, a)) - g_max

    if excess(0.0) >= 0:
        return 0.0
    hi = max(1.0, g_max / g_ref)
    while excess(hi) < 0:
        hi *= 2.0
    return ref * float(brentq(excess, 0.0, hi, xtol=1e-12, rtol=1e-12))
