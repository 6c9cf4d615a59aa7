"""The report's figures: matplotlib (Agg) figures turned into base64 PNG data URIs (no external file, no CDN).

Every figure has a title, labelled axes with units and a legend or colour bar where it shows more than one
thing. Each function returns a new ``Figure``; :func:`data_uri` renders and closes it.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

#: Resolution of the embedded PNGs (dots per inch): sharp in a browser, a few tens of kB per figure.
DPI = 110
PNG_PREFIX = "data:image/png;base64,"
#: Sub-voxels per voxel edge when a mask outline is drawn.
CONTOUR_UPSAMPLING = 8


def data_uri(figure: Figure) -> str:
    """``data:image/png;base64,...`` of ``figure`` (tight bounding box); closes the figure."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(figure)
    return PNG_PREFIX + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_data_uri(png: bytes) -> str:
    """A data URI of PNG bytes that already exist (an MLflow artifact)."""
    return PNG_PREFIX + base64.b64encode(png).decode("ascii")


def _axes(title: str, xlabel: str, ylabel: str, size: tuple[float, float] = (5.6, 4.0)) -> tuple[Figure, Any]:
    fig, ax = plt.subplots(figsize=size)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def count_bars(counts: Mapping[str, int], *, title: str, xlabel: str, ylabel: str = "patients") -> Figure:
    """Vertical bars of ``{category: count}`` with the count written on each bar."""
    labels = [str(k) for k in counts]
    values = [int(v) for v in counts.values()]
    fig, ax = _axes(title, xlabel, ylabel, size=(max(3.6, 0.7 * len(labels) + 2.0), 3.4))
    bars = ax.bar(labels, values, color="#4C72B0")
    ax.bar_label(bars, padding=2)
    ax.set_ylim(0, max(values + [1]) * 1.18)
    ax.tick_params(axis="x", labelrotation=30 if len(labels) > 5 else 0)
    return fig


def km_by_group(curves: Sequence[tuple[str, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]], *,
                title: str, p_value: float | None) -> Figure:
    """Kaplan-Meier step curves, ``(label, times_months, survival, (ci_low, ci_high) or None)`` per group."""
    fig, ax = _axes(title, "time from start of RT (months)", "local control probability", size=(6.4, 4.4))
    for label, times, surv, ci in curves:
        t = np.concatenate([[0.0], times])
        s = np.concatenate([[1.0], surv])
        (line,) = ax.step(t, s, where="post", label=label, lw=1.8)
        if ci is not None:
            low = np.concatenate([[1.0], ci[0]])
            high = np.concatenate([[1.0], ci[1]])
            ax.fill_between(t, low, high, step="post", alpha=0.12, color=line.get_color())
    ax.set_ylim(0, 1.03)
    ax.set_xlim(left=0)
    if p_value is not None:
        ax.text(0.98, 0.04, f"log-rank p = {p_value:.3g}", transform=ax.transAxes, ha="right", va="bottom",
                bbox={"facecolor": "white", "edgecolor": "grey", "alpha": 0.9})
    ax.legend(loc="lower left", fontsize=9, title="GARD group")
    return fig


def coverage_by_fold(folds: Sequence[str], coverage: Sequence[float], *, nominal: float,
                     band: tuple[float, float] | None, pooled: float | None) -> Figure:
    """Empirical coverage of the prediction intervals per outer fold against the nominal level."""
    fig, ax = _axes("Conformal interval coverage (held-out folds)", "outer fold", "empirical coverage",
                    size=(5.6, 3.8))
    ax.bar([str(f) for f in folds], [float(c) for c in coverage], color="#55A868", label="fold coverage")
    ax.axhline(nominal, color="black", ls="--", lw=1.2, label=f"nominal {nominal:.0%}")
    if band is not None:
        ax.axhspan(band[0], band[1], color="grey", alpha=0.15, label=f"accepted band {band[0]:.2f}-{band[1]:.2f}")
    if pooled is not None:
        ax.axhline(pooled, color="#C44E52", lw=1.2, label=f"pooled {pooled:.2f}")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def dose_map_slice(dose_gy: np.ndarray, *, spacing_mm: tuple[float, float], title: str,
                   contour: np.ndarray | None = None, underlay: np.ndarray | None = None) -> Figure:
    """One axial slice of a dose map (Gy) with a colour bar; optional CT underlay and target contour.

    ``dose_gy``, ``contour`` and ``underlay`` are 2-D arrays (rows = y, columns = x); ``spacing_mm`` is
    (row, column) spacing, so the axes are in millimetres.
    """
    rows, cols = dose_gy.shape
    extent = (0.0, cols * spacing_mm[1], rows * spacing_mm[0], 0.0)
    fig, ax = plt.subplots(figsize=(5.8, 4.8))
    if underlay is not None:
        ax.imshow(underlay, cmap="gray", extent=extent, interpolation="nearest")
    shown = np.ma.masked_where(dose_gy <= 0, dose_gy)
    image = ax.imshow(shown, cmap="turbo", extent=extent, interpolation="nearest",
                      alpha=0.8 if underlay is not None else 1.0)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("prescribed dose (Gy)")
    if contour is not None and contour.any():
        # upsampled (nearest) so the outline follows the voxel edges instead of cutting through boundary voxels
        fine = np.kron(contour.astype(float), np.ones((CONTOUR_UPSAMPLING, CONTOUR_UPSAMPLING)))
        ys = (np.arange(fine.shape[0]) + 0.5) * spacing_mm[0] / CONTOUR_UPSAMPLING
        xs = (np.arange(fine.shape[1]) + 0.5) * spacing_mm[1] / CONTOUR_UPSAMPLING
        ax.contour(xs, ys, fine, levels=[0.5], colors="cyan", linewidths=1.2)
        ax.plot([], [], color="cyan", label="GTV")
        ax.legend(loc="upper right", fontsize=8)
    support = np.argwhere(dose_gy > 0)
    if support.size:  # zoom onto the map with a margin of half its extent (at least 3 voxels)
        lo, hi = support.min(axis=0), support.max(axis=0) + 1
        margin = np.maximum((hi - lo) // 2, 3)
        lo, hi = np.maximum(lo - margin, 0), np.minimum(hi + margin, [rows, cols])
        ax.set_xlim(lo[1] * spacing_mm[1], hi[1] * spacing_mm[1])
        ax.set_ylim(hi[0] * spacing_mm[0], lo[0] * spacing_mm[0])
    ax.set_title(title)
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    return fig


def dose_histogram(dose_gy: np.ndarray, *, title: str) -> Figure:
    """Histogram of the voxel doses inside the map's support (dose > 0)."""
    values = dose_gy[dose_gy > 0]
    fig, ax = _axes(title, "prescribed voxel dose (Gy)", "voxels", size=(5.0, 3.6))
    ax.hist(values, bins=min(40, max(5, values.size // 5)), color="#8172B2")
    if values.size:
        ax.axvline(float(values.mean()), color="black", ls="--", lw=1.2, label=f"mean {values.mean():.1f} Gy")
        ax.legend(loc="best", fontsize=8)
    return fig


#: Outline colours of the planned-dose slice and the DVHs (target first), colour-blind safe (Okabe & Ito 2008).
STRUCTURE_COLOURS = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#0072B2", "#D55E00", "#F0E442")


def _outline(ax: Any, mask: np.ndarray, spacing_mm: tuple[float, float], colour: str, label: str) -> None:
    fine = np.kron(mask.astype(float), np.ones((CONTOUR_UPSAMPLING, CONTOUR_UPSAMPLING)))
    ys = (np.arange(fine.shape[0]) + 0.5) * spacing_mm[0] / CONTOUR_UPSAMPLING
    xs = (np.arange(fine.shape[1]) + 0.5) * spacing_mm[1] / CONTOUR_UPSAMPLING
    ax.contour(xs, ys, fine, levels=[0.5], colors=colour, linewidths=1.2)
    ax.plot([], [], color=colour, label=label)


def planned_dose_slice(dose_gy: np.ndarray, *, spacing_mm: tuple[float, float], title: str,
                       outlines: Mapping[str, np.ndarray], underlay: np.ndarray | None = None,
                       threshold_gy: float = 1.0) -> Figure:
    """One axial slice of a planned dose (Gy, colour wash above ``threshold_gy``) over the CT, with the structures'
    outlines (2-D masks, rows = y) in the colours of :data:`STRUCTURE_COLOURS`."""
    rows, cols = dose_gy.shape
    extent = (0.0, cols * spacing_mm[1], rows * spacing_mm[0], 0.0)
    fig, ax = plt.subplots(figsize=(6.2, 5.0))
    if underlay is not None:
        ax.imshow(underlay, cmap="gray", extent=extent, interpolation="nearest")
    wash = np.ma.masked_where(dose_gy < threshold_gy, dose_gy)
    image = ax.imshow(wash, cmap="turbo", extent=extent, interpolation="nearest", alpha=0.55 if underlay is not None
                      else 1.0)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("planned total dose (Gy)")
    for (name, mask), colour in zip(outlines.items(), STRUCTURE_COLOURS, strict=False):
        if mask.any():
            _outline(ax, mask, spacing_mm, colour, name)
    if outlines:
        ax.legend(loc="upper right", fontsize=7)
    ax.set_title(title)
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    return fig


def cumulative_dvhs(curves: Mapping[str, Sequence[np.ndarray]], *, title: str,
                    labels: Sequence[str] = ("planned", "standard uniform")) -> Figure:
    """Cumulative DVHs (volume % receiving at least D) per structure; each structure's voxel doses for each plan
    (solid: the first, dashed: the second), in the structure's colour."""
    fig, ax = _axes(title, "dose (Gy)", "volume (%)", size=(6.2, 4.2))
    styles = ("-", "--", ":")
    for (name, plans), colour in zip(curves.items(), STRUCTURE_COLOURS, strict=False):
        for voxels, style, label in zip(plans, styles, labels, strict=False):
            doses = np.sort(np.asarray(voxels, dtype=float))
            if doses.size == 0:
                continue
            volume = 100.0 * (1.0 - np.arange(doses.size) / doses.size)
            ax.step(doses, volume, where="post", color=colour, ls=style,
                    label=f"{name} ({label})" if style == "-" or len(curves) == 1 else None)
    ax.plot([], [], color="grey", ls="-", label=labels[0])
    ax.plot([], [], color="grey", ls="--", label=labels[1])
    ax.set_ylim(0, 102)
    ax.legend(loc="upper right", fontsize=7, ncol=2)
    return fig
