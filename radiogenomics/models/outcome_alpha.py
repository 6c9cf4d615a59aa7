"""Outcome-calibrated radiosensitivity: a patient's alpha fitted to local-control outcomes (a GARD-like index).

:class:`OutcomeCalibratedAlpha` models ``log alpha_i = b + w . x_i (+ offset_i)`` from a patient's features and
fits ``b`` and ``w`` by penalised maximum likelihood of the observed local-control times under a **mixture cure
model** whose cure probability is the Poisson tumour control probability of the patient's delivered regimen:

* Poisson TCP (Webb & Nahum, Phys Med Biol 1993;38:653) with the linear-quadratic model (Fowler, Br J Radiol
  1989;62:679): ``TCP_i = exp(-N_i exp(-alpha_i D_i - beta_i D_i d_i))``, ``D_i`` the total dose, ``d_i`` the dose
  per fraction, ``beta_i = alpha_i / (alpha/beta)`` (default alpha/beta = 10 Gy, early-responding tissue and
  squamous carcinoma, Fowler 1989) or a fixed ``beta_per_gy2``.
* Clonogen number ``ln N_i = ln rho + ln V_i + u . z_i`` with ``V_i`` the GTV volume (cc) when the table has one
  and ``z_i`` the tumour-burden inputs (FDG, FMISO, hypoxia scores by default), which thus explain outcome
  variation without being read as intrinsic radiosensitivity.
* Optionally ``log alpha_from_rsi(RSI)`` (Scott et al. Lancet Oncol 2017) as an unpenalised input or an offset.
* Mixture cure model (Berkson & Gage, JASA 1952;47:501; Yakovlev & Tsodikov, Stochastic Models of Tumor
  Latency and Their Biostatistical Applications, World Scientific 1996): a patient fails locally with
  probability ``1 - TCP_i``; the failure time of the non-cured follows a fitted log-normal or Weibull
  distribution (density ``f``, survival ``S``). A failure at ``t`` contributes ``(1 - TCP_i) f(t)``, a patient
  censored at ``t`` contributes ``TCP_i + (1 - TCP_i) S(t)``.

Identifiability: with nearly uniform prescriptions only ``ln N_i - alpha_i BED_i`` is informed by the outcomes, so
the clonogen density and the alpha scale trade off. By default the density is **fixed** at the literature value
10^7 clonogens/cm^3 (Webb & Nahum 1993) and only alpha is fitted; ``clonogen_density_per_cc=None`` fits the
density too, with a Gaussian prior (``density_prior_sd_decades``) around 10^7/cm^3 that pins the scale. The
*ranking* of patients (what the features explain) does not depend on this choice; the absolute alpha does.

Optimisation: scipy L-BFGS-B on the analytic gradient (:func:`cure_negative_log_likelihood`), several seeded
starts; the L2 penalty on ``w`` is chosen by inner cross-validation of the held-out log-likelihood
(``l2_penalty="cv"``) or fixed.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import optimize, special
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from radiogenomics.errors import InputError
from radiogenomics.features import naming
from radiogenomics.features.preprocessing import FeatureScaler, FeatureSelector, GroupImputer
from radiogenomics.radiobiology import alpha_from_rsi
from radiogenomics.radiobiology.tcp import CLONOGEN_DENSITY_PER_CC

log = logging.getLogger(__name__)

DOSE_COLUMN = "clinical.total_dose_gy"
FRACTIONS_COLUMN = "clinical.n_fractions"
EVENT_COLUMN = "outcome.lc_event"
MONTHS_COLUMN = "outcome.lc_months"
RSI_COLUMN = naming.RSI_COLUMN
#: Clonogen density of a tumour, per cm^3 (Webb & Nahum, Phys Med Biol 1993;38:653).
LITERATURE_CLONOGEN_DENSITY_PER_CC = CLONOGEN_DENSITY_PER_CC
#: Default L2 grid searched by inner cross-validation (penalty per patient, on standardised features).
DEFAULT_PENALTY_GRID: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
_VOLUME_KEYS = ("original_shape_MeshVolume", "original_shape_VoxelVolume")
_MODALITY_PREFERENCE = ("ct", "mr_t1", "mr_t2", "pet_fdg", "pet_fmiso")
_L_CLIP = 700.0
_ETA_BOUNDS = (-30.0, 8.0)

#: Inputs that describe tumour burden (clonogens, hypoxia) and enter ln N rather than log alpha.
DEFAULT_BURDEN_INCLUDE: tuple[str, ...] = ("pet_fdg.gtv.*", "pet_fmiso.gtv.*", "genomic.hypoxia_*")
#: Name of the standardised log alpha_RSI input (``rsi_prior="covariate"``).
RSI_COVARIATE = "log_alpha_rsi"

TimeDistribution = Literal["lognormal", "weibull"]
RSIPrior = Literal["none", "offset", "covariate"]


# --------------------------------------------------------------------------------------------------- likelihood
@dataclass(frozen=True)
class CureData:
    """Per-patient arrays of the cure-model likelihood.

    ``alpha_features`` (n, p) standardised inputs of ``log alpha``; ``burden_features`` (n, q) standardised inputs
    of ``ln N`` (tumour burden: clonogen density, hypoxia); ``penalty_weights`` (p + q) the L2 weight of each
    coefficient (0 = unpenalised); ``offset`` fixed part of ``log alpha``; ``log_volume_cc`` added to ``ln N``
    (zeros without a volume); ``alpha_dose_gy`` the factor ``A`` and ``fixed_log_kill`` the alpha-free part ``C``
    of ``-ln SF = alpha A + C``; ``event`` 0/1 and ``months`` (> 0) the local-control outcome.
    """

    alpha_features: np.ndarray
    burden_features: np.ndarray
    penalty_weights: np.ndarray
    offset: np.ndarray
    log_volume_cc: np.ndarray
    alpha_dose_gy: np.ndarray
    fixed_log_kill: np.ndarray
    event: np.ndarray
    months: np.ndarray

    @property
    def n_coef(self) -> int:
        """Number of feature coefficients, p + q."""
        return self.alpha_features.shape[1] + self.burden_features.shape[1]

    def take(self, rows: np.ndarray) -> CureData:
        """The patients ``rows`` (same coefficients and penalty weights)."""
        per_row = {f.name: getattr(self, f.name)[rows] for f in fields(self) if f.name != "penalty_weights"}
        return replace(self, **per_row)


def lq_kill_terms(total_dose_gy: np.ndarray, n_fractions: np.ndarray, alpha_beta_gy: float,
                  beta_per_gy2: float | None) -> tuple[np.ndarray, np.ndarray]:
    """``(A, C)`` with ``-ln SF = alpha A + C`` for the LQ model (Fowler 1989).

    Fixed ratio: ``A = D (1 + d/(alpha/beta))`` (the BED), ``C = 0``; fixed beta: ``A = D``, ``C = beta D d``.
    """
    dose = np.asarray(total_dose_gy, dtype=np.float64)
    per_fraction = dose / np.asarray(n_fractions, dtype=np.float64)
    if beta_per_gy2 is None:
        return dose * (1.0 + per_fraction / alpha_beta_gy), np.zeros_like(dose)
    return dose, beta_per_gy2 * dose * per_fraction


def _time_terms(months: np.ndarray, mu: float, log_scale: float, distribution: TimeDistribution,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``log f, dlogf/dmu, dlogf/dls, log S, dlogS/dmu, dlogS/dls`` of the failure-time distribution.

    Log-normal: ``ln t ~ N(mu, exp(ls)^2)``. Weibull: ``S = exp(-(t/exp(mu))^k)`` with shape ``k = exp(ls)``.
    """
    log_t = np.log(months)
    if distribution == "lognormal":
        sigma = np.exp(log_scale)
        z = (log_t - mu) / sigma
        log_f = -log_t - log_scale - 0.5 * np.log(2.0 * np.pi) - 0.5 * z * z
        log_s = special.log_ndtr(-z)
        hazard_z = np.exp(-0.5 * z * z - 0.5 * np.log(2.0 * np.pi) - log_s)  # phi(z) / S
        return log_f, z / sigma, z * z - 1.0, log_s, hazard_z / sigma, hazard_z * z
    if distribution == "weibull":
        k = np.exp(log_scale)
        u = k * (log_t - mu)
        cum_hazard = np.exp(np.minimum(u, _L_CLIP))
        log_f = log_scale - log_t + u - cum_hazard
        return (log_f, -k * (1.0 - cum_hazard), 1.0 + u * (1.0 - cum_hazard), -cum_hazard, k * cum_hazard,
                -cum_hazard * u)
    raise InputError(f"unknown time_distribution {distribution!r}", fix="use 'lognormal' or 'weibull'")


def cure_negative_log_likelihood(theta: np.ndarray, data: CureData, *, l2_penalty: float,
                                 distribution: TimeDistribution, fit_density: bool,
                                 log_density_prior: tuple[float, float] | None = None,
                                 log_density: float = 0.0) -> tuple[float, np.ndarray]:
    """Penalised mean negative log-likelihood of the cure model and its analytic gradient.

    ``theta = [b, w_1..w_p, u_1..u_q, (ln rho if fit_density), mu, ls]``; ``log alpha_i = b + w.x_i + offset_i``,
    ``ln N_i = ln rho + ln V_i + u.z_i``. The objective is ``-mean_i l_i + l2_penalty/2 sum_j k_j c_j^2`` over the
    coefficients ``c = (w, u)`` with weights ``k = penalty_weights`` (+ ``(ln rho - m)^2 / (2 s^2 n)`` for a
    density prior ``(m, s)``). ``l_i = log(1 - TCP_i) + log f(t_i)`` for a failure and
    ``log(TCP_i + (1 - TCP_i) S(t_i))`` for a censored patient (Berkson & Gage 1952), with
    ``TCP_i = exp(-exp(L_i))``, ``L_i = ln N_i - alpha_i A_i - C_i`` (Webb & Nahum 1993).
    """
    n, p = data.alpha_features.shape
    k = data.n_coef
    b, coef = theta[0], theta[1:1 + k]
    pos = 1 + k
    if fit_density:
        log_density, pos = float(theta[pos]), pos + 1
    mu, log_scale = float(theta[pos]), float(theta[pos + 1])
    alpha = np.exp(np.clip(b + data.alpha_features @ coef[:p] + data.offset, *_ETA_BOUNDS))
    big_l = np.clip(log_density + data.log_volume_cc + data.burden_features @ coef[p:]
                    - alpha * data.alpha_dose_gy - data.fixed_log_kill, -_L_CLIP, _L_CLIP)
    s = np.exp(big_l)
    log_p = np.log(-np.expm1(-s))  # log(1 - TCP)
    log_f, dlogf_mu, dlogf_ls, log_s, dlogs_mu, dlogs_ls = _time_terms(data.months, mu, log_scale, distribution)
    event = data.event.astype(bool)
    with np.errstate(over="ignore", divide="ignore"):
        ll_censored = np.logaddexp(-s, log_p + log_s)
        log_cdf = np.log(-np.expm1(log_s))
        grad_l_event = np.where(s > _L_CLIP, 0.0, s / np.expm1(s))
        grad_l_censored = -np.exp(big_l - s + log_cdf - ll_censored)
    grad_logs = np.exp(log_p + log_s - ll_censored)
    ll = np.where(event, log_p + log_f, ll_censored)
    grad_l = np.where(event, grad_l_event, grad_l_censored)  # d l_i / d L_i
    grad_eta = grad_l * (-alpha * data.alpha_dose_gy)  # d l_i / d log alpha_i

    weighted = data.penalty_weights * coef
    value = -float(ll.mean()) + 0.5 * l2_penalty * float(coef @ weighted)
    grad = np.empty_like(theta, dtype=np.float64)
    grad[0] = -grad_eta.mean()
    grad[1:1 + p] = -(data.alpha_features.T @ grad_eta) / n
    grad[1 + p:1 + k] = -(data.burden_features.T @ grad_l) / n
    grad[1:1 + k] += l2_penalty * weighted
    pos = 1 + k
    if fit_density:
        grad[pos] = -grad_l.mean()
        if log_density_prior is not None:
            centre, sd = log_density_prior
            value += (log_density - centre) ** 2 / (2.0 * sd * sd * n)
            grad[pos] += (log_density - centre) / (sd * sd * n)
        pos += 1
    grad[pos] = -np.where(event, dlogf_mu, grad_logs * dlogs_mu).mean()
    grad[pos + 1] = -np.where(event, dlogf_ls, grad_logs * dlogs_ls).mean()
    return value, grad


# ---------------------------------------------------------------------------------------------------- inputs
def _outcomes(X: pd.DataFrame, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """(event 0/1, months) from ``y`` (DataFrame, structured array) or from X's ``outcome.*`` columns."""
    if y is None:
        missing = [c for c in (EVENT_COLUMN, MONTHS_COLUMN) if c not in X.columns]
        if missing:
            raise InputError(f"no y given and column {missing[0]} is missing from X",
                             fix=f"pass y with lc_event and lc_months, or keep {EVENT_COLUMN}/{MONTHS_COLUMN} in X")
        event, months = X[EVENT_COLUMN], X[MONTHS_COLUMN]
    elif isinstance(y, pd.DataFrame):
        event, months = _pick(y, list(y.columns)), _pick(y, list(y.columns), time=True)
        event, months = y[event], y[months]
    elif isinstance(y, np.ndarray) and y.dtype.names:
        names = list(y.dtype.names)
        if "lc_event" in names and "lc_months" in names:
            event, months = y["lc_event"], y["lc_months"]
        elif len(names) == 2:  # scikit-survival's Surv arrays: (event, time)
            event, months = y[names[0]], y[names[1]]
        else:
            raise InputError(f"structured y has fields {names}", fix="use fields lc_event and lc_months")
    else:
        raise InputError(f"y of type {type(y).__name__} is not supported",
                         fix="pass a DataFrame or structured array with lc_event and lc_months, or y=None")
    event_arr = pd.to_numeric(pd.Series(np.asarray(event)), errors="coerce").to_numpy(dtype=np.float64)
    months_arr = pd.to_numeric(pd.Series(np.asarray(months)), errors="coerce").to_numpy(dtype=np.float64)
    if len(event_arr) != len(X):
        raise InputError(f"y has {len(event_arr)} rows but X has {len(X)}", fix="pass one outcome row per patient")
    bad = ~np.isnan(event_arr) & ~np.isin(event_arr, (0.0, 1.0))
    if bad.any():
        raise InputError(f"lc_event must be 0 or 1, got {event_arr[bad][0]!r}", patient_id=_patient(X, bad),
                         fix="code local failure as 1 and censoring as 0")
    negative = months_arr < 0
    if negative.any():
        raise InputError("lc_months is negative", patient_id=_patient(X, negative), fix="use months from start of RT")
    return event_arr, months_arr


def _labelled(frame: pd.DataFrame, y: Any) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The rows with an outcome, and their (event, months); rows without one are left out with a warning."""
    event, months = _outcomes(frame, y)
    keep = ~np.isnan(event) & ~np.isnan(months)
    if not keep.all():
        log.warning("OutcomeCalibratedAlpha: %d patient(s) without lc_event/lc_months left out", int((~keep).sum()))
        frame, event, months = frame.loc[keep], event[keep], months[keep]
    return frame, event, months


def _pick(y: pd.DataFrame, columns: list[str], *, time: bool = False) -> str:
    names = ("lc_months", MONTHS_COLUMN, "time") if time else ("lc_event", EVENT_COLUMN, "event")
    for name in names:
        if name in columns:
            return name
    raise InputError(f"y has no column {names[0]} (columns: {columns[:6]})",
                     fix="name the outcome columns lc_event and lc_months")


def _patient(X: pd.DataFrame, mask: np.ndarray) -> str | None:
    if "patient_id" in X.columns:
        return str(X["patient_id"].to_numpy()[np.flatnonzero(mask)[0]])
    return None


def _regimen(X: pd.DataFrame, total_dose_gy: Any = None, n_fractions: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Delivered total dose (Gy) and fraction number per row, from X or the given overrides."""
    values = []
    for column, override in ((DOSE_COLUMN, total_dose_gy), (FRACTIONS_COLUMN, n_fractions)):
        if override is not None:
            arr = np.broadcast_to(np.asarray(override, dtype=np.float64), (len(X),)).copy()
        elif column not in X.columns:
            raise InputError(f"column {column} is missing: the delivered regimen is needed for the TCP",
                             fix=f"add {column} (group treatment) to the feature table or pass it explicitly")
        else:
            arr = pd.to_numeric(X[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(arr) | (arr <= 0)
        if bad.any():
            raise InputError(f"{column} is missing or not positive ({arr[bad][0]})", patient_id=_patient(X, bad),
                             fix=f"give every patient a delivered {column.split('.')[-1]}")
        values.append(arr)
    return values[0], values[1]


def find_volume_column(columns: Sequence[str]) -> str | None:
    """The GTV volume column of a feature table (pyradiomics shape volume, mm^3), CT first; None if absent."""
    present = set(columns)
    for key in _VOLUME_KEYS:
        for modality in _MODALITY_PREFERENCE:
            if f"{modality}.gtv.{key}" in present:
                return f"{modality}.gtv.{key}"
        others = sorted(c for c in present if c.endswith(f".gtv.{key}") and not c.startswith("deep."))
        if others:
            return others[0]
    return None


# ----------------------------------------------------------------------------------------------------- model
class OutcomeCalibratedAlpha(RegressorMixin, BaseEstimator):
    """Patient alpha (Gy^-1) from features, fitted to local control under a Poisson-TCP mixture cure model.

    ``fit(X, y)``: ``X`` the feature table (whole; inputs are selected inside), ``y`` a DataFrame or structured
    array with ``lc_event`` (1 = local failure) and ``lc_months``; with ``y=None`` the ``outcome.lc_event`` and
    ``outcome.lc_months`` columns of ``X`` are used (never as inputs). The regimen comes from
    ``clinical.total_dose_gy`` and ``clinical.n_fractions`` (group ``treatment``: the dose of the TCP, never a
    feature). ``predict(X)`` returns alpha per Gy; :meth:`predict_tcp` and :meth:`predict_local_control` the
    model's TCP and local control at a time. ``score`` is the mean log-likelihood per patient (higher is better).

    Parameters
    ----------
    groups, include, exclude:
        Input columns (:class:`~radiogenomics.features.preprocessing.FeatureSelector`). Default: genomic and
        clinical columns plus the GTV radiomics of every modality (``*.gtv.*``), without deep features, dose,
        treatment and the centre. Text columns are one-hot encoded; imputation and scaling are fitted in ``fit``.
    burden_include:
        ``fnmatch`` patterns of the selected inputs that describe tumour burden rather than intrinsic
        radiosensitivity (default: FDG PET, a clonogen-density surrogate, and FMISO PET and hypoxia expression
        scores, hypoxia surrogates; Toma-Dasu et al. Acta Oncol 2012;51:222): they enter ``ln N`` instead of
        ``log alpha``, so that outcome variation they explain is not attributed to alpha. ``()``: all in alpha.
    alpha_beta_gy, beta_per_gy2:
        LQ: ``beta_i = alpha_i / alpha_beta_gy`` (default 10 Gy, Fowler 1989), or a fixed ``beta_per_gy2``.
    clonogen_density_per_cc:
        Fixed clonogen density (default 1e7 /cm^3, Webb & Nahum 1993), or None to fit it with a Gaussian prior
        of ``density_prior_sd_decades`` around 1e7 /cm^3.
    volume_column:
        GTV volume column in mm^3 (``"auto"``: :func:`find_volume_column`); None: ``N`` = density x 1 cc for all.
    rsi_prior:
        How ``alpha_RSI = alpha_from_rsi(genomic.rsi)`` (Scott et al. Lancet Oncol 2017) enters: ``"none"`` (RSI
        is an ordinary input), ``"offset"`` (``log alpha_RSI`` is an offset with coefficient 1: the features learn
        a correction) or ``"covariate"`` (``log alpha_RSI`` is an unpenalised input: the outcomes decide its
        weight). RSI values with alpha_RSI <= ``rsi_alpha_floor_per_gy`` (RSI >= exp(-4 beta)) take the floor; a
        missing RSI takes the training median.
    time_distribution:
        Failure time of the non-cured: ``"lognormal"`` or ``"weibull"``.
    l2_penalty:
        L2 penalty per patient on the standardised coefficients, or ``"cv"`` to pick it from ``penalty_grid`` by
        ``inner_folds``-fold cross-validation of the held-out log-likelihood. A unit change of ``log alpha``
        moves ``L = ln N - alpha BED`` by ``alpha BED`` (~20), so useful penalties are large (1-1000).
    n_starts, max_iter, random_state:
        L-BFGS-B starts (the first deterministic, the others jittered with ``random_state``) and iterations.

    Learnt: ``intercept_`` (b), ``coef_`` (alpha coefficients, per ``alpha_feature_names_``), ``burden_coef_``
    (per ``burden_feature_names_``), ``log_density_per_cc_`` (natural log), ``time_params_`` (mu, ls),
    ``l2_penalty_``, ``volume_column_``, ``objective_``, ``cv_scores_`` (penalty -> inner-CV log-likelihood).
    """

    def __init__(self, groups: Sequence[str] = ("genomic", "clinical"), include: Sequence[str] = ("*.gtv.*",),
                 exclude: Sequence[str] = ("deep", "dose", "treatment", "clinical.center"),
                 burden_include: Sequence[str] = DEFAULT_BURDEN_INCLUDE, alpha_beta_gy: float = 10.0,
                 beta_per_gy2: float | None = None,
                 clonogen_density_per_cc: float | None = LITERATURE_CLONOGEN_DENSITY_PER_CC,
                 density_prior_sd_decades: float = 1.0, volume_column: str | None = "auto",
                 rsi_prior: RSIPrior = "covariate", rsi_alpha_floor_per_gy: float = 0.02,
                 time_distribution: TimeDistribution = "lognormal", l2_penalty: float | str = "cv",
                 penalty_grid: Sequence[float] = DEFAULT_PENALTY_GRID, inner_folds: int = 3, n_starts: int = 3,
                 max_iter: int = 500, random_state: int | None = None) -> None:
        self.groups = groups
        self.include = include
        self.exclude = exclude
        self.burden_include = burden_include
        self.alpha_beta_gy = alpha_beta_gy
        self.beta_per_gy2 = beta_per_gy2
        self.clonogen_density_per_cc = clonogen_density_per_cc
        self.density_prior_sd_decades = density_prior_sd_decades
        self.volume_column = volume_column
        self.rsi_prior = rsi_prior
        self.rsi_alpha_floor_per_gy = rsi_alpha_floor_per_gy
        self.time_distribution = time_distribution
        self.l2_penalty = l2_penalty
        self.penalty_grid = penalty_grid
        self.inner_folds = inner_folds
        self.n_starts = n_starts
        self.max_iter = max_iter
        self.random_state = random_state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.target_tags.required = False
        return tags

    # ------------------------------------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any = None) -> OutcomeCalibratedAlpha:
        frame = _as_frame(X)
        self._check_params()
        frame, event, months = _labelled(frame, y)
        if int(event.sum()) < 2:
            raise InputError(f"only {int(event.sum())} local failure(s): cannot calibrate alpha on outcomes",
                             fix="fit on a cohort with local failures (lc_event = 1)")
        self.n_features_in_ = frame.shape[1]
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        with threadpool_limits(limits=1):  # small dense problems: BLAS threads only add contention
            self._fit_preprocessing(frame)
            data = self._cure_data(frame, event, months)
            penalty = self._select_penalty(data)
            theta, result = self._solve(data, penalty, n_starts=self.n_starts)
        self.l2_penalty_ = penalty
        self._store(theta, result, data)
        return self

    def _check_params(self) -> None:
        if self.time_distribution not in ("lognormal", "weibull"):
            raise InputError(f"unknown time_distribution {self.time_distribution!r}",
                             fix="use 'lognormal' or 'weibull'")
        if self.rsi_prior not in ("none", "offset", "covariate"):
            raise InputError(f"unknown rsi_prior {self.rsi_prior!r}", fix="use 'none', 'offset' or 'covariate'")
        if not (isinstance(self.l2_penalty, (int, float)) and self.l2_penalty >= 0) and self.l2_penalty != "cv":
            raise InputError(f"l2_penalty must be a number >= 0 or 'cv', got {self.l2_penalty!r}",
                             fix="use e.g. 100 or 'cv'")
        if self.alpha_beta_gy <= 0 or (self.beta_per_gy2 is not None and self.beta_per_gy2 < 0):
            raise InputError("alpha_beta_gy must be > 0 and beta_per_gy2 >= 0", fix="use alpha_beta_gy=10")
        if self.clonogen_density_per_cc is not None and self.clonogen_density_per_cc <= 0:
            raise InputError("clonogen_density_per_cc must be > 0 or None", fix="use 1e7 or None")
        if self.rsi_alpha_floor_per_gy <= 0:
            raise InputError("rsi_alpha_floor_per_gy must be > 0", fix="use e.g. 0.02")

    def _select_penalty(self, data: CureData) -> float:
        """The L2 penalty: fixed, or the grid value with the best inner-CV held-out log-likelihood.

        The inner folds share this fit's label-free preprocessing (imputation medians, scaling, fills): no label
        of an inner validation patient is used to fit the model scored on it.
        """
        if self.l2_penalty != "cv":
            self.cv_scores_: dict[float, float] = {}
            return float(self.l2_penalty)
        grid = sorted((float(v) for v in self.penalty_grid), reverse=True)  # strong to weak, warm-started
        if not grid:
            raise InputError("penalty_grid is empty", fix="give penalty values or a fixed l2_penalty")
        n = len(data.event)
        folds = KFold(n_splits=self.inner_folds, shuffle=True, random_state=self.random_state)
        totals = dict.fromkeys(grid, 0.0)
        for train, test in folds.split(np.zeros((n, 1))):
            train_data, test_data = data.take(train), data.take(test)
            theta: np.ndarray | None = None
            for penalty in grid:
                theta, _ = self._solve(train_data, penalty, n_starts=1, start=theta)
                totals[penalty] += -self._objective(theta, test_data, 0.0)[0] * len(test)
        self.cv_scores_ = {k: v / n for k, v in totals.items()}
        best = max(self.cv_scores_, key=lambda k: self.cv_scores_[k])
        log.info("OutcomeCalibratedAlpha: inner-CV log-likelihood %s -> l2_penalty %g", self.cv_scores_, best)
        return best

    def _fit_preprocessing(self, frame: pd.DataFrame) -> None:
        selector = FeatureSelector(groups=tuple(self.groups), include=tuple(self.include),
                                   exclude=tuple(self.exclude)).fit(frame)
        self.prep_: Pipeline | None = None
        names: list[str] = []
        if selector.columns_:
            encoder = ColumnTransformer([("text", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                                          make_column_selector(dtype_exclude="number"))],
                                        remainder="passthrough", verbose_feature_names_out=False)
            self.prep_ = Pipeline([("select", selector), ("impute", GroupImputer()), ("scale", FeatureScaler()),
                                   ("encode", encoder)]).fit(frame)
            names = [str(n) for n in self.prep_.get_feature_names_out()]
        burden = np.asarray([any(fnmatch.fnmatchcase(n, pat) for pat in self.burden_include) for n in names],
                            dtype=bool)
        self.burden_mask_ = burden
        self.alpha_feature_names_ = [n for n, b in zip(names, burden, strict=True) if not b]
        self.burden_feature_names_ = [n for n, b in zip(names, burden, strict=True) if b]
        self.volume_column_ = find_volume_column(list(frame.columns)) if self.volume_column == "auto" \
            else self.volume_column
        if self.volume_column_ is not None and self.volume_column_ not in frame.columns:
            raise InputError(f"volume column {self.volume_column_} is missing",
                             fix="use volume_column='auto', None or a GTV volume column of the table")
        if self.volume_column_ is not None:
            volume = self._raw_log_volume(frame)
            self.log_volume_fill_ = float(np.nanmedian(volume)) if np.isfinite(volume).any() else 0.0
        if self.rsi_prior != "none":
            log_alpha = self._raw_log_alpha_rsi(frame)
            if not np.isfinite(log_alpha).any():
                raise InputError(f"rsi_prior={self.rsi_prior!r} needs {RSI_COLUMN} but no training patient has one",
                                 fix="add genomic.rsi or use rsi_prior='none'")
            self.rsi_fill_ = float(np.nanmedian(log_alpha))
            filled = np.nan_to_num(log_alpha, nan=self.rsi_fill_)
            self.rsi_center_, self.rsi_scale_ = float(filled.mean()), float(filled.std()) or 1.0
            if self.rsi_prior == "covariate":
                self.alpha_feature_names_.append(RSI_COVARIATE)

    def _raw_log_volume(self, frame: pd.DataFrame) -> np.ndarray:
        volume_mm3 = pd.to_numeric(frame[self.volume_column_], errors="coerce").to_numpy(dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(volume_mm3 > 0, np.log(volume_mm3 / 1000.0), np.nan)

    def _raw_log_alpha_rsi(self, frame: pd.DataFrame) -> np.ndarray:
        """``log alpha_from_rsi(RSI)``, floored at ``rsi_alpha_floor_per_gy``; NaN where RSI is missing."""
        if RSI_COLUMN not in frame.columns:
            return np.full(len(frame), np.nan)
        rsi = pd.to_numeric(frame[RSI_COLUMN], errors="coerce").to_numpy(dtype=np.float64)
        valid = np.isfinite(rsi) & (rsi > 0) & (rsi < 1)
        alpha = np.asarray(alpha_from_rsi(np.where(valid, rsi, 0.5), invalid="nan"), dtype=np.float64)
        alpha = np.where(np.isnan(alpha), self.rsi_alpha_floor_per_gy, alpha)  # RSI >= exp(-4 beta): alpha <= 0
        return np.where(valid, np.log(np.maximum(alpha, self.rsi_alpha_floor_per_gy)), np.nan)

    def _inputs(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(alpha features, burden features, log alpha offset, log GTV volume in cc) of the rows of ``frame``."""
        matrix = np.zeros((len(frame), 0)) if self.prep_ is None \
            else np.asarray(self.prep_.transform(frame), dtype=np.float64)
        alpha_x, burden_x = matrix[:, ~self.burden_mask_], matrix[:, self.burden_mask_]
        offset = np.zeros(len(frame))
        if self.rsi_prior != "none":
            log_alpha = np.nan_to_num(self._raw_log_alpha_rsi(frame), nan=self.rsi_fill_)
            if self.rsi_prior == "offset":
                offset = log_alpha
            else:
                alpha_x = np.column_stack([alpha_x, (log_alpha - self.rsi_center_) / self.rsi_scale_])
        log_volume = np.zeros(len(frame))
        if self.volume_column_ is not None:
            if self.volume_column_ not in frame.columns:
                raise InputError(f"column {self.volume_column_} (GTV volume) is missing",
                                 fix="predict on a table with the training table's columns")
            log_volume = np.nan_to_num(self._raw_log_volume(frame), nan=self.log_volume_fill_)
        return alpha_x, burden_x, offset, log_volume

    def _cure_data(self, frame: pd.DataFrame, event: np.ndarray, months: np.ndarray) -> CureData:
        dose, fractions = _regimen(frame)
        kill_a, kill_c = lq_kill_terms(dose, fractions, self.alpha_beta_gy, self.beta_per_gy2)
        alpha_x, burden_x, offset, log_volume = self._inputs(frame)
        weights = np.ones(alpha_x.shape[1] + burden_x.shape[1])
        if self.rsi_prior == "covariate":
            weights[alpha_x.shape[1] - 1] = 0.0  # the RSI coefficient is unpenalised
        return CureData(alpha_x, burden_x, weights, offset, log_volume, kill_a, kill_c, event.astype(np.float64),
                        np.maximum(months, 0.01))

    # ---------------------------------------------------------------------------------------- optimisation
    def _density_setup(self) -> tuple[bool, float, tuple[float, float] | None]:
        prior_centre = float(np.log(LITERATURE_CLONOGEN_DENSITY_PER_CC))
        if self.clonogen_density_per_cc is None:
            return True, prior_centre, (prior_centre, self.density_prior_sd_decades * np.log(10.0))
        return False, float(np.log(self.clonogen_density_per_cc)), None

    def _initial_theta(self, data: CureData, fit_density: bool, log_density: float) -> np.ndarray:
        times = np.log(data.months[data.event == 1])
        spread = float(np.std(times)) if times.size > 1 and np.std(times) > 0 else 0.5
        if self.time_distribution == "lognormal":
            mu, log_scale = float(np.mean(times)), float(np.log(spread))
        else:  # Weibull: ln T is Gumbel with sd pi / (k sqrt 6) and mean ln(scale) - 0.5772 / k
            k = np.pi / (spread * np.sqrt(6.0))
            mu, log_scale = float(np.mean(times) + 0.5772 / k), float(np.log(k))
        # b such that the average patient has TCP ~ the observed non-failure fraction
        target = np.log(-np.log(np.clip(1.0 - data.event.mean(), 0.05, 0.95)))
        kill = log_density + data.log_volume_cc.mean() - data.fixed_log_kill.mean() - target
        alpha0 = kill / data.alpha_dose_gy.mean() if kill > 0 else 0.1
        b = float(np.log(max(alpha0, 1e-3)) - data.offset.mean())
        head = [b, *np.zeros(data.n_coef)]
        return np.asarray(head + ([log_density] if fit_density else []) + [mu, log_scale], dtype=np.float64)

    def _objective(self, theta: np.ndarray, data: CureData, penalty: float) -> tuple[float, np.ndarray]:
        fit_density, log_density, prior = self._density_setup()
        return cure_negative_log_likelihood(theta, data, l2_penalty=penalty, distribution=self.time_distribution,
                                            fit_density=fit_density, log_density_prior=prior,
                                            log_density=log_density)

    def _solve(self, data: CureData, penalty: float, *, n_starts: int, start: np.ndarray | None = None,
               ) -> tuple[np.ndarray, optimize.OptimizeResult]:
        """Best L-BFGS-B optimum over ``n_starts`` starts (the first deterministic or ``start``)."""
        fit_density, log_density, _ = self._density_setup()
        k = data.n_coef
        first = self._initial_theta(data, fit_density, log_density) if start is None else start
        bounds = [(-12.0, 3.0)] + [(None, None)] * k + ([(np.log(1e2), np.log(1e13))] if fit_density else []) \
            + [(-3.0, 8.0), (-4.0, 3.0)]
        rng = np.random.default_rng(self.random_state)
        best: optimize.OptimizeResult | None = None
        for i in range(max(1, n_starts)):
            theta0 = first.copy()
            if i > 0:
                theta0[0] += rng.normal(0.0, 0.3)
                theta0[1:1 + k] = rng.normal(0.0, 0.1 / np.sqrt(max(k, 1)), size=k)
            result = optimize.minimize(self._objective, theta0, args=(data, penalty), jac=True, method="L-BFGS-B",
                                       bounds=bounds, options={"maxiter": self.max_iter})
            if best is None or result.fun < best.fun:
                best = result
        assert best is not None
        return np.asarray(best.x, dtype=np.float64), best

    def _store(self, theta: np.ndarray, result: optimize.OptimizeResult, data: CureData) -> None:
        if not result.success:
            log.warning("OutcomeCalibratedAlpha: L-BFGS-B did not converge (%s)", result.message)
        fit_density, log_density, _ = self._density_setup()
        p, k = data.alpha_features.shape[1], data.n_coef
        self.intercept_ = float(theta[0])
        self.coef_ = np.asarray(theta[1:1 + p], dtype=np.float64)
        self.burden_coef_ = np.asarray(theta[1 + p:1 + k], dtype=np.float64)
        self.log_density_per_cc_ = float(theta[1 + k]) if fit_density else log_density
        self.time_params_ = (float(theta[-2]), float(theta[-1]))
        self.objective_ = float(result.fun)
        self.n_iter_ = int(result.nit)

    def _theta(self) -> np.ndarray:
        check_is_fitted(self, "coef_")
        density = [self.log_density_per_cc_] if self.clonogen_density_per_cc is None else []
        return np.concatenate([[self.intercept_], self.coef_, self.burden_coef_, density, self.time_params_])

    # --------------------------------------------------------------------------------------------- predict
    def _log_alpha_and_burden(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(log alpha, ln N) per row."""
        check_is_fitted(self, "coef_")
        alpha_x, burden_x, offset, log_volume = self._inputs(frame)
        log_alpha = np.clip(self.intercept_ + alpha_x @ self.coef_ + offset, *_ETA_BOUNDS)
        return log_alpha, self.log_density_per_cc_ + log_volume + burden_x @ self.burden_coef_

    def predict(self, X: Any) -> np.ndarray:
        """alpha (Gy^-1) per patient."""
        return np.exp(self._log_alpha_and_burden(_as_frame(X))[0])

    def predict_lq(self, X: Any) -> pd.DataFrame:
        """``alpha_per_gy``, ``beta_per_gy2`` and ``log10_clonogens`` per patient (the model's TCP parameters)."""
        frame = _as_frame(X)
        log_alpha, log_n = self._log_alpha_and_burden(frame)
        alpha = np.exp(log_alpha)
        beta = alpha / self.alpha_beta_gy if self.beta_per_gy2 is None else np.full_like(alpha, self.beta_per_gy2)
        return pd.DataFrame({"alpha_per_gy": alpha, "beta_per_gy2": beta, "log10_clonogens": log_n / np.log(10.0)},
                            index=frame.index)

    def predict_tcp(self, X: Any, total_dose_gy: Any = None, n_fractions: Any = None) -> np.ndarray:
        """Poisson TCP (Webb & Nahum 1993) per patient at the delivered regimen, or at the one given."""
        frame = _as_frame(X)
        dose, fractions = _regimen(frame, total_dose_gy, n_fractions)
        kill_a, kill_c = lq_kill_terms(dose, fractions, self.alpha_beta_gy, self.beta_per_gy2)
        log_alpha, log_n = self._log_alpha_and_burden(frame)
        big_l = log_n - np.exp(log_alpha) * kill_a - kill_c
        return np.exp(-np.exp(np.clip(big_l, -_L_CLIP, _L_CLIP)))

    def predict_local_control(self, X: Any, months: float = 36.0, total_dose_gy: Any = None,
                              n_fractions: Any = None) -> np.ndarray:
        """P(no local failure by ``months``) = ``TCP + (1 - TCP) S(months)`` (mixture cure model)."""
        tcp = self.predict_tcp(X, total_dose_gy, n_fractions)
        *_, log_s, _, _ = _time_terms(np.asarray([max(months, 0.01)]), *self.time_params_, self.time_distribution)
        return tcp + (1.0 - tcp) * float(np.exp(log_s[0]))

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Mean log-likelihood per patient of the outcomes under the fitted model (higher is better)."""
        frame, event, months = _labelled(_as_frame(X), y)
        with threadpool_limits(limits=1):
            return -self._objective(self._theta(), self._cure_data(frame, event, months), 0.0)[0]


def _as_frame(X: Any) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    raise InputError(f"X must be the feature table as a pandas DataFrame, got {type(X).__name__}",
                     fix="pass radiogenomics.features.schema.read_feature_table(path)")
