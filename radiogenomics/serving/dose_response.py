"""TCP and NTCP against prescribed total dose for one patient: the planner page's dose-response plot.

* **TCP**: Poisson LQ (Webb & Nahum, Phys Med Biol 1993;38:653; :func:`radiogenomics.radiobiology.tcp_poisson`)
  with the record's ``beta_per_gy2``, at the regimen's dose per fraction (the total dose varies through the number
  of fractions), for a uniform dose to the GTV, **averaged over the uncertainty of the patient's alpha**: alpha is
  taken as normal with the record's ``alpha_per_gy`` as mean and the SD that makes the record's RSI interval
  (``rsi_lower``/``rsi_upper`` -> alpha, Scott et al. 2017) its central interval of the record's coverage (90 %:
  +-1.645 SD), truncated at alpha > 0 (Gauss-Hermite quadrature, 41 nodes) - the inter-patient heterogeneity
  treatment of Webb & Nahum 1993, here for the uncertainty of one patient's alpha. A single alpha makes the curve
  a step (alpha 0.41 /Gy: TCP 0 -> 1 between 35 and 45 Gy), which reads as "any dose above 45 Gy is enough";
  averaged over the interval it rises over the doses the interval allows. ``tcp_low`` / ``tcp_high``: TCP at the
  interval's two alpha ends (the band). Without an interval the three curves coincide (``tcp_source`` says so).
  Clonogens: a density of :data:`CLONOGEN_DENSITY_PER_CC` = 10^7 per cm^3 (Webb & Nahum 1993; the value the
  outcome-calibrated alpha model fixes too, docs/models.md) times the GTV volume from the patient's shape features
  (:data:`GTV_VOLUME_COLUMNS`, mm^3), else :data:`DEFAULT_GTV_VOLUME_CC`. No oxygen effect here: the FMISO pO2
  map needs the images, which ``radiogenomics plan`` evaluates (docs/planning.md). ``tcp_source`` says which of
  these applied.
* **NTCP**: the prescriber's toxicity models (``predict_proba_at_dose``, the plan scaled to each total dose
  and delivered, like the TCP, at the record's dose per fraction: ``n = D / d`` fractions, whole or not, and
  the record's ``recommended_n_fractions`` at the recommended dose), i.e. exactly the function that gives the
  record's ``toxicity`` at the recommended regimen; the EQD2 dose scale of the models makes the curve depend
  on d. One curve per endpoint the record has a value for.
* **Rails**: the site's min/max total dose (``data/rails.yaml``).

The dose grid is ``n_points`` evenly spaced doses in (0, top] Gy, top = 1.25 x the larger of the site's maximum
and the recommended dose rounded up to 10 Gy, plus the recommended dose and the target-GARD dose (when inside the
range) as exact grid points, so the markers lie on the curves.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from radiogenomics.errors import InputError
from radiogenomics.models.prescriber import SITE_COLUMN, ModelInfo, Prescriber, toxicity_key
from radiogenomics.radiobiology import load_rails, tcp_poisson
from radiogenomics.radiobiology.tcp import CLONOGEN_DENSITY_PER_CC

#: GTV volume when the features have none: 30 cm^3, a typical head-and-neck primary (an assumption, unverified).
DEFAULT_GTV_VOLUME_CC = 30.0
#: Feature columns holding the GTV volume (pyradiomics shape, mm^3), in order of preference.
GTV_VOLUME_COLUMNS: tuple[str, ...] = (
    "ct.gtv.original_shape_MeshVolume", "ct.gtv.original_shape_VoxelVolume",
    "pet_fdg.gtv.original_shape_MeshVolume", "pet_fdg.gtv.original_shape_VoxelVolume",
    "mr_t1.gtv.original_shape_MeshVolume", "mr_t2.gtv.original_shape_MeshVolume")
MM3_PER_CC = 1000.0


def _finite_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def gtv_volume_cc(row: pd.Series) -> tuple[float, str]:
    """(GTV volume in cm^3, where it came from): the first positive :data:`GTV_VOLUME_COLUMNS` value, else
    :data:`DEFAULT_GTV_VOLUME_CC`."""
    for column in GTV_VOLUME_COLUMNS:
        volume_mm3 = _finite_or_none(row.get(column))
        if volume_mm3 is not None and volume_mm3 > 0:
            return volume_mm3 / MM3_PER_CC, f"GTV volume {volume_mm3 / MM3_PER_CC:.3g} cm^3 from {column}"
    return DEFAULT_GTV_VOLUME_CC, (f"no GTV volume in the features: default {DEFAULT_GTV_VOLUME_CC:g} cm^3 "
                                   "(typical head-and-neck primary, unverified)")


def dose_grid(top_gy: float, n_points: int, exact: list[float]) -> np.ndarray:
    """``n_points`` doses evenly spaced in (0, top_gy] plus the ``exact`` doses inside it, sorted, unique."""
    grid = np.linspace(top_gy / n_points, top_gy, n_points)
    extra = [d for d in exact if 0 < d <= top_gy]
    return np.unique(np.concatenate([grid, np.asarray(extra, dtype=np.float64)]))


def dose_response(prescriber: Prescriber, features: pd.DataFrame, model: ModelInfo, *,
                  n_fractions: float | None = None, dose_per_fraction_gy: float | None = None,
                  target_gard: float | None = None, n_points: int = 61) -> dict[str, Any]:
    """TCP and NTCP curves against total dose for the one patient in ``features`` (see the module docstring).

    Returns ``patient_id``, ``total_dose_gy`` (list), ``tcp`` (list), ``ntcp`` ({record toxicity key: list}),
    ``rails`` ({``min_total_dose_gy``, ``max_total_dose_gy``}), ``recommended_total_dose_gy``,
    ``dose_for_target_gard_gy`` (None when not finite) and ``tcp_source``. InputError for more or fewer than
    one patient, or bad features/regimen (as :meth:`Prescriber.predict_records`).
    """
    if isinstance(n_points, bool) or not isinstance(n_points, int) or not 2 <= n_points <= 1001:
        raise InputError(f"n_points must be a whole number in [2, 1001], got {n_points!r}", fix="use e.g. 61")
    if not isinstance(features, pd.DataFrame) or len(features) != 1:
        count = len(features) if isinstance(features, pd.DataFrame) else "no table"
        raise InputError(f"a dose-response curve needs exactly one patient, got {count}",
                         fix="send one patient per request")
    record = prescriber.predict_records(features, model=model, n_fractions=n_fractions,
                                        dose_per_fraction_gy=dose_per_fraction_gy, target_gard=target_gard)[0]
    table, _ = prescriber.prepare(features, n_fractions=n_fractions, dose_per_fraction_gy=dose_per_fraction_gy,
                                  target_gard=target_gard)
    row = table.iloc[0]
    site = row[SITE_COLUMN] if isinstance(row.get(SITE_COLUMN), str) and row[SITE_COLUMN] else prescriber.site
    site_rails = load_rails().site(str(site))
    recommended = _finite_or_none(record["recommended_total_dose_gy"])
    for_gard = _finite_or_none(record["dose_for_target_gard_gy"])
    top = 1.25 * max(site_rails.max_total_dose_gy, recommended or 0.0)
    doses = dose_grid(10.0 * math.ceil(top / 10.0), n_points, [d for d in (recommended, for_gard) if d is not None])

    alpha, beta = float(record["alpha_per_gy"]), float(record["beta_per_gy2"])
    d = float(record["dose_per_fraction_gy"])
    volume_cc, volume_note = gtv_volume_cc(row)
    clonogens = CLONOGEN_DENSITY_PER_CC * volume_cc
    ends = alpha_interval(record)
    tcp = averaged_tcp(doses, clonogens, alpha, beta, d, ends)
    low, high = ((tcp_poisson(doses, clonogens, a, beta, doses / d, axis=()) for a in ends) if ends
                 else (tcp, tcp))
    spread = (f"averaged over alpha ~ N({alpha:.4g}, {alpha_sd(alpha, ends):.3g}) /Gy from the record's RSI interval "
              f"(band: alpha {ends[0]:.4g}-{ends[1]:.4g})" if ends else
              f"at the record's alpha {alpha:.4g} /Gy only (the record has no RSI interval)")
    return {
        "patient_id": str(record["patient_id"]),
        "total_dose_gy": [float(v) for v in doses],
        "tcp": [float(v) for v in np.atleast_1d(tcp)],
        "tcp_low": [float(v) for v in np.atleast_1d(low)],
        "tcp_high": [float(v) for v in np.atleast_1d(high)],
        "ntcp": _ntcp_curves(prescriber, table, record, doses, _fractions(record, doses, d)),
        "rails": {"min_total_dose_gy": _finite_or_none(site_rails.min_total_dose_gy),
                  "max_total_dose_gy": _finite_or_none(site_rails.max_total_dose_gy)},
        "recommended_total_dose_gy": recommended,
        "dose_for_target_gard_gy": for_gard,
        "tcp_source": (f"Poisson LQ TCP (Webb & Nahum, Phys Med Biol 1993;38:653) at {d:g} Gy per fraction, "
                       f"{spread}, beta {beta:.4g} /Gy^2, uniform GTV dose, no oxygen effect (FMISO needs the "
                       f"images: radiogenomics plan); clonogens {clonogens:.3g} = {CLONOGEN_DENSITY_PER_CC:.0e} per "
                       f"cm^3 (Webb & Nahum 1993) x {volume_note}"),
    }


#: z of a central interval of the records' coverage (90 %: the conformal RSI interval).
INTERVAL_Z = 1.6448536269514722
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(41)


def alpha_interval(record: dict[str, Any]) -> tuple[float, float] | None:
    """(alpha at rsi_upper, alpha at rsi_lower): the record's RSI interval as alpha (Scott et al. 2017), or None."""
    from radiogenomics.radiobiology.gard import alpha_from_rsi

    bounds = [_finite_or_none(record.get("rsi_upper")), _finite_or_none(record.get("rsi_lower"))]
    beta = _finite_or_none(record.get("beta_per_gy2"))
    if beta is None or any(b is None for b in bounds):
        return None
    values = [float(alpha_from_rsi(float(b), beta, invalid="nan")) for b in bounds]  # type: ignore[arg-type]
    if not all(math.isfinite(v) and v > 0 for v in values) or values[0] >= values[1]:
        return None
    return values[0], values[1]


def alpha_sd(alpha: float, ends: tuple[float, float] | None) -> float:
    """SD of alpha whose central interval of the records' coverage is ``ends`` (half-width / 1.645)."""
    return 0.0 if ends is None else (ends[1] - ends[0]) / (2.0 * INTERVAL_Z)


def averaged_tcp(doses: np.ndarray, clonogens: float, alpha: float, beta: float, d: float,
                 ends: tuple[float, float] | None) -> np.ndarray:
    """Poisson TCP averaged over alpha ~ N(alpha, sd) truncated at alpha > 0 (probabilists' Gauss-Hermite)."""
    sd = alpha_sd(alpha, ends)
    if sd <= 0:
        return np.atleast_1d(np.asarray(tcp_poisson(doses, clonogens, alpha, beta, doses / d, axis=())))
    alphas = alpha + sd * _NODES
    keep = alphas > 0
    weights = _WEIGHTS[keep] / _WEIGHTS[keep].sum()
    curves = np.stack([np.asarray(tcp_poisson(doses, clonogens, a, beta, doses / d, axis=())) for a in alphas[keep]])
    return np.asarray(weights @ curves)


def _fractions(record: dict[str, Any], doses: np.ndarray, dose_per_fraction_gy: float) -> np.ndarray:
    """Number of fractions at each total dose: ``D / d``, and the record's recommended regimen (its
    ``recommended_n_fractions``) at the recommended total dose, where the record's toxicity was computed."""
    n = doses / dose_per_fraction_gy
    recommended = _finite_or_none(record["recommended_total_dose_gy"])
    recommended_n = _finite_or_none(record.get("recommended_n_fractions"))
    if recommended is not None and recommended_n is not None and recommended_n > 0:
        n[doses == recommended] = recommended_n
    return n


def _ntcp_curves(prescriber: Prescriber, table: pd.DataFrame, record: dict[str, Any],
                 doses: np.ndarray, n_fractions: np.ndarray) -> dict[str, list[float]]:
    """P(grade >= 2) per endpoint at each dose (in ``n_fractions`` fractions), for the endpoints the record has
    a toxicity value for."""
    rows = table.loc[table.index.repeat(len(doses))].reset_index(drop=True)
    curves: dict[str, list[float]] = {}
    for endpoint, model in sorted(prescriber.fast_models()[1].items()):  # same numbers, compiled pipelines
        key = toxicity_key(endpoint)
        if key not in record["toxicity"]:
            continue  # no recommended dose, or the plan's dose features are missing (never imputed)
        probability = model.predict_proba_at_dose(rows, prescription_gy=doses, n_fractions=n_fractions)[:, 1]
        curves[key] = [float(p) for p in probability]
    return curves
