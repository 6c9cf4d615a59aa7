"""Neck anatomy on a voxel grid: tissue classes for the images, the ROI label map and plan geometry.

Coordinates are physical millimetres relative to the centre of the field of view, in the LPS
convention of DICOM/ITK (+x patient left, +y posterior, +z superior); arrays are indexed ``[z, y, x]``
as in SimpleITK. Shapes are simple analytic solids (elliptic neck, vertebra and spinal canal, airway,
mandible, ellipsoidal parotids) plus an irregular tumour: a randomly oriented ellipsoid whose surface is
perturbed by a smooth random field. Sizes follow adult neck anatomy (assumption; parotid ~ 15-25 cc,
cord diameter ~ 8-10 mm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from radiogenomics.synthetic.model import PatientLatent

# Tissue classes (drive CT HU and PET uptake)
AIR, FAT, SOFT, PAROTID, BONE, MARROW, CORD, CSF, TUMOUR, DISC = range(10)

# Label values of the ROI label map (format v1 label column)
LABEL_GTV, LABEL_PAROTID_L, LABEL_PAROTID_R, LABEL_CORD, LABEL_PCM = 1, 2, 3, 4, 5
#: ROIs written to images.csv (name, label); label 5 (pharyngeal constrictors) is in the map and dvh.csv only
ROIS: tuple[tuple[str, int], ...] = (
    ("GTV", LABEL_GTV), ("parotid_l", LABEL_PAROTID_L), ("parotid_r", LABEL_PAROTID_R),
    ("spinal_cord", LABEL_CORD),
)
PCM_NAME = "pharyngeal_constrictors"

#: Reference grid: 64 voxels of (2.0, 2.0, 2.5) mm (x, y, z) -> 128 x 128 x 160 mm field of view.
REFERENCE_GRID = 64
REFERENCE_SPACING_MM = (2.0, 2.0, 2.5)


@dataclass(frozen=True)
class Geometry:
    """A cubic voxel grid: ``size`` voxels per axis, spacing and origin in (x, y, z) order (mm)."""

    size: int
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, self.size)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    @property
    def voxel_volume_cc(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates (mm, relative to the field-of-view centre) along z, y, x."""
        idx = np.arange(self.size, dtype=np.float64) - (self.size - 1) / 2.0
        return idx * self.spacing[2], idx * self.spacing[1], idx * self.spacing[0]


def make_geometry(grid_size: int, offset_mm: tuple[float, float, float]) -> Geometry:
    """Grid of ``grid_size``^3 voxels whose spacing scales so the field of view stays 128 x 128 x 160 mm."""
    scale = REFERENCE_GRID / grid_size
    spacing = tuple(round(s * scale, 6) for s in REFERENCE_SPACING_MM)
    origin = tuple(round(offset_mm[k] - (grid_size - 1) / 2.0 * spacing[k], 3) for k in range(3))
    return Geometry(size=grid_size, spacing=spacing, origin=origin)  # type: ignore[arg-type]


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma_mm: float,
                 spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Zero-mean, unit-sd Gaussian random field with Gaussian correlation of ``sigma_mm``."""
    white = rng.standard_normal(shape)
    sigma = [max(sigma_mm / s, 1e-3) for s in spacing_zyx]
    field = ndimage.gaussian_filter(white, sigma=sigma, mode="reflect", truncate=3.0)
    sd = float(field.std())
    return (field - float(field.mean())) / sd if sd > 0 else field


@dataclass
class Anatomy:
    """Voxel anatomy of one patient plus the geometric parameters the plan model needs."""

    geometry: Geometry
    tissue: np.ndarray             # uint8 tissue classes
    labels: np.ndarray             # uint8 ROI label map
    body: np.ndarray               # bool
    gtv_depth: np.ndarray          # float: normalised radius (0 centre, 1 surface) inside the GTV box
    gtv_box: tuple[slice, slice, slice]
    gtv_side: int                  # +1 left, -1 right
    cord_distance_mm: np.ndarray   # distance to the cord surface (0 inside)
    parotid_distance_mm: dict[str, np.ndarray]
    nodal_distance_mm: np.ndarray  # distance to the elective nodal volumes (0 inside)
    zyx: tuple[np.ndarray, np.ndarray, np.ndarray]


def _ellipse_q(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float | np.ndarray,
               ay: float | np.ndarray) -> np.ndarray:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2


def _at_least(score: np.ndarray, inside: np.ndarray, min_count: int) -> np.ndarray:
    """``inside``, or the ``min_count`` voxels with the lowest finite score when fewer are inside."""
    if int(inside.sum()) >= min_count:
        return inside
    flat = score.ravel()
    finite = np.isfinite(flat)
    k = int(min(min_count, finite.sum()))
    out = np.zeros(flat.shape, dtype=bool)
    if k > 0:
        candidates = np.flatnonzero(finite)
        order = np.argsort(flat[candidates], kind="stable")[:k]
        out[candidates[order]] = True
    return out.reshape(score.shape)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def build_anatomy(rng: np.random.Generator, geometry: Geometry, patient: PatientLatent,
                  *, p_unilateral_neck: float = 0.5) -> Anatomy:
    """Draw one patient's neck anatomy and tumour on ``geometry``."""
    zc, yc, xc = geometry.axes()
    Z, Y, X = zc[:, None, None], yc[None, :, None], xc[None, None, :]
    sz, sy, sx = geometry.spacing_zyx
    shape = geometry.shape

    # --- body, fat, bones, canal, airway ----------------------------------------------------------
    a0 = float(np.clip(rng.normal(53.0, 2.5), 47.0, 56.0))
    b0 = float(np.clip(rng.normal(46.0, 2.5), 40.0, 50.0))
    yb = 4.0
    a_z = a0 * (1.0 + 0.10 * Z / 80.0)
    b_z = b0 * (1.0 + 0.06 * Z / 80.0)
    q_body = ((X / a_z) ** 2 + ((Y - yb) / b_z) ** 2)
    body = q_body <= 1.0
    fat_t = float(rng.uniform(4.0, 9.0))
    inner = ((X / (a_z - fat_t)) ** 2 + ((Y - yb) / (b_z - fat_t)) ** 2) <= 1.0
    tissue = np.full(shape, AIR, dtype=np.uint8)
    tissue[body] = FAT
    tissue[inner & body] = SOFT

    rv = float(rng.uniform(9.0, 11.5))
    yv = yb + 0.30 * b0
    r_vert = np.sqrt(X**2 + (Y - yv) ** 2)
    vert = np.broadcast_to(r_vert <= rv, shape)
    tissue[vert] = MARROW
    tissue[np.broadcast_to((r_vert <= rv) & (r_vert > rv - 2.0), shape)] = BONE
    disc_phase = float(rng.uniform(0.0, 17.0))
    disc = np.broadcast_to((np.mod(Z + disc_phase, 17.0) < 4.0) & (r_vert <= rv - 1.0), shape)
    tissue[disc] = DISC
    y_canal = yv + rv + 6.5
    r_canal = np.sqrt(X**2 + (Y - y_canal) ** 2)
    tissue[np.broadcast_to((r_canal > 6.5) & (r_canal <= 10.0) & (Y > yv), shape)] = BONE
    tissue[np.broadcast_to(r_canal <= 6.5, shape)] = CSF
    r_cord = float(rng.uniform(4.0, 5.0))
    r_cord_eff = max(r_cord, 0.71 * max(geometry.spacing[0], geometry.spacing[1]))
    cord = np.broadcast_to(r_canal <= r_cord_eff, shape)
    tissue[cord] = CORD
    cord_distance = np.broadcast_to(np.maximum(r_canal - r_cord, 0.0), shape)

    ya = yb - 0.28 * b0
    ax_air = float(rng.uniform(7.0, 11.0)) * (1.0 + 0.2 * np.sin(Z / 25.0))
    ay_air = float(rng.uniform(4.5, 7.0))
    q_air = _ellipse_q(X, Y, 0.0, ya, ax_air, ay_air)
    pharynx_z = (Z > -60.0) & (Z < 45.0)
    airway = (q_air <= 1.0) & pharynx_z
    tissue[np.broadcast_to(airway, shape)] = AIR
    pcm = (_ellipse_q(X, Y, 0.0, ya, ax_air + 4.0, ay_air + 4.0) <= 1.0) & ~airway & pharynx_z & (Z > -40.0)

    z_mand = float(rng.uniform(15.0, 30.0))
    q_out = _ellipse_q(X, Y, 0.0, yb - 5.0, a0 - 8.0, b0 - 8.0)
    q_in = _ellipse_q(X, Y, 0.0, yb - 5.0, a0 - 15.0, b0 - 15.0)
    mandible = (q_out <= 1.0) & (q_in > 1.0) & (Y < ya - 4.0) & (Z > z_mand) & (Z < z_mand + 30.0)
    tissue[np.broadcast_to(mandible, shape)] = BONE
    # the tumour keeps >= 3 mm of soft tissue from air and bone (no air/bone partial volume inside the GTV)
    near_air = (_ellipse_q(X, Y, 0.0, ya, ax_air + 3.0, ay_air + 3.0) <= 1.0) & (Z > -63.0) & (Z < 48.0)
    near_mandible = (_ellipse_q(X, Y, 0.0, yb - 5.0, a0 - 5.0, b0 - 5.0) <= 1.0) \
        & (_ellipse_q(X, Y, 0.0, yb - 5.0, a0 - 18.0, b0 - 18.0) > 1.0) & (Y < ya - 1.0) \
        & (Z > z_mand - 3.0) & (Z < z_mand + 33.0)
    keep_out = np.broadcast_to(near_air | near_mandible, shape)

    # --- parotids ------------------------------------------------------------------------------------
    parotid_masks: dict[str, np.ndarray] = {}
    parotid_distance: dict[str, np.ndarray] = {}
    for name, sign in (("parotid_l", 1.0), ("parotid_r", -1.0)):
        cx = sign * (a0 - 17.0 + rng.normal(0.0, 1.5))
        cy = yb + 6.0 + rng.normal(0.0, 2.0)
        cz = 48.0 + rng.normal(0.0, 4.0)
        semi = np.array([11.0, 15.0, 19.0]) * rng.uniform(0.85, 1.15, 3)
        q = np.sqrt(((X - cx) / semi[0]) ** 2 + ((Y - cy) / semi[1]) ** 2 + ((Z - cz) / semi[2]) ** 2)
        mask = _at_least(q, q <= 1.0, 4)
        parotid_masks[name] = mask
        parotid_distance[name] = np.maximum(q - 1.0, 0.0) * float(semi.min())
        tissue[mask] = PAROTID

    # --- tumour ------------------------------------------------------------------------------------------
    side = 1 if rng.random() < 0.5 else -1
    radius = patient.gtv_radius_mm
    # lateral pharyngeal wall / tonsillar fossa: beside the airway, the tumour's bulk lateral to it
    x_gtv = side * (float(np.max(ax_air)) + 3.0 + 0.45 * radius + rng.uniform(0.0, 6.0))
    centre = np.array([x_gtv, ya + rng.uniform(-4.0, 6.0), rng.uniform(-12.0, 38.0)])
    scales = np.exp(rng.normal(0.0, 0.15, 3))
    scales /= np.prod(scales) ** (1.0 / 3.0)
    rot = _random_rotation(rng)
    ext = 1.6 * radius + 2.0 * max(geometry.spacing)
    lo = [int(np.searchsorted(ax, c - ext)) for ax, c in ((zc, centre[2]), (yc, centre[1]), (xc, centre[0]))]
    hi = [int(np.searchsorted(ax, c + ext, side="right")) for ax, c in ((zc, centre[2]), (yc, centre[1]),
                                                                         (xc, centre[0]))]
    box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    bz, by, bx = np.meshgrid(zc[box[0]], yc[box[1]], xc[box[2]], indexing="ij")
    rel = np.stack([bx - centre[0], by - centre[1], bz - centre[2]], axis=-1) @ rot
    rho = np.sqrt(np.sum((rel / (radius * scales)) ** 2, axis=-1))
    bumps = smooth_field(rng, rho.shape, 0.35 * radius, geometry.spacing_zyx)
    rho_eff = rho * (1.0 + 0.18 * bumps)
    allowed = (q_body[box] <= 0.80) & (np.broadcast_to(r_vert, shape)[box] > rv + 3.0) \
        & (np.broadcast_to(r_canal, shape)[box] > 12.0) & (by < yv - rv - 2.0) & ~keep_out[box]
    score = np.where(allowed, rho_eff, np.inf)
    gtv_box_mask = _at_least(score, (rho_eff <= 1.0) & allowed, 8)
    gtv = np.zeros(shape, dtype=bool)
    gtv[box] = gtv_box_mask
    tissue[gtv] = TUMOUR

    labels = np.zeros(shape, dtype=np.uint8)
    labels[np.broadcast_to(pcm, shape)] = LABEL_PCM
    labels[parotid_masks["parotid_l"]] = LABEL_PAROTID_L
    labels[parotid_masks["parotid_r"]] = LABEL_PAROTID_R
    labels[gtv] = LABEL_GTV
    labels[cord] = LABEL_CORD

    # --- elective nodal volumes (levels II-IV), for the plan ----------------------------------------------
    nodal = np.full(shape, np.inf)
    early_lateral = patient.t_stage in ("T1", "T2") and abs(centre[0]) > 8.0
    unilateral = early_lateral and rng.random() < p_unilateral_neck
    z_top = {s: float(rng.uniform(26.0, 64.0)) for s in (1, -1)}
    r_node = 11.0
    for s in (1, -1):
        if unilateral and s != side:
            continue
        xn = s * (a0 - 22.0)
        dr = np.maximum(np.sqrt((X - xn) ** 2 + (Y - yb) ** 2) - r_node, 0.0)
        dz = np.maximum(Z - z_top[s], 0.0)
        nodal = np.minimum(nodal, np.sqrt(dr**2 + dz**2))

    # high-risk CTV along the pharyngeal axis (primary extension, retropharyngeal nodes) around the tumour
    r_ph = float(np.max(ax_air)) + 6.0
    dr = np.maximum(np.sqrt(X**2 + (Y - ya) ** 2) - r_ph, 0.0)
    dz = np.maximum(np.maximum((centre[2] - 35.0) - Z, Z - (centre[2] + 25.0)), 0.0)
    nodal = np.minimum(nodal, np.sqrt(dr**2 + dz**2))

    depth = np.where(gtv_box_mask, np.clip(rho_eff, 0.0, 1.0), 1.0)
    return Anatomy(
        geometry=geometry, tissue=tissue, labels=labels, body=np.broadcast_to(body, shape).copy(),
        gtv_depth=depth, gtv_box=box, gtv_side=side, cord_distance_mm=np.asarray(cord_distance),
        parotid_distance_mm=parotid_distance, nodal_distance_mm=nodal, zyx=(Z, Y, X),
    )


def gtv_mask(anatomy: Anatomy) -> np.ndarray:
    """Boolean GTV mask of the whole grid."""
    return anatomy.labels == LABEL_GTV


def structure_mask(anatomy: Anatomy, label: int) -> np.ndarray:
    return anatomy.labels == label


def equivalent_radius_mm(volume_cc: float) -> float:
    return (3.0 * volume_cc * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
