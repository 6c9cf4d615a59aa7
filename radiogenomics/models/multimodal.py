"""Multimodal network: a small MONAI 3D CNN over GTV crops and an MLP over tabular features, fused late.

``MultimodalRegressor`` and ``MultimodalClassifier`` take the whole feature table (``patient_id`` plus
namespaced columns) as ``X``. Two branches:

* **image**: the patient's crop (:mod:`radiogenomics.models.crops`: CT, PET_FDG, PET_FMISO by default, plus
  the GTV mask, ``crop_size``^3 voxels over ``box_mm``) read from the ``cohort`` folder through the crop
  cache, encoded by four MONAI :class:`~monai.networks.blocks.Convolution` blocks (3^3 kernels, batch norm,
  ReLU, strides 2-2-2-1, ``width``-2x-4x-4x channels; about 46k weights at ``width=8``) pooled by global
  average and max (strides of 2 from the first block keep a 32^3 fit to seconds per epoch on 2 CPU cores);
* **tabular**: the columns chosen by :class:`~radiogenomics.features.preprocessing.FeatureSelector`
  (``groups`` / ``include`` / ``exclude``), imputed (:class:`GroupImputer`, with missing indicators) and
  scaled (:class:`FeatureScaler`) with statistics of the rows given to ``fit``, text columns one-hot
  encoded (unknown categories ignored), then a two-layer MLP.

Late fusion: the two embeddings and the presence flags (one per modality, one for the tabular branch) are
concatenated and mapped to the output by a small head. **Modality dropout** (training only): each image
channel, and the whole tabular branch, is zeroed with its presence flag set to 0 with probability
``modality_dropout`` per sample and step (as in ModDrop, Neverova et al., IEEE TPAMI 2016;38:1692), so at
prediction time a patient without PET (zero channel, flag 0) or without tabular features gets a prediction
from what is present. Training uses random flips (``augment``), AdamW, and early stopping on an internal
validation split of the training rows (``validation_fraction``, best epoch restored); nothing outside
``fit``'s rows is seen. Deterministic for a fixed ``random_state`` on CPU (seeded initialisation, shuffling
and dropout from a private generator; ``torch.use_deterministic_algorithms`` on CUDA); CUDA is used when
present with ``device="auto"``. ``n_threads`` sets torch's CPU threads while fitting and predicting: on a
machine whose cores are shared, 1 thread was 15x faster than 2 (OpenMP threads waiting for each other).

A fitted estimator pickles (joblib, ``copy.deepcopy``) as the network's :func:`build_network` arguments and
CPU weights, rebuilt on load (the network's class is local to :func:`build_network`). ``image_crops`` and
``MultimodalRegressor.predict_crops`` predict with the crops of another cohort folder, or with none (every
image absent); :class:`~radiogenomics.models.multimodal_rsi.MultimodalRSI` builds its conformal RSI model on
them.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder, OneHotEncoder
from sklearn.utils.validation import check_is_fitted

from radiogenomics.errors import InputError
from radiogenomics.features.naming import PATIENT_ID
from radiogenomics.features.preprocessing import FeatureScaler, FeatureSelector, GroupImputer
from radiogenomics.features.schema import DEFAULT_FEATURE_GROUPS
from radiogenomics.models.crops import DEFAULT_MODALITIES, Crops, CropSpec, load_crops

log = logging.getLogger(__name__)


class TabularPreprocessor(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Feature-table columns as a float32 matrix: select, impute, scale (statistics of the fitted rows only),
    one-hot encode text columns (unknown categories ignored). ``outcome.*`` and ``patient_id`` never pass.

    Parameters are those of :class:`~radiogenomics.features.preprocessing.FeatureSelector`; no selected
    column gives a (n, 0) matrix. Learnt: ``numeric_`` and ``text_`` (column names) and the fitted steps.
    """

    def __init__(self, groups: Sequence[str] = DEFAULT_FEATURE_GROUPS, include: Sequence[str] = (),
                 exclude: Sequence[str] = ()) -> None:
        self.groups = groups
        self.include = include
        self.exclude = exclude

    def fit(self, X: pd.DataFrame, y: Any = None) -> TabularPreprocessor:
        self.selector_ = FeatureSelector(groups=tuple(self.groups), include=tuple(self.include),
                                         exclude=(*tuple(self.exclude), "outcome", PATIENT_ID)).fit(X)
        self.numeric_: list[str] = []
        self.text_: list[str] = []
        self.encoder_: OneHotEncoder | None = None
        if not self.selector_.columns_:
            return self
        selected = self.selector_.transform(X)
        self.imputer_ = GroupImputer().fit(selected)
        self.scaler_ = FeatureScaler().fit(self.imputer_.transform(selected))
        frame = self.scaler_.transform(self.imputer_.transform(selected))
        self.numeric_ = [str(c) for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
        self.text_ = [str(c) for c in frame.columns if c not in self.numeric_]
        if self.text_:
            self.encoder_ = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
            self.encoder_.fit(frame[self.text_].astype(str))
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "selector_")
        if not self.selector_.columns_:
            return np.zeros((len(X), 0), dtype=np.float32)
        frame = self.scaler_.transform(self.imputer_.transform(self.selector_.transform(X)))
        parts = [frame[self.numeric_].to_numpy(dtype=np.float64, na_value=0.0)]
        if self.encoder_ is not None:
            parts.append(self.encoder_.transform(frame[self.text_].astype(str)))
        return np.nan_to_num(np.hstack(parts)).astype(np.float32)


def resolve_device(device: str) -> str:
    """``"auto"``: CUDA when available, else CPU; otherwise the torch device name as given."""
    if device == "auto":
        from radiogenomics.features.deep import device as default_device

        return default_device()
    return str(device)


def build_network(n_image_channels: int, n_modalities: int, n_tabular: int, n_out: int, width: int = 8,
                  hidden: int = 32, dropout: float = 0.2) -> Any:
    """The fusion network (see the module docstring). ``n_image_channels`` 0 / ``n_tabular`` 0: no branch."""
    import torch
    from monai.networks.blocks import Convolution
    from torch import nn

    class FusionNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.image: nn.Module | None = None
            self.tabular: nn.Module | None = None
            size = n_modalities + 1  # presence flags
            if n_image_channels:
                channels = (width, 2 * width, 4 * width, 4 * width)
                blocks, c_in = [], n_image_channels
                for i, c_out in enumerate(channels):
                    blocks.append(Convolution(spatial_dims=3, in_channels=c_in, out_channels=c_out, kernel_size=3,
                                              strides=2 if i < 3 else 1, act="RELU", norm="BATCH"))
                    c_in = c_out
                self.image = nn.Sequential(*blocks)
                self.image_out = nn.Sequential(nn.Linear(2 * channels[-1], hidden), nn.ReLU())
                size += hidden
            if n_tabular:
                self.tabular = nn.Sequential(nn.Linear(n_tabular, hidden), nn.ReLU(), nn.Dropout(dropout),
                                             nn.Linear(hidden, hidden), nn.ReLU())
                size += hidden
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(size, hidden), nn.ReLU(),
                                      nn.Linear(hidden, n_out))

        def forward(self, images: torch.Tensor, tabular: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
            parts = [present]
            if self.image is not None:
                fmap = self.image(images)
                pooled = torch.cat([fmap.mean(dim=(2, 3, 4)), fmap.amax(dim=(2, 3, 4))], dim=1)
                parts.append(self.image_out(pooled))
            if self.tabular is not None:
                parts.append(self.tabular(tabular) * present[:, -1:])  # tabular branch off when flagged absent
            return self.head(torch.cat(parts, dim=1))

    return FusionNet()


@dataclass(frozen=True)
class _NetworkState:
    """A fitted network as pickled: :func:`build_network` arguments and the ``state_dict`` (CPU tensors)."""

    kwargs: dict[str, Any]
    weights: dict[str, Any]

    def build(self, device: str) -> Any:
        net = build_network(**self.kwargs)
        net.load_state_dict(self.weights)
        return net.to(device).eval()


def modality_dropout(images: Any, present: Any, p: float, generator: Any) -> tuple[Any, Any]:
    """Zero each modality channel and the tabular flag (``present[:, -1]``) with probability ``p`` per sample.

    ``images``: (n, modalities + 1, ...) with the ROI mask last (never dropped); ``present``: (n, modalities + 1).
    Returns new tensors; the inputs are not changed.
    """
    import torch

    if p <= 0:
        return images, present
    keep = (torch.rand(present.shape, generator=generator) >= p).to(present.dtype).to(present.device)
    present = present * keep
    if images.shape[1]:
        channel_keep = torch.ones(images.shape[:2], dtype=images.dtype, device=images.device)
        channel_keep[:, :-1] = keep[:, :-1].to(images.dtype)
        images = images * channel_keep[:, :, None, None, None]
    return images, present


def _flip(images: Any, generator: Any) -> Any:
    """Random flips along each spatial axis, per sample (training augmentation)."""
    import torch

    if not images.shape[1]:
        return images
    flips = torch.rand((images.shape[0], 3), generator=generator) < 0.5
    out = images.clone()
    for axis in range(3):
        rows = torch.nonzero(flips[:, axis]).flatten().to(images.device)
        if len(rows):
            out[rows] = torch.flip(out[rows], dims=(axis + 2,))
    return out


@contextmanager
def _torch_state(seed: int | None, n_threads: int | None, cuda: bool) -> Iterator[None]:
    """Set torch's CPU threads and, with ``seed``, seed its global generators (and enable deterministic
    algorithms on CUDA); everything is restored afterwards. On CPU the kernels used here are deterministic
    already, and the deterministic mode only slows them (about 1.5x measured)."""
    import torch

    threads, before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        if n_threads:
            torch.set_num_threads(int(n_threads))
        if seed is not None:
            torch.manual_seed(seed)
            if cuda:
                torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(before)


class _MultimodalBase(BaseEstimator):  # type: ignore[misc]
    """Shared fit/predict machinery; see the module docstring for the parameters' meaning."""

    def __init__(self, cohort: str | Path | None = None, crop_size: int = 32, box_mm: float = 64.0,
                 modalities: Sequence[str] = DEFAULT_MODALITIES, roi: str = "GTV",
                 groups: Sequence[str] = DEFAULT_FEATURE_GROUPS, include: Sequence[str] = (),
                 exclude: Sequence[str] = (), epochs: int = 30, batch_size: int = 16, lr: float = 1e-3,
                 weight_decay: float = 1e-4, modality_dropout: float = 0.2, width: int = 8, hidden: int = 32,
                 validation_fraction: float = 0.2, patience: int = 8, augment: bool = True,
                 cache_dir: str | Path | None = None, device: str = "auto", n_threads: int | None = None,
                 random_state: int | None = 0) -> None:
        self.cohort = cohort
        self.crop_size = crop_size
        self.box_mm = box_mm
        self.modalities = modalities
        self.roi = roi
        self.groups = groups
        self.include = include
        self.exclude = exclude
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.modality_dropout = modality_dropout
        self.width = width
        self.hidden = hidden
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.augment = augment
        self.cache_dir = cache_dir
        self.device = device
        self.n_threads = n_threads
        self.random_state = random_state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.non_deterministic = False
        return tags

    # ----------------------------------------------------------------------------------------------- inputs
    def _spec(self) -> CropSpec:
        return CropSpec(size=int(self.crop_size), box_mm=float(self.box_mm), modalities=tuple(self.modalities),
                        roi=str(self.roi))

    @staticmethod
    def _ids(X: Any) -> list[str]:
        if not isinstance(X, pd.DataFrame) or PATIENT_ID not in X.columns:
            raise InputError("the multimodal network needs the feature table (a DataFrame with patient_id)",
                             fix="pass the table of radiogenomics.features.schema.read_feature_table")
        return [str(p) for p in X[PATIENT_ID]]

    def image_crops(self, X: Any, cohort: str | Path | None = None) -> Crops | None:
        """The crops of ``X``'s patients from ``cohort`` (default the ``cohort`` parameter); None without a cohort.

        InputError (from :func:`~radiogenomics.models.crops.load_crops`) when none of them has a ROI image there.
        """
        folder = self.cohort if cohort is None else cohort
        if folder is None:
            return None
        return load_crops(folder, self._ids(X), self._spec(), self.cache_dir)

    def _tensors(self, X: pd.DataFrame, tabular: np.ndarray, crops: Crops | None,
                 n_channels: int | None = None) -> tuple[Any, Any, Any]:
        """(images, tabular, present) tensors on the CPU for the rows of ``X``.

        ``n_channels``: the fitted network's image channels (None while fitting: those of ``crops``). ``crops``
        None: no image of any patient (zero channels, presence flags 0); a network without an image branch gets
        no image channels whatever ``crops`` holds.
        """
        import torch

        n = len(self._ids(X))
        if crops is None or n_channels == 0:
            size = int(self.crop_size) if n_channels else 1
            images = torch.zeros((n, n_channels or 0, size, size, size))
            flags = np.zeros((n, len(tuple(self.modalities))), dtype=np.float32)
        else:
            images, flags = torch.from_numpy(crops.images), crops.present
        has_tabular = np.full((n, 1), 1.0 if tabular.shape[1] else 0.0, dtype=np.float32)
        present = torch.from_numpy(np.hstack([flags, has_tabular]).astype(np.float32))
        return images, torch.from_numpy(tabular), present

    # ------------------------------------------------------------------------------------------------ fit
    def _fit(self, X: Any, targets: np.ndarray, n_out: int, classification: bool) -> None:
        import torch

        ids = self._ids(X)
        if len(ids) < 4:
            raise InputError(f"{len(ids)} training patient(s): the multimodal network needs at least 4")
        if not 0.0 <= float(self.modality_dropout) < 1.0:
            raise InputError(f"modality_dropout {self.modality_dropout} is not a probability below 1",
                             fix="use a value in [0, 1)")
        self.device_ = resolve_device(self.device)
        fresh = int(np.random.default_rng().integers(2**31))  # random_state=None: a new seed per fit
        seed = int(self.random_state) if self.random_state is not None else fresh
        self.tabular_ = TabularPreprocessor(self.groups, self.include, self.exclude).fit(X)
        tabular = self.tabular_.transform(X)
        images, tab, present = self._tensors(X, tabular, self.image_crops(X))
        self.n_tabular_features_ = int(tab.shape[1])
        self.n_image_channels_ = int(images.shape[1])
        self.network_kwargs_ = {"n_image_channels": self.n_image_channels_, "n_modalities": present.shape[1] - 1,
                                "n_tabular": self.n_tabular_features_, "n_out": n_out, "width": int(self.width),
                                "hidden": int(self.hidden)}
        index = np.arange(len(ids))
        stratify = targets if classification and np.bincount(targets).min() >= 2 else None
        n_val = max(1, int(round(float(self.validation_fraction) * len(ids))))
        if classification:
            n_val = max(n_val, n_out)
        train, val = train_test_split(index, test_size=n_val, random_state=seed, stratify=stratify)
        y = torch.from_numpy(targets)
        loss_fn = torch.nn.CrossEntropyLoss() if classification else torch.nn.MSELoss()
        with _torch_state(seed, self.n_threads, self.device_.startswith("cuda")):
            net = build_network(**self.network_kwargs_).to(self.device_)
            generator = torch.Generator().manual_seed(seed)
            optimiser = torch.optim.AdamW(net.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
            best, best_state, stale, history = float("inf"), copy.deepcopy(net.state_dict()), 0, []
            for epoch in range(int(self.epochs)):
                net.train()
                order = train[torch.randperm(len(train), generator=generator).numpy()]
                for start in range(0, len(order), int(self.batch_size)):
                    rows = torch.from_numpy(order[start:start + int(self.batch_size)])
                    if len(rows) < 2:
                        continue  # batch norm needs two samples
                    b_images, b_present = modality_dropout(images[rows], present[rows],
                                                           float(self.modality_dropout), generator)
                    if self.augment:
                        b_images = _flip(b_images, generator)
                    out = net(b_images.to(self.device_), tab[rows].to(self.device_), b_present.to(self.device_))
                    loss = loss_fn(out if classification else out[:, 0], y[rows].to(self.device_))
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                val_out = self._forward(net, images[val], tab[val], present[val])
                val_loss = float(loss_fn(val_out if classification else val_out[:, 0], y[val]))
                history.append(val_loss)
                log.debug("multimodal epoch %d: validation loss %.4f", epoch + 1, val_loss)
                if val_loss < best - 1e-6:
                    best, best_state, stale = val_loss, copy.deepcopy(net.state_dict()), 0
                else:
                    stale += 1
                    if stale >= int(self.patience):
                        break
            net.load_state_dict(best_state)
        self.network_ = net.eval()
        self.validation_loss_ = history
        self.best_epoch_ = int(np.argmin(history)) + 1 if history else 0
        self.n_epochs_ = len(history)

    def _forward(self, net: Any, images: Any, tab: Any, present: Any) -> Any:
        """Outputs on the CPU in eval mode (no modality dropout, no augmentation), in batches."""
        import torch

        net.eval()
        outs = []
        with torch.no_grad(), _torch_state(None, self.n_threads, False):
            for start in range(0, len(present), 64):
                sl = slice(start, start + 64)
                outs.append(net(images[sl].to(self.device_), tab[sl].to(self.device_),
                                present[sl].to(self.device_)).cpu())
        return torch.cat(outs)

    def _outputs(self, X: Any, crops: Crops | None | str = "cohort") -> np.ndarray:
        """Network outputs for ``X`` with ``crops`` (default: read from the ``cohort`` parameter)."""
        check_is_fitted(self, "network_")
        self._ids(X)
        if isinstance(crops, str):
            crops = self.image_crops(X)
        images, tab, present = self._tensors(X, self.tabular_.transform(X), crops, self.n_image_channels_)
        return self._forward(self.network_, images, tab, present).numpy().astype(np.float64)

    # -------------------------------------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        """Pickle the fitted network as its construction arguments and CPU weights (:class:`_NetworkState`):
        the network's class is made inside :func:`build_network`, which pickle cannot name."""
        state = dict(super().__getstate__())
        if "network_" in state:
            weights = {k: v.detach().cpu().clone() for k, v in state["network_"].state_dict().items()}
            state["network_"] = _NetworkState(dict(self.network_kwargs_), weights)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        saved = state.get("network_")
        if isinstance(saved, _NetworkState):
            import torch

            device = str(state.get("device_", "cpu"))
            if device.startswith("cuda") and not torch.cuda.is_available():
                device = "cpu"  # fitted on a GPU, loaded on a machine without one
            state = {**state, "network_": saved.build(device), "device_": device}
        super().__setstate__(state)


class MultimodalRegressor(RegressorMixin, _MultimodalBase):
    """Multimodal network for a continuous target (e.g. ``genomic.rsi``); MSE on the standardised target."""

    def fit(self, X: Any, y: Any) -> MultimodalRegressor:
        values = np.asarray(y, dtype=np.float64).ravel()
        if not np.isfinite(values).all():
            raise InputError("the regression target has missing or non-finite values",
                             fix="drop the patients without a label before fitting")
        self.y_mean_, self.y_scale_ = float(values.mean()), float(values.std()) or 1.0
        self._fit(X, ((values - self.y_mean_) / self.y_scale_).astype(np.float32), 1, classification=False)
        return self

    def predict(self, X: Any) -> np.ndarray:
        return self.predict_crops(X, "cohort")

    def predict_crops(self, X: Any, crops: Crops | None | str) -> np.ndarray:
        """:meth:`predict` with these ``crops`` (rows in ``X``'s order; None: no image of any patient;
        ``"cohort"``: read from the ``cohort`` parameter)."""
        return self._outputs(X, crops)[:, 0] * self.y_scale_ + self.y_mean_


class MultimodalClassifier(ClassifierMixin, _MultimodalBase):
    """Multimodal network for a class label (e.g. xerostomia grade >= 2); cross-entropy, softmax outputs."""

    def fit(self, X: Any, y: Any) -> MultimodalClassifier:
        labels = np.asarray(y).ravel()
        if pd.isna(labels).any():
            raise InputError("the class label has missing values", fix="drop the patients without a label")
        encoder = LabelEncoder().fit(labels)
        self.classes_ = encoder.classes_
        if len(self.classes_) < 2:
            raise InputError(f"only one class ({self.classes_[0]!r}) in the training labels",
                             fix="train on patients with both outcomes")
        self._fit(X, encoder.transform(labels).astype(np.int64), len(self.classes_), classification=True)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        logits = self._outputs(X)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return np.asarray(p / p.sum(axis=1, keepdims=True))

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.classes_[np.argmax(self.predict_proba(X), axis=1)])
