"""Comparison of pyradiomics with the IBSI 1 digital-phantom reference values.

The reference table (IBSI 1, via the Z-Rad CSV; see ../shared/data/ibsi/README.md) has one row per
(feature, matrix aggregation). pyradiomics implements four of the IBSI aggregations:

* ``3D``: 3D matrices, features averaged over the 13 directions (pyradiomics' default);
* ``3D_merged``: 3D, one matrix merged over directions (``weightingNorm: no_weighting``);
* ``2.5D``: in-plane neighbours only, matrices merged over slices, averaged over directions
  (``force2D: true``, ``force2Ddimension: 0``);
* ``2.5D_merged``: in-plane, merged over slices and directions.

Per-slice (IBSI "2D") aggregation does not exist in pyradiomics. Every reference row gets one status:
``match`` (within tolerance), ``deviation`` (outside tolerance for a known, documented reason, with the
correction that reconciles it), ``mismatch`` (outside tolerance, unexplained: a bug), ``not_implemented`` (no
pyradiomics equivalent) or ``no_reference`` (IBSI gives no consensus value).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from radiogenomics.features.radiomics_extraction import extract_radiomics, load_params, shipped_params_path

REFERENCE_FILE = "ibsi_1_reference_values_digital_phantom.csv"

#: pyradiomics setting overrides (on top of params/IBSI.yaml) per IBSI aggregation.
CONFIGS: dict[str, dict[str, Any]] = {
    "3D": {},
    "3D_merged": {"weightingNorm": "no_weighting"},
    "2.5D": {"force2D": True, "force2Ddimension": 0},
    "2.5D_merged": {"force2D": True, "force2Ddimension": 0, "weightingNorm": "no_weighting"},
}

# IBSI tag stem -> pyradiomics key (without the "original_" prefix). Aliases that pyradiomics documents as
# mathematically identical are used where pyradiomics deprecated the IBSI name.
_MORPH = {
    "morph_volume": "shape_MeshVolume",
    "morph_vol_approx": "shape_VoxelVolume",
    "morph_area_mesh": "shape_SurfaceArea",
    "morph_av": "shape_SurfaceVolumeRatio",
    "morph_comp_1": "shape_Compactness1",
    "morph_comp_2": "shape_Compactness2",
    "morph_sph_dispr": "shape_SphericalDisproportion",
    "morph_sphericity": "shape_Sphericity",
    "morph_diam": "shape_Maximum3DDiameter",
    "morph_pca_maj_axis": "shape_MajorAxisLength",
    "morph_pca_min_axis": "shape_MinorAxisLength",
    "morph_pca_least_axis": "shape_LeastAxisLength",
    "morph_pca_elongation": "shape_Elongation",
    "morph_pca_flatness": "shape_Flatness",
}
_STAT = {
    "stat_mean": "firstorder_Mean",
    "stat_var": "firstorder_Variance",
    "stat_skew": "firstorder_Skewness",
    "stat_kurt": "firstorder_Kurtosis",
    "stat_median": "firstorder_Median",
    "stat_min": "firstorder_Minimum",
    "stat_p10": "firstorder_10Percentile",
    "stat_p90": "firstorder_90Percentile",
    "stat_max": "firstorder_Maximum",
    "stat_iqr": "firstorder_InterquartileRange",
    "stat_range": "firstorder_Range",
    "stat_mad": "firstorder_MeanAbsoluteDeviation",
    "stat_rmad": "firstorder_RobustMeanAbsoluteDeviation",
    "stat_energy": "firstorder_Energy",
    "stat_rms": "firstorder_RootMeanSquared",
    "ih_entropy": "firstorder_Entropy",
    "ih_uniformity": "firstorder_Uniformity",
}
_CM = {
    "joint_max": "MaximumProbability", "joint_avg": "JointAverage", "joint_var": "SumSquares",
    "joint_entr": "JointEntropy", "diff_avg": "DifferenceAverage", "diff_var": "DifferenceVariance",
    "diff_entr": "DifferenceEntropy", "sum_avg": "SumAverage", "sum_var": "ClusterTendency",
    "sum_entr": "SumEntropy", "energy": "JointEnergy", "contrast": "Contrast",
    "dissimilarity": "DifferenceAverage", "inv_diff": "Id", "inv_diff_norm": "Idn", "inv_diff_mom": "Idm",
    "inv_diff_mom_norm": "Idmn", "inv_var": "InverseVariance", "corr": "Correlation",
    "auto_corr": "Autocorrelation", "clust_tend": "ClusterTendency", "clust_shade": "ClusterShade",
    "clust_prom": "ClusterProminence", "info_corr1": "Imc1", "info_corr2": "Imc2",
}
_RLM = {
    "sre": "ShortRunEmphasis", "lre": "LongRunEmphasis", "lgre": "LowGrayLevelRunEmphasis",
    "hgre": "HighGrayLevelRunEmphasis", "srlge": "ShortRunLowGrayLevelEmphasis",
    "srhge": "ShortRunHighGrayLevelEmphasis", "lrlge": "LongRunLowGrayLevelEmphasis",
    "lrhge": "LongRunHighGrayLevelEmphasis", "glnu": "GrayLevelNonUniformity",
    "glnu_norm": "GrayLevelNonUniformityNormalized", "rlnu": "RunLengthNonUniformity",
    "rlnu_norm": "RunLengthNonUniformityNormalized", "r_perc": "RunPercentage", "gl_var": "GrayLevelVariance",
    "rl_var": "RunVariance", "rl_entr": "RunEntropy",
}
_SZM = {
    "sze": "SmallAreaEmphasis", "lze": "LargeAreaEmphasis", "lgze": "LowGrayLevelZoneEmphasis",
    "hgze": "HighGrayLevelZoneEmphasis", "szlge": "SmallAreaLowGrayLevelEmphasis",
    "szhge": "SmallAreaHighGrayLevelEmphasis", "lzlge": "LargeAreaLowGrayLevelEmphasis",
    "lzhge": "LargeAreaHighGrayLevelEmphasis", "glnu": "GrayLevelNonUniformity",
    "glnu_norm": "GrayLevelNonUniformityNormalized", "zsnu": "SizeZoneNonUniformity",
    "zsnu_norm": "SizeZoneNonUniformityNormalized", "z_perc": "ZonePercentage", "gl_var": "GrayLevelVariance",
    "zs_var": "ZoneVariance", "zs_entr": "ZoneEntropy",
}
_NGT = {"coarseness": "Coarseness", "contrast": "Contrast", "busyness": "Busyness", "complexity": "Complexity",
        "strength": "Strength"}
_NGL = {
    "lde": "SmallDependenceEmphasis", "hde": "LargeDependenceEmphasis", "lgce": "LowGrayLevelEmphasis",
    "hgce": "HighGrayLevelEmphasis", "ldlge": "SmallDependenceLowGrayLevelEmphasis",
    "ldhge": "SmallDependenceHighGrayLevelEmphasis", "hdlge": "LargeDependenceLowGrayLevelEmphasis",
    "hdhge": "LargeDependenceHighGrayLevelEmphasis", "glnu": "GrayLevelNonUniformity",
    "dcnu": "DependenceNonUniformity", "dcnu_norm": "DependenceNonUniformityNormalized",
    "gl_var": "GrayLevelVariance", "dc_var": "DependenceVariance", "dc_entr": "DependenceEntropy",
}
_MATRIX = {"cm": ("glcm", _CM), "rlm": ("glrlm", _RLM), "szm": ("glszm", _SZM), "ngt": ("ngtdm", _NGT),
           "ngl": ("gldm", _NGL)}
_SUFFIX = {"_3D_avg": "3D", "_3D_comb": "3D_merged", "_2_5D_avg": "2.5D", "_2_5D_comb": "2.5D_merged",
           "_3D": "3D", "_2_5D": "2.5D"}

#: Aliases: IBSI features pyradiomics computes under another (mathematically identical) name.
ALIASES: dict[str, str] = {
    "cm_dissimilarity": "IBSI dissimilarity = difference average; pyradiomics deprecated the duplicate",
    "cm_sum_var": "IBSI sum variance = cluster tendency; pyradiomics deprecated the duplicate",
    "ngl_glnu_norm": "IBSI normalised NGLDM grey level non-uniformity = first-order uniformity (pyradiomics "
                     "deprecated gldm_GrayLevelNonUniformityNormalized as that duplicate)",
}


@dataclass(frozen=True)
class Deviation:
    """A known difference between pyradiomics and IBSI, with the correction that reconciles them."""

    reason: str
    correct: Callable[[float, int], float]  # (pyradiomics value, ROI voxel count) -> IBSI value
    correction: str


_PCA_REASON = ("pyradiomics normalises the ROI coordinate covariance by N (population covariance); "
               "IBSI uses N-1, so axis lengths differ by sqrt(N/(N-1)) (0.7 % for the 74-voxel phantom)")
DEVIATIONS: dict[str, Deviation] = {
    "stat_kurt": Deviation("pyradiomics reports kurtosis; IBSI reports excess kurtosis (kurtosis - 3)",
                           lambda v, n: v - 3.0, "value - 3"),
    "morph_pca_maj_axis": Deviation(_PCA_REASON, lambda v, n: v * math.sqrt(n / (n - 1)), "value * sqrt(N/(N-1))"),
    "morph_pca_min_axis": Deviation(_PCA_REASON, lambda v, n: v * math.sqrt(n / (n - 1)), "value * sqrt(N/(N-1))"),
    "morph_pca_least_axis": Deviation(_PCA_REASON, lambda v, n: v * math.sqrt(n / (n - 1)),
                                      "value * sqrt(N/(N-1))"),
}

_NOT_IMPLEMENTED_PREFIX = {
    "loc_": "local/global intensity peak is not implemented in pyradiomics",
    "ivh_": "the intensity-volume histogram family is not implemented in pyradiomics",
    "dzm_": "the distance zone matrix is not implemented in pyradiomics",
    "ih_": "pyradiomics computes these first-order statistics on the original intensities (compared as stat_*), "
           "and has no histogram mode or histogram gradient features",
}
_NOT_IMPLEMENTED = {
    "morph_asphericity": "not implemented in pyradiomics (equals spherical disproportion - 1)",
    "morph_com": "centre of mass shift is not implemented in pyradiomics",
    "morph_vol_dens_aabb": "volume/area densities are not implemented in pyradiomics",
    "morph_area_dens_aabb": "volume/area densities are not implemented in pyradiomics",
    "morph_vol_dens_aee": "volume/area densities are not implemented in pyradiomics",
    "morph_area_dens_aee": "volume/area densities are not implemented in pyradiomics",
    "morph_vol_dens_conv_hull": "volume/area densities are not implemented in pyradiomics",
    "morph_area_dens_conv_hull": "volume/area densities are not implemented in pyradiomics",
    "morph_integ_int": "integrated intensity is not implemented in pyradiomics",
    "morph_moran_i": "Moran's I is not implemented in pyradiomics",
    "morph_geary_c": "Geary's C is not implemented in pyradiomics",
    "stat_medad": "median absolute deviation is not implemented in pyradiomics",
    "stat_cov": "coefficient of variation is not implemented in pyradiomics",
    "stat_qcod": "quartile coefficient of dispersion is not implemented in pyradiomics",
    "ngl_dc_perc": "pyradiomics deprecated dependence count percentage (always 1) and does not compute it",
    "ngl_dc_energy": "dependence count energy is not implemented in pyradiomics",
}
_NO_2D = "pyradiomics has no per-slice (2D) aggregation; its force2D mode gives the 2.5D values"


def load_reference(ibsi_dir: Path) -> pd.DataFrame:
    """The IBSI 1 digital-phantom reference table (tag, family, feature, reference, tolerance)."""
    df = pd.read_csv(Path(ibsi_dir) / REFERENCE_FILE, encoding="utf-8-sig")
    df = df.rename(columns={"reference value": "reference"})
    return df[["tag", "family", "feature", "consensus", "reference", "tolerance"]].copy()


def allowed_difference(reference: float, tolerance: float) -> float:
    """The IBSI tolerance; a zero tolerance means "equal at the 3 significant digits the table gives"."""
    if tolerance > 0:
        return float(tolerance)
    if reference == 0:
        return 5e-4
    exponent = math.floor(math.log10(abs(reference))) - 2
    return 0.5 * 10.0**exponent


def map_tag(tag: str) -> tuple[str | None, str | None, str | None]:
    """IBSI tag -> (pyradiomics key, configuration, reason it is not implemented)."""
    if tag in _MORPH:
        return f"original_{_MORPH[tag]}", "3D", None
    if tag in _STAT:
        return f"original_{_STAT[tag]}", "3D", None
    if tag in _NOT_IMPLEMENTED:
        return None, None, _NOT_IMPLEMENTED[tag]
    family = tag.split("_", 1)[0]
    for suffix in sorted(_SUFFIX, key=len, reverse=True):
        if tag.endswith(suffix):
            stem = tag[: -len(suffix)]
            break
    else:
        if "_2D" in tag:
            return None, None, _NO_2D
        for prefix, reason in _NOT_IMPLEMENTED_PREFIX.items():
            if tag.startswith(prefix):
                return None, None, reason
        return None, None, "no pyradiomics equivalent"
    config = _SUFFIX[suffix]
    if stem in _NOT_IMPLEMENTED:
        return None, None, _NOT_IMPLEMENTED[stem]
    for prefix, reason in _NOT_IMPLEMENTED_PREFIX.items():
        if tag.startswith(prefix):
            return None, None, reason
    if family in _MATRIX:
        pyrad_class, names = _MATRIX[family]
        name = stem.split("_", 1)[1]
        if stem == "ngl_glnu_norm":
            return "original_firstorder_Uniformity", config, None
        if name in names:
            return f"original_{pyrad_class}_{names[name]}", config, None
    return None, None, "no pyradiomics equivalent"


def run_pyradiomics(phantom: sitk.Image, mask: sitk.Image) -> dict[str, dict[str, float]]:
    """pyradiomics features of the phantom for every IBSI configuration (params/IBSI.yaml + overrides)."""
    base = load_params(shipped_params_path("IBSI"))
    results: dict[str, dict[str, float]] = {}
    for name, overrides in CONFIGS.items():
        params = {**base, "setting": {**base.get("setting", {}), **overrides}}
        results[name] = extract_radiomics(phantom, mask, params)
    return results


def compare(ibsi_dir: Path) -> pd.DataFrame:
    """Every reference row with pyradiomics' value, the allowed difference and a status (see module doc)."""
    ibsi_dir = Path(ibsi_dir)
    phantom = sitk.ReadImage(str(ibsi_dir / "phantom.nii.gz"))
    mask = sitk.ReadImage(str(ibsi_dir / "mask.nii.gz"))
    mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
    n_voxels = int(sitk.GetArrayViewFromImage(mask).sum())
    values = run_pyradiomics(phantom, mask)
    rows = []
    for rec in load_reference(ibsi_dir).to_dict("records"):
        tag = str(rec["tag"])
        key, config, reason = map_tag(tag)
        stem = next((tag[: -len(s)] for s in sorted(_SUFFIX, key=len, reverse=True) if tag.endswith(s)), tag)
        ref, tol = float(rec["reference"]), float(rec["tolerance"])
        row: dict[str, Any] = {"tag": tag, "family": rec["family"], "feature": rec["feature"],
                               "config": config, "pyradiomics": key, "reference": ref, "tolerance": tol,
                               "allowed": np.nan, "value": np.nan, "difference": np.nan,
                               "corrected": np.nan, "status": "", "note": reason or ""}
        if not math.isfinite(ref):
            row["status"] = "no_reference"
            row["note"] = "IBSI gives no consensus value"
        elif key is None or config is None:
            row["status"] = "not_implemented"
        else:
            value = values[config][key]
            allowed = allowed_difference(ref, tol)
            row.update(value=value, allowed=allowed, difference=value - ref)
            within = abs(value - ref) <= allowed
            deviation = DEVIATIONS.get(stem)
            if deviation is not None:
                row["corrected"] = deviation.correct(value, n_voxels)
                row["status"] = "match" if within else "deviation"
                row["note"] = f"{deviation.reason}; IBSI value = {deviation.correction}"
            else:
                row["status"] = "match" if within else "mismatch"
                row["note"] = ALIASES.get(stem, "")
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(result: pd.DataFrame) -> str:
    """The compared rows (match/deviation/mismatch) as a Markdown table for docs/features.md."""
    lines = ["| IBSI tag | aggregation | pyradiomics feature | reference | allowed | pyradiomics | status |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for rec in result[result["status"].isin(["match", "deviation", "mismatch"])].to_dict("records"):
        lines.append(f"| `{rec['tag']}` | {rec['config']} | `{rec['pyradiomics']}` | {rec['reference']:.4g} | "
                     f"±{rec['allowed']:.3g} | {rec['value']:.4g} | {rec['status']} |")
    return "\n".join(lines)
