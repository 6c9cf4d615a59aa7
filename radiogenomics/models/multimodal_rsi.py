"""The multimodal network as a full RSI model: split-conformal intervals, measured-RSI handling, image-free path.

:class:`MultimodalRSI` wraps a :class:`~radiogenomics.models.multimodal.MultimodalRegressor` (a MONAI 3D
encoder over GTV crops plus an MLP over tabular features, fused late, trained with modality dropout) so that it
can stand in for :class:`~radiogenomics.models.radiosensitivity.RSISurrogate` wherever an RSI model is used
(the prescriber, the registry): ``predict``, ``predict_interval``, ``predict_source``, ``predict_all``,
``clip``, ``measured`` = use | fuse | ignore, ``measured_sd``, ``confidence_level``.

**Split-conformal intervals** (Vovk, Gammerman and Shafer, Algorithmic Learning in a Random World, Springer
2005; Lei, G'Sell, Rinaldo, Tibshirani and Wasserman, J Am Stat Assoc 2018;113:1094): a seeded
``calibration_fraction`` of the labelled training rows is held out, the network is fitted on the rest, and
the absolute residuals ``|y - f(x)|`` of the calibration rows give the half-width ``q``: their
``ceil((n_cal + 1)(1 - alpha)) / n_cal`` empirical quantile (the ``ceil(...)``-th smallest residual). For a new
patient exchangeable with the calibration patients, ``f(x) +- q`` covers the true RSI with probability at
least ``1 - alpha`` (and at most ``1 - alpha + 1 / (n_cal + 1)`` without ties). When ``ceil(...)`` exceeds
``n_cal`` (fewer than ``1 / alpha - 1`` calibration rows, 9 at 90 %) no finite quantile has that guarantee:
the interval is infinite, i.e. as wide as ``clip`` (logged).

**Mondrian (conditional) calibration by modality pattern** (Vovk et al. 2005, chapter 4): a patient whose
image crops are missing at prediction time gets the network's tabular-only prediction (modality dropout
trained it), which is less accurate than one with images. Its interval therefore uses a second quantile,
``quantile_without_images_``, computed on the same calibration rows predicted with every image channel absent
(zero channels, presence flags 0: exactly the input such a patient gives). ``quantile_`` is computed from the
calibration rows that have crops, predicted with them. ``predict_source`` labels such rows
``"predicted_without_images"`` (the prescriber flags them ``missing_imaging``).

**Images at prediction time.** Every predict method takes the keyword ``cohort=``: the cohort folder holding
*these* patients' images, given by the caller (the ``predict`` command and the hand-off pass the cohort being
predicted, the REST upload its one-patient cohort, cross-validation the training cohort its held-out patients
belong to). Images come from that folder only. Without it every patient gets the image-free prediction and
interval (source ``predicted_without_images``, which the prescriber flags ``missing_imaging``): the training
cohort is never read after ``fit``, since a new patient whose pseudonymous ID equals a training patient's would
otherwise get that training patient's images. A patient not found in the given folder gets no crops (logged)
and the image-free prediction, never an error; a given folder that does not exist is an
:class:`~radiogenomics.errors.InputError`. ``accepts_images = True`` tells a caller (the prescriber) to pass
``cohort=``.

**What is kept of the training cohort.** Only ``fit`` reads it (the ``cohort`` of the ``network``
parameter: training and calibration crops). The fitted network ``network_`` has ``cohort=None``, and a fitted
model pickles without the path: the ``network`` parameter is stored with ``cohort=None`` (nothing after ``fit``
needs it; to refit a loaded model, ``set_params(network__cohort=<training cohort>)`` first). Loading a pickle
made before this rule clears the path as well.

The fitted model pickles (joblib) and loads in a fresh process with identical predictions: the network is
stored as its construction arguments and weights (see ``MultimodalRegressor.__getstate__``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted

from radiogenomics.errors import InputError
from radiogenomics.features.naming import PATIENT_ID
from radiogenomics.models.crops import Crops
from radiogenomics.models.multimodal import MultimodalRegressor
from radiogenomics.models.radiosensitivity import RSI_EXCLUDED_GROUPS, RSI_INPUT_GROUPS
from radiogenomics.models.rsi_measured import (
    DEFAULT_CLIP,
    SOURCE_PREDICTED,
    SOURCE_PREDICTED_WITHOUT_IMAGES,
    Measured,
    MeasuredRSIMixin,
    Predicted,
)

log = logging.getLogger(__name__)

def conformal_quantile(residuals: Any, confidence_level: float) -> float:
    """Split-conformal half-width: the ``ceil((n + 1) * confidence_level)``-th smallest of ``n`` residuals.

    Lei et al., J Am Stat Assoc 2018;113:1094 (section 2.2). ``inf`` when that rank exceeds ``n`` (too few
    calibration residuals for the level; logged).
    """
    values = np.sort(np.asarray(residuals, dtype=np.float64).ravel())
    n = values.size
    rank = math.ceil((n + 1) * float(confidence_level) - 1e-9)  # 1e-9: (n + 1) * 0.9 in floating point
    if rank > n:
        log.warning("split conformal: %d calibration residual(s) are too few for a %.0f %% interval (need >= %d);"
                    " the interval is infinite (as wide as the clip range)", n, 100 * confidence_level,
                    math.ceil(confidence_level / (1.0 - confidence_level)))
        return math.inf
    return float(values[max(rank, 1) - 1])


def has_images(crops: Crops | None, n: int) -> np.ndarray:
    """True per row whose crop has at least one image modality."""
    if crops is None:
        return np.zeros(n, dtype=bool)
    return np.asarray(np.asarray(crops.present, dtype=np.float32).any(axis=1), dtype=bool)


class MultimodalRSI(MeasuredRSIMixin, RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """RSI from GTV image crops and tabular features (the multimodal network), with split-conformal intervals.

    Parameters
    ----------
    network:
        The :class:`~radiogenomics.models.multimodal.MultimodalRegressor` to fit (cloned; its ``cohort``,
        the training cohort, read by ``fit`` only, ``crop_size``, ``epochs``, ``width``, ... are used as
        given); default
        ``MultimodalRegressor(groups=RSI_INPUT_GROUPS)`` (imaging, deep, clinical, availability columns, no
        images unless a ``cohort`` is set). ``genomic``, ``dose``, ``treatment`` and ``outcome`` columns are
        always excluded from its tabular inputs.
    calibration_fraction:
        Share of the labelled training rows held out (seeded by ``random_state``) to calibrate the intervals;
        the network is fitted on the rest.
    confidence_level, measured, measured_sd, clip:
        As :class:`~radiogenomics.models.radiosensitivity.RSISurrogate` (see
        :mod:`radiogenomics.models.rsi_measured`).
    random_state:
        Seed of the calibration split (the network has its own ``random_state``).

    ``fit(X, y=None)`` takes the feature table (a DataFrame with ``patient_id``); ``y`` defaults to
    ``X["genomic.rsi"]``; rows without a label are dropped (logged). Learnt: ``network_`` (the fitted
    regressor), ``quantile_`` and ``quantile_without_images_`` (half-widths), ``calibration_ids_``,
    ``n_train_``, ``n_calibration_``, ``uses_images_``. See the module docstring for the method and the
    ``cohort=`` keyword of the predict methods.
    """

    accepts_images: ClassVar[bool] = True
    _fitted_attribute = "network_"

    def __init__(self, network: MultimodalRegressor | None = None, *, calibration_fraction: float = 0.25,
                 confidence_level: float = 0.9, measured: Measured = "use", measured_sd: float = 0.05,
                 clip: tuple[float, float] = DEFAULT_CLIP, random_state: int | None = 0) -> None:
        self.network = network
        self.calibration_fraction = calibration_fraction
        self.confidence_level = confidence_level
        self.measured = measured
        self.measured_sd = measured_sd
        self.clip = clip
        self.random_state = random_state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def _frame(self, X: Any) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame) or PATIENT_ID not in X.columns:
            raise InputError("MultimodalRSI needs the feature table (a DataFrame with patient_id)",
                             fix="pass the table of radiogenomics.features.schema.read_feature_table")
        return X

    def _network(self) -> MultimodalRegressor:
        base = self.network if self.network is not None else MultimodalRegressor(groups=RSI_INPUT_GROUPS)
        if not isinstance(base, MultimodalRegressor):
            raise InputError(f"network must be a MultimodalRegressor, got {type(base).__name__}",
                             fix="pass MultimodalRegressor(cohort=..., ...)")
        net = clone(base)
        return net.set_params(exclude=(*tuple(net.exclude), *RSI_EXCLUDED_GROUPS))

    def fit(self, X: Any, y: Any = None) -> MultimodalRSI:
        if not 0.0 < float(self.calibration_fraction) < 1.0:
            raise InputError(f"calibration_fraction must lie in (0, 1), got {self.calibration_fraction!r}",
                             fix="use e.g. 0.25")
        frame, target, keep = self._labelled(X, y)
        rows, values = frame.loc[keep], target[keep]
        n_cal = int(round(float(self.calibration_fraction) * len(values)))
        if n_cal < 1 or len(values) - n_cal < 4:
            raise InputError(f"{len(values)} patient(s) with a measured RSI are too few to fit the network and "
                             f"calibrate its intervals (calibration_fraction {self.calibration_fraction})",
                             fix="add patients with expression data (genomic.rsi)")
        fit_rows, cal_rows = train_test_split(np.arange(len(values)), test_size=n_cal,
                                              random_state=self.random_state)
        cal_rows = np.sort(cal_rows)
        self.network_ = self._network().fit(rows.iloc[fit_rows], values[fit_rows])
        self.uses_images_ = bool(self.network_.n_image_channels_)
        calibration = rows.iloc[cal_rows]
        # the calibration patients are training patients: their crops come from the training cohort, the only
        # read of it after the network's fit; then the fitted network forgets the folder (module docstring)
        crops = self._training_crops(calibration)
        self.network_.set_params(cohort=None)
        with_images = has_images(crops, len(calibration))
        residuals = np.abs(values[cal_rows] - self.network_.predict_crops(calibration, crops))
        image_free = np.abs(values[cal_rows] - self.network_.predict_crops(calibration, None))
        level = float(self.confidence_level)
        self.quantile_without_images_ = conformal_quantile(image_free, level)
        if with_images.any():
            self.quantile_ = conformal_quantile(residuals[with_images], level)
        else:  # no image (no cohort, or none of the calibration patients has one): one taxonomy class
            self.quantile_ = self.quantile_without_images_
        self.calibration_ids_ = np.asarray([str(p) for p in calibration[PATIENT_ID]], dtype=object)
        self.n_train_, self.n_calibration_ = int(len(values)), int(n_cal)
        self.n_calibration_with_images_ = int(with_images.sum())
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        log.info("MultimodalRSI: network fitted on %d patient(s); %d calibration patient(s) (%d with images): "
                 "half-width %.4f with images, %.4f without", len(fit_rows), n_cal, self.n_calibration_with_images_,
                 self.quantile_, self.quantile_without_images_)
        return self

    def _training_crops(self, frame: pd.DataFrame) -> Crops | None:
        """Crops of training patients from the training cohort (``fit`` only); None as :meth:`_crops`."""
        if not self.network_.n_image_channels_:
            return None
        try:
            return self.network_.image_crops(frame)
        except InputError as exc:
            log.warning("MultimodalRSI: no image crops for the %d calibration patient(s) (%s)", len(frame), exc)
            return None

    def _crops(self, frame: pd.DataFrame, cohort: str | Path | None) -> Crops | None:
        """Crops of ``frame``'s patients from ``cohort``, the caller's folder of these patients' images; None
        (every image absent) without one, when the network has no image branch, or when none of the patients
        has an image there (logged). Never the training cohort."""
        if not self.network_.n_image_channels_:
            return None
        if cohort is None:
            log.info("MultimodalRSI: no cohort folder given for these %d patient(s); predicted without images",
                     len(frame))
            return None
        if not Path(cohort).is_dir():
            raise InputError(f"cohort folder {cohort} does not exist", file=str(cohort),
                             fix="give the cohort folder holding these patients' images (or omit cohort=)")
        try:
            return self.network_.image_crops(frame, cohort)
        except InputError as exc:
            log.warning("MultimodalRSI: no image crops for these %d patient(s) (%s); predicted without images",
                        len(frame), exc)
            return None

    def __getstate__(self) -> dict[str, Any]:
        """A fitted model pickles without the training cohort's path (the ``network`` parameter's ``cohort`` is
        None in the pickle; see the module docstring). An unfitted one keeps it: it is its configuration."""
        state = dict(super().__getstate__())
        template = state.get("network")
        if "network_" in state and isinstance(template, MultimodalRegressor) and template.cohort is not None:
            state["network"] = clone(template).set_params(cohort=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        fitted = self.__dict__.get("network_")
        if isinstance(fitted, MultimodalRegressor) and fitted.cohort is not None:
            fitted.set_params(cohort=None)  # a pickle made before the rule: its predictions never read the path

    def _labels(self, with_images: np.ndarray) -> np.ndarray:
        if not self.uses_images_:
            return np.full(with_images.size, SOURCE_PREDICTED, dtype=object)
        return np.where(with_images, SOURCE_PREDICTED, SOURCE_PREDICTED_WITHOUT_IMAGES).astype(object)

    def _predicted(self, frame: pd.DataFrame, cohort: str | Path | None = None, **options: Any) -> Predicted:
        """Network prediction with the patients' crops; half-width ``quantile_`` for rows with an image,
        ``quantile_without_images_`` for the rest."""
        if options:
            raise TypeError(f"MultimodalRSI takes only cohort= as a prediction option, got {sorted(options)}")
        crops = self._crops(frame, cohort)
        point = self.network_.predict_crops(frame, crops)
        with_images = has_images(crops, len(frame)) | (not self.uses_images_)
        half = np.where(with_images, self.quantile_, self.quantile_without_images_)
        return Predicted(point, np.column_stack([point - half, point + half]), self._labels(with_images))

    def _predicted_source(self, frame: pd.DataFrame, cohort: str | Path | None = None,
                          **options: Any) -> np.ndarray:
        if options:
            raise TypeError(f"MultimodalRSI takes only cohort= as a prediction option, got {sorted(options)}")
        check_is_fitted(self, "network_")
        return self._labels(has_images(self._crops(frame, cohort), len(frame)))
