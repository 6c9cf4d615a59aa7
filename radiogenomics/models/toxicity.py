"""Toxicity models: probability of grade >= 2 of an endpoint, and the same probability at another prescription.

``ToxicityClassifier`` learns P(grade >= 2) of one ``tox_<endpoint>`` column of patients.csv (in the feature
table ``outcome.tox_<endpoint>``) from the dose metrics of the endpoint's organs (``dose.<structure>.*``),
clinical and genomic features and, on request, the organs' radiomics. Three candidates share one interface:
a logistic regression whose dose coefficients are >= 0, gradient boosting with a monotone dose constraint,
and the patient-specific LKB model (:class:`~radiogenomics.models.lkb_patient.PatientLKB`). Each is
calibrated with ``CalibratedClassifierCV`` (Platt 1999 sigmoid or isotonic, Zadrozny & Elkan 2002) on
internal folds of the training data only (a Platt map that comes out decreasing on a small fold is
replaced by its constant, so the probability never falls with dose).

**Fractionation** (``fractionation="eqd2"``, the default): the organ dose metrics are converted to EQD2 at
the organ's alpha/beta for the organ's own dose per fraction ``D/n`` (n: ``clinical.n_fractions``; Fowler, Br
J Radiol 1989;62:679; :func:`~radiogenomics.models.dose_scaling.eqd2_dose_features`) in fit and in
prediction, so the model learns on a fractionation-independent dose scale. alpha/beta per structure from the
tissue table (:func:`~radiogenomics.models.dose_scaling.structure_alpha_beta_gy`), kept in
``alpha_beta_gy_``. The fitted model records the training range of the target dose per fraction
(``dose_per_fraction_range_gy_``; :meth:`ToxicityClassifier.regimen_in_training`). ``fractionation=None`` is
the physical dose, as models fitted before this option (pickles without the attribute load as None).

**What if the dose changes** (:meth:`ToxicityClassifier.predict_proba_at_dose`): a plan scaled by f
multiplies every dose by f. Mean, min, max, gEUD and D_x are homogeneous of degree 1 and are scaled exactly;
V_x (percent of the organ above x Gy) needs the DVH and is recomputed from ``DVH.scaled(f)``. Models fitted
with ``dose_metrics="linear"`` (the default) use no V_x, so the what-if needs only the feature table; with
``dose_metrics="all"`` the DVHs must be passed, else an ``InputError`` says so. ``n_fractions`` delivers the
scaled plan in another number of fractions (the EQD2 conversion uses it).
"""

from __future__ import annotations

import fnmatch
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils.validation import check_is_fitted

from radiogenomics.errors import InputError
from radiogenomics.features import naming
from radiogenomics.features.preprocessing import FeatureScaler, FeatureSelector, GroupImputer
from radiogenomics.features.schema import CLINICAL, GENOMIC, IMAGING, TREATMENT, column_group
from radiogenomics.models.dose_scaling import (
    N_FRACTIONS_COLUMN,
    PRESCRIPTION_DOSE_COLUMNS,
    VOLUME_METRIC,
    dose_scale_factors,
    eqd2_dose_features,
    is_linear_dose_metric,
    n_fractions_per_row,
    scale_dose_features,
    split_dose_column,
    structure_alpha_beta_gy,
    vx_threshold_gy,
)
from radiogenomics.models.lkb_patient import PatientLKB
from radiogenomics.models.monotone_logistic import MonotoneLogisticRegression
from radiogenomics.radiobiology import DVH, lkb_ntcp, load_ntcp_parameters, resolve_structure
from radiogenomics.radiobiology.endpoints import endpoint_organs

log = logging.getLogger(__name__)

TOX_PREFIX = "tox_"
#: Clinical columns left out by default: the centre is a batch label, the site is constant within a model.
DEFAULT_EXCLUDE: tuple[str, ...] = ("clinical.center", "clinical.site")
#: Feature sources a ToxicityClassifier can use; ``oar_imaging`` is the radiomics of the endpoint's organs.
TOXICITY_GROUPS: tuple[str, ...] = ("dose", "clinical", "genomic", "oar_imaging", "treatment")
#: Dose scales of the organ dose metrics: ``"eqd2"`` (EQD2 at the organ's alpha/beta) or None (physical dose).
FRACTIONATIONS: tuple[str | None, ...] = ("eqd2", None)
#: Slack (Gy) of :meth:`ToxicityClassifier.regimen_in_training` around the training dose-per-fraction range: a
#: recommended total delivered in whole fractions moves the dose per fraction by up to d / (2 n) (0.03-0.04 Gy at
#: 25-35 fractions; 60 Gy at 2.2 Gy is 27 x 2.22 Gy), which is no extrapolation (the organ EQD2 changes by < 1 %);
#: far below any clinically different regimen (1.8 vs 2.0 vs 2.4 Gy).
DOSE_PER_FRACTION_TOLERANCE_GY = 0.05
TOTAL_DOSE_COLUMN = "clinical.total_dose_gy"
DOSE_PER_FRACTION_COLUMN = "clinical.dose_per_fraction_gy"



def outcome_column(endpoint: str) -> str:
    """The feature-table label column of an endpoint: ``outcome.tox_<endpoint>``."""
    return naming.outcome_column(f"{TOX_PREFIX}{endpoint}")


def available_endpoints(X: pd.DataFrame) -> list[str]:
    """The ``tox_*`` endpoints present as ``outcome.tox_<endpoint>`` columns of a feature table."""
    prefix = f"{naming.OUTCOME}.{TOX_PREFIX}"
    return sorted(str(c)[len(prefix):] for c in X.columns if str(c).startswith(prefix))


def endpoint_labels(X: pd.DataFrame, endpoint: str) -> pd.Series:
    """The grade column of ``endpoint``; an ``InputError`` naming it and the available ``tox_*`` columns."""
    column = outcome_column(endpoint)
    if column not in X.columns:
        found = [f"tox_{e}" for e in available_endpoints(X)]
        raise InputError(f"unknown toxicity endpoint {endpoint!r}: the table has no column {column}; "
                         f"available tox_* columns: {found or 'none'}",
                         fix=f"use one of {found} or pass the grades as y" if found
                         else "add the tox_<endpoint> grade column to patients.csv or pass the grades as y")
    return X[column]


def binary_grade(y: Any, threshold_grade: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, label)``: rows with a grade, and ``grade >= threshold_grade`` as 0/1 for those rows."""
    grade = pd.to_numeric(pd.Series(np.asarray(y, dtype=object)), errors="coerce").to_numpy(dtype=np.float64)
    kept = np.isfinite(grade)
    return kept, (grade[kept] >= threshold_grade).astype(np.int64)


def _organ(structure: str) -> str | None:
    match = resolve_structure(structure)
    return match.organ if match is not None and match.kind == "oar" else None


def endpoint_structures(X: pd.DataFrame, endpoint: str, structures: Sequence[str] | None = None,
                        *, lkb: bool = False) -> list[str]:
    """Dose structures (column components) of the table that belong to the endpoint's organs.

    ``structures`` given: those names (slugged), which must have dose columns. Otherwise the organs of
    :func:`~radiogenomics.radiobiology.endpoints.endpoint_organs` (``lkb=True``: only the LKB organ). An
    ``InputError`` when none is found.
    """
    present = sorted({s for s, _ in filter(None, (split_dose_column(str(c)) for c in X.columns))})
    if structures is not None:
        wanted = [naming.structure_slug(s) for s in structures]
        absent = [s for s in wanted if s not in present]
        if absent:
            raise InputError(f"toxicity model: no dose columns for structure(s) {absent}",
                             fix=f"use structures among {present}")
        return wanted
    table = endpoint_organs()
    if endpoint not in table:
        raise InputError(f"toxicity endpoint {endpoint!r} has no organ table entry",
                         fix=f"pass structures=[...] naming its dose structures (present: {present}); "
                             f"tabulated endpoints: {sorted(table)} (radiobiology/data/endpoint_organs.yaml)")
    entry = table[endpoint]
    organs = (entry.lkb_organ,) if lkb else entry.organs
    found = [s for s in present if _organ(s) in organs]
    if not found:
        raise InputError(f"toxicity endpoint {endpoint!r}: the table has no dose columns of its organ(s) "
                         f"{list(organs)} (dose structures present: {present})",
                         fix="give the organ a mask in images.csv and re-extract (patients with a DOSE grid take "
                             "dose features from the masks only), or join its dvh.csv features "
                             "(features.dosimetric.dvh_table_features), or pass structures=[...]")
    return found


class CombinedGEUD(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """gEUD (Gy) of several structures as one organ, from their gEUDs and volumes.

    Input columns: ``k`` gEUDs then their ``k`` volumes (cc). With the same ``a`` for every structure,
    ``gEUD_organ = (sum_k V_k gEUD_k^a / sum_k V_k)^(1/a)`` exactly (Niemierko 1997: gEUD^a is the
    volume-weighted mean of D^a); for a = 1, the mean dose of both parotids together. Structures missing for
    a patient are left out; a patient with none gets the training median. Output column ``lkb.geud_gy``.
    """

    def __init__(self, a: float = 1.0) -> None:
        self.a = a

    def _combine(self, X: Any) -> np.ndarray:
        values = np.asarray(X, dtype=np.float64)
        k = values.shape[1] // 2
        g, v = values[:, :k], values[:, k:]
        ok = np.isfinite(g) & np.isfinite(v) & (v > 0)
        weights = np.where(ok, v, 0.0)
        powered = np.where(ok, np.maximum(g, 0.0), 0.0) ** self.a
        total = weights.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(np.where(total > 0, ((weights * powered).sum(axis=1) / total) ** (1.0 / self.a),
                                       np.nan))

    def fit(self, X: Any, y: Any = None) -> CombinedGEUD:
        if np.asarray(X).shape[1] % 2:
            raise InputError("CombinedGEUD needs pairs of columns (gEUDs, then volumes)")
        combined = self._combine(X)
        finite = combined[np.isfinite(combined)]
        if finite.size == 0:
            raise InputError("CombinedGEUD: no patient has a gEUD and volume of the endpoint's organ",
                             fix="check the dose features of the organ (dose.<structure>.geud_gy, volume_cc)")
        self.fill_gy_ = float(np.median(finite))
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X: Any) -> pd.DataFrame:
        check_is_fitted(self, "fill_gy_")
        combined = self._combine(X)
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame({"lkb.geud_gy": np.where(np.isfinite(combined), combined, self.fill_gy_)}, index=index)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(["lkb.geud_gy"], dtype=object)


class OneHotEncoderIgnoringUnknown(OneHotEncoder):  # type: ignore[misc]
    """``OneHotEncoder(handle_unknown="ignore")`` without scikit-learn's UserWarning "Found unknown categories ...
    encoded as all zeros" (issued whenever ``drop`` is set): unknown categories are expected here (a centre or
    T stage missing from a calibration or cross-validation fold, a new centre at prediction) and handled, all
    zeros (a two-level column's one 0/1 column then reads its first level). Only that warning of this call
    is filtered."""

    def transform(self, X: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Found unknown categories in columns", category=UserWarning,
                                    module=r"sklearn\.preprocessing\._encoders")
            return super().transform(X)


def _encoder() -> ColumnTransformer:
    """One-hot encoding of the text columns (unknown categories ignored; a two-level column keeps one 0/1
    column, so the LKB TD50 refers to its first level), numeric columns passed through."""
    return ColumnTransformer([("text", OneHotEncoderIgnoringUnknown(drop="if_binary", handle_unknown="ignore",
                                                                    sparse_output=False),
                               make_column_selector(dtype_exclude="number"))],
                             remainder="passthrough", verbose_feature_names_out=False)


def _prep(columns: Sequence[str]) -> list[tuple[str, Any]]:
    """Select, impute (training medians, missing flags), standardise, one-hot encode text columns."""
    return [("select", FeatureSelector(groups=(), include=tuple(columns))), ("impute", GroupImputer()),
            ("scale", FeatureScaler()), ("encode", _encoder())]


class ToxicityClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Calibrated probability of grade >= 2 of one toxicity endpoint, from the whole feature table.

    Parameters
    ----------
    endpoint:
        Name after ``tox_`` (``"xerostomia"`` reads ``outcome.tox_xerostomia`` when ``y`` is None; a leading
        ``tox_`` is accepted and dropped: ``endpoint_``).
    estimator:
        ``"logistic"`` (L2, C = ``C``, dose coefficients >= 0), ``"hgb"`` (histogram gradient boosting,
        monotone increasing in every dose metric) or ``"patient_lkb"`` (LKB on the LKB organ's gEUD with TD50
        modulated by the non-dose features; :class:`PatientLKB`).
    calibration:
        ``"sigmoid"`` (Platt), ``"isotonic"`` or None: ``CalibratedClassifierCV`` with ``calibration_cv``
        stratified internal folds of the training data (ensemble of the fold models).
    groups:
        Feature sources among :data:`TOXICITY_GROUPS`: ``dose`` (metrics of the endpoint's structures only),
        ``clinical``, ``genomic``, ``oar_imaging`` (radiomics of the endpoint's structures), ``treatment``
        (prescription; scaled with the plan in the what-if). Text columns are one-hot encoded.
    structures:
        Dose structures to use; None: the endpoint's organs found in the table
        (:func:`~radiogenomics.radiobiology.endpoints.endpoint_organs`).
    dose_metrics:
        ``"linear"`` (volume, mean, min, max, gEUD, D_x: the what-if needs no DVH) or ``"all"`` (also V_x).
    exclude:
        Columns (or patterns) never used; default the centre and the site.
    threshold_grade:
        Grade at or above which the outcome is an event (2: grade >= 2).
    C, lkb_alpha:
        Penalties of the logistic model (inverse ridge strength) and of the LKB covariate weights.
    fractionation:
        ``"eqd2"`` (default): the linear dose metrics (mean, min, max, gEUD, D_x) of every ``dose.*`` input
        are converted to EQD2 at the structure's alpha/beta for its own dose per fraction ``D/n``, n =
        ``clinical.n_fractions`` (:func:`~radiogenomics.models.dose_scaling.eqd2_dose_features`), in fit and in
        prediction. V_x, volumes and the prescription columns stay physical. Training rows without a positive
        ``clinical.n_fractions`` are left out of fit (logged): their dose on this scale is unknown, and
        imputing it would pair a made-up dose with a real outcome. None: physical dose (models fitted before
        this option, whose pickles have no such attribute, load as None and predict as they did).

    ``fit(X, y=None)``: ``y`` is the grade (rows with a missing grade are dropped and logged); None reads
    the endpoint's column. Learnt: ``structures_``, ``lkb_structures_``, ``columns_`` (input columns),
    ``model_`` (the fitted, calibrated model), ``classes_`` ([0, 1]), ``alpha_beta_gy_`` ({structure:
    alpha/beta Gy} of the converted dose structures; empty for ``fractionation=None``) and
    ``dose_per_fraction_range_gy_`` ((min, max) of ``clinical.total_dose_gy / clinical.n_fractions`` over the
    fitted rows, None when no row has both).
    """

    def __init__(self, endpoint: str = "xerostomia",
                 estimator: Literal["logistic", "hgb", "patient_lkb"] = "logistic",
                 calibration: Literal["sigmoid", "isotonic"] | None = "sigmoid",
                 groups: Sequence[str] = ("dose", "clinical", "genomic"), structures: Sequence[str] | None = None,
                 dose_metrics: Literal["linear", "all"] = "linear", exclude: Sequence[str] = DEFAULT_EXCLUDE,
                 threshold_grade: float = 2.0, C: float = 1.0, lkb_alpha: float = 1.0, calibration_cv: int = 3,
                 random_state: int | None = 0, fractionation: Literal["eqd2"] | None = "eqd2") -> None:
        self.endpoint = endpoint
        self.estimator = estimator
        self.calibration = calibration
        self.groups = groups
        self.structures = structures
        self.dose_metrics = dose_metrics
        self.exclude = exclude
        self.threshold_grade = threshold_grade
        self.C = C
        self.lkb_alpha = lkb_alpha
        self.calibration_cv = calibration_cv
        self.random_state = random_state
        self.fractionation = fractionation

    def __setstate__(self, state: dict[str, Any]) -> None:
        # pickles from before the fractionation option were fitted on physical dose: they keep predicting so
        state.setdefault("fractionation", None)
        super().__setstate__(state)

    # --- columns -------------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.estimator not in ("logistic", "hgb", "patient_lkb"):
            raise InputError(f"unknown toxicity estimator {self.estimator!r}",
                             fix="use 'logistic', 'hgb' or 'patient_lkb'")
        if self.calibration not in ("sigmoid", "isotonic", None):
            raise InputError(f"unknown calibration {self.calibration!r}", fix="use 'sigmoid', 'isotonic' or None")
        if self.dose_metrics not in ("linear", "all"):
            raise InputError(f"unknown dose_metrics {self.dose_metrics!r}", fix="use 'linear' or 'all'")
        if self.fractionation not in FRACTIONATIONS:
            raise InputError(f"unknown fractionation {self.fractionation!r}",
                             fix="use 'eqd2' (EQD2 at the organ's alpha/beta) or None (physical dose)")
        unknown = sorted(set(self.groups) - set(TOXICITY_GROUPS))
        if unknown:
            raise InputError(f"unknown toxicity feature group(s) {unknown}", fix=f"use some of {TOXICITY_GROUPS}")

    def _wanted_dose_metric(self, metric: str) -> bool:
        return metric == VOLUME_METRIC or is_linear_dose_metric(metric) or (
            self.dose_metrics == "all" and vx_threshold_gy(metric) is not None)

    def _select_columns(self, X: pd.DataFrame) -> tuple[list[str], list[str]]:
        """(dose columns, other feature columns) of the table this model uses."""
        structures = set(self.structures_)
        dose, other = [], []
        for column in (str(c) for c in X.columns):
            if any(fnmatch.fnmatchcase(column, pattern) for pattern in self.exclude):
                continue
            parts = split_dose_column(column)
            try:
                group = column_group(column)
            except ValueError:
                continue
            if parts is not None and group == "dose":
                if "dose" in self.groups and parts[0] in structures and self._wanted_dose_metric(parts[1]):
                    dose.append(column)
            elif group in (CLINICAL, GENOMIC) and group in self.groups:
                other.append(column)
            elif group == TREATMENT and "treatment" in self.groups:
                # doses of the prescription scale with the plan (monotone, never an LKB covariate)
                if parts is not None:
                    if self._wanted_dose_metric(parts[1]):
                        dose.append(column)
                else:
                    (dose if column in PRESCRIPTION_DOSE_COLUMNS else other).append(column)
            elif group == IMAGING and "oar_imaging" in self.groups and column.split(".")[1] in structures:
                other.append(column)
        return dose, other

    # --- estimators ----------------------------------------------------------------------------------------
    def _lkb_columns(self) -> list[str]:
        """The gEUD columns then the volume columns of the LKB organ's structures."""
        return ([naming.dose_column(s, "geud_gy") for s in self.lkb_structures_]
                + [naming.dose_column(s, VOLUME_METRIC) for s in self.lkb_structures_])

    def _base_model(self, X: pd.DataFrame, dose: list[str], other: list[str]) -> Pipeline:
        increasing = [c for c in dose if not c.endswith(f".{VOLUME_METRIC}")]
        if self.estimator == "logistic":
            return Pipeline([*_prep(dose + other), ("model", MonotoneLogisticRegression(
                C=self.C, increasing=increasing))]).set_output(transform="pandas")
        if self.estimator == "hgb":
            hgb = HistGradientBoostingClassifier(learning_rate=0.05, max_iter=150, max_depth=3, min_samples_leaf=20,
                                                 l2_regularization=1.0, monotonic_cst=dict.fromkeys(increasing, 1),
                                                 random_state=self.random_state)
            return Pipeline([*_prep(dose + other), ("model", hgb)]).set_output(transform="pandas")
        lkb_columns = self._lkb_columns()
        absent = [c for c in lkb_columns if c not in X.columns]
        if absent:
            raise InputError(f"patient_lkb needs the columns {absent}", fix="extract the organ's dose features")
        params = load_ntcp_parameters().get(self.endpoint_)
        inputs = ColumnTransformer([("geud", CombinedGEUD(a=_feature_a(self.lkb_structures_)), lkb_columns),
                                    ("x", Pipeline(_prep(other)[1:]), other)],
                                   remainder="drop", verbose_feature_names_out=False)
        lkb = PatientLKB(geud_column=0, td50_gy=params["td50_gy"] if params else None,
                         m=params["m"] if params else None, alpha=self.lkb_alpha)
        return Pipeline([("inputs", inputs), ("model", lkb)]).set_output(transform="pandas")

    def fit(self, X: pd.DataFrame, y: Any = None) -> ToxicityClassifier:
        self._check_params()
        self.endpoint_ = str(self.endpoint).removeprefix(TOX_PREFIX)
        if not isinstance(X, pd.DataFrame):
            raise InputError("ToxicityClassifier needs the feature table as a pandas DataFrame",
                             fix="read it with radiogenomics.features.schema.read_feature_table")
        grades = endpoint_labels(X, self.endpoint_) if y is None else y
        kept, label = binary_grade(grades, self.threshold_grade)
        if len(kept) != len(X):
            raise InputError(f"y has {len(kept)} grades for {len(X)} patients")
        if (~kept).any():
            log.info("toxicity %s: %d patient(s) without a grade left out of fit", self.endpoint_, int((~kept).sum()))
        if np.unique(label).size != 2:
            raise InputError(f"toxicity {self.endpoint_}: the training patients need both grade < "
                             f"{self.threshold_grade:g} and >= {self.threshold_grade:g}",
                             fix="train on more patients")
        self.structures_ = endpoint_structures(X, self.endpoint_, self.structures)
        self.lkb_structures_ = (self.structures_ if self.structures is not None
                                else endpoint_structures(X, self.endpoint_, lkb=True))
        dose, other = self._select_columns(X)
        self.columns_ = (self._lkb_columns() if self.estimator == "patient_lkb" else dose) + other
        if not self.columns_:
            raise InputError(f"toxicity {self.endpoint_}: no input columns selected", fix="check groups/exclude")
        base = self._base_model(X, dose, other)
        train = X.loc[kept]
        train, label = self._on_dose_scale(train, label)
        # calibration folds need >= 1 event and non-event each: fewer folds on tiny training sets, none below 2
        n_cal = min(int(self.calibration_cv), int(np.bincount(label).min()))
        if self.calibration is not None and n_cal < 2:
            _calibration_note(UNCALIBRATED, f"toxicity {self.endpoint_}: too few events to calibrate ({n_cal}); "
                                            "uncalibrated")
        if self.calibration is None or n_cal < 2:
            self.model_ = base.fit(train, label)
        else:
            folds = StratifiedKFold(n_cal, shuffle=True, random_state=self.random_state)
            self.model_ = CalibratedClassifierCV(base, method=self.calibration, cv=folds).fit(train, label)
            _keep_platt_increasing(self.model_, folds, train, label)
        self.classes_ = np.array([0, 1])
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        return self

    def _on_dose_scale(self, train: pd.DataFrame, label: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
        """The graded training rows with their dose metrics on the model's dose scale, and their labels.

        Records ``alpha_beta_gy_`` and ``dose_per_fraction_range_gy_``. With ``fractionation="eqd2"`` rows
        without a positive ``clinical.n_fractions`` are left out (logged); an ``InputError`` when the table
        has no such column, or too few rows are left.
        """
        self.alpha_beta_gy_: dict[str, float] = {}
        if self.fractionation == "eqd2":
            if N_FRACTIONS_COLUMN not in train.columns:
                raise InputError(f"toxicity {self.endpoint_}: fractionation='eqd2' needs the number of fractions "
                                 f"{N_FRACTIONS_COLUMN} to put the dose metrics on the EQD2 scale",
                                 fix="add n_fractions to patients.csv, or fit with fractionation=None "
                                     "(physical dose, fractionation ignored)")
            n = n_fractions_per_row(train)
            has_n = np.isfinite(n)
            if not has_n.all():
                log.warning("toxicity %s: %d graded patient(s) without a positive %s left out of fit (their EQD2 "
                            "dose is unknown; dose features are never imputed)", self.endpoint_,
                            int((~has_n).sum()), N_FRACTIONS_COLUMN)
                train, label, n = train.loc[has_n], label[has_n], n[has_n]
            if np.unique(label).size != 2:
                raise InputError(f"toxicity {self.endpoint_}: the training patients with a number of fractions "
                                 f"need both grade < {self.threshold_grade:g} and >= {self.threshold_grade:g}",
                                 fix=f"fill {N_FRACTIONS_COLUMN} (patients.csv n_fractions), or train on more "
                                     "patients")
            for structure in sorted({p[0] for c in self.columns_ if (p := split_dose_column(c)) is not None
                                     and is_linear_dose_metric(p[1])}):
                self.alpha_beta_gy_[structure], note = structure_alpha_beta_gy(structure)
                if note:
                    log.warning("toxicity %s: dose structure %r has no tissue row: EQD2 at alpha/beta %g Gy (%s)",
                                self.endpoint_, structure, self.alpha_beta_gy_[structure], note)
            train = eqd2_dose_features(train, n, self.alpha_beta_gy_, columns=self.columns_)
        self.dose_per_fraction_range_gy_ = _dose_per_fraction_range(train)
        return train, label

    def _dose_scale(self, X: pd.DataFrame, n_fractions: np.ndarray | None = None) -> pd.DataFrame:
        """``X`` with its dose metrics on the model's dose scale (EQD2 for ``n_fractions``, default each row's
        own; NaN for a row without n, logged). Unchanged for ``fractionation=None`` (and old pickles)."""
        if self.fractionation != "eqd2":
            return X
        n = n_fractions_per_row(X) if n_fractions is None else n_fractions
        unknown = int(np.isnan(n).sum())
        if unknown:
            log.warning("toxicity %s: %d row(s) without a positive %s: their EQD2 dose features are NaN",
                        self.endpoint_, unknown, N_FRACTIONS_COLUMN)
        return eqd2_dose_features(X, n, self.alpha_beta_gy_, columns=self.columns_)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """(n, 2): P(grade < threshold), P(grade >= threshold) of the delivered plans.

        With ``fractionation="eqd2"`` the dose metrics are converted at each row's ``clinical.n_fractions``; a
        row without one has NaN EQD2 dose features, which the model's missing-value step fills like any other
        missing feature (the estimator API answers every row; :meth:`predict_proba_at_dose` does not, and
        :meth:`dose_known` says which rows have their dose).
        """
        check_is_fitted(self, "model_")
        return np.asarray(self.model_.predict_proba(self._dose_scale(X)))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray((self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64))

    # --- what if the dose changes --------------------------------------------------------------------------
    def vx_columns(self) -> list[str]:
        """Input columns that are V_x metrics (they need the DVH in :meth:`predict_proba_at_dose`)."""
        check_is_fitted(self, "model_")
        return [c for c in self.columns_ if (p := split_dose_column(c)) and vx_threshold_gy(p[1]) is not None]

    def predict_proba_at_dose(self, X: pd.DataFrame, prescription_gy: Any = None, scale: Any = None,
                              dvhs: Mapping[str, Mapping[str, DVH]] | None = None, *,
                              n_fractions: Any = None) -> np.ndarray:
        """:meth:`predict_proba` with every dose scaled as if the plan were prescribed differently.

        Exactly one of ``prescription_gy`` (new total dose, Gy; scalar or one per patient: the factor is
        ``prescription / clinical.total_dose_gy``) and ``scale`` (factor, scalar or one per patient). The
        scaled plan is delivered in ``n_fractions`` (scalar or one per patient, > 0, whole or not; None keeps
        each row's own ``clinical.n_fractions``): the EQD2 conversion uses it, and the ``clinical.n_fractions``
        / ``clinical.dose_per_fraction_gy`` columns are set to the new regimen. ``dvhs`` (patient_id ->
        {structure: DVH}) are needed when the model uses V_x metrics (``dose_metrics="all"``). See
        :func:`scale_dose_features`.

        With ``fractionation="eqd2"`` a row without a number of fractions (neither given nor in the table)
        has no dose on the model's scale: its probabilities are NaN (the what-if never imputes a dose). With
        ``fractionation=None`` (old models) ``n_fractions`` changes only those two treatment columns.
        """
        check_is_fitted(self, "model_")
        factor = dose_scale_factors(X, prescription_gy=prescription_gy, scale=scale)
        scaled = scale_dose_features(X, factor, dvhs=dvhs, required=self.vx_columns(), columns=self.columns_)
        n = n_fractions_per_row(X, n_fractions)
        if n_fractions is not None:
            scaled = _with_regimen(scaled, n, self.columns_)
        if self.fractionation != "eqd2":
            return np.asarray(self.model_.predict_proba(scaled))
        known = np.isfinite(n)
        if not known.any():
            return np.full((len(X), 2), np.nan)
        rows = scaled if known.all() else scaled.loc[known]
        proba = np.full((len(X), 2), np.nan)
        proba[known] = self.model_.predict_proba(self._dose_scale(rows, n[known]))
        return proba

    def dose_known(self, X: pd.DataFrame, n_fractions: Any = None) -> np.ndarray:
        """Per row: True where every dose input of the model is known on its dose scale, i.e. every
        ``dose.*`` input column is present and not NaN and, with ``fractionation="eqd2"``, the row has a
        number of fractions (``n_fractions`` as in :meth:`predict_proba_at_dose`, else ``clinical.n_fractions``
        > 0). Where False, a caller that never imputes dose features reports no toxicity."""
        check_is_fitted(self, "model_")
        from radiogenomics.features.preprocessing import numeric_matrix

        dose = [c for c in self.columns_ if c.startswith(f"{naming.DOSE}.")]
        if any(c not in X.columns for c in dose):
            return np.zeros(len(X), dtype=bool)
        known = ~np.isnan(numeric_matrix(X[dose])).any(axis=1) if dose else np.ones(len(X), dtype=bool)
        if self.fractionation == "eqd2":
            known &= np.isfinite(n_fractions_per_row(X, n_fractions))
        return np.asarray(known, dtype=bool)

    def regimen_in_training(self, dose_per_fraction_gy: Any) -> np.ndarray:
        """Per value: True where the target dose per fraction (Gy; scalar or array) lies in the training range
        ``dose_per_fraction_range_gy_`` widened by :data:`DOSE_PER_FRACTION_TOLERANCE_GY` (0.05 Gy) on
        each side; False outside it and for NaN. A model without a recorded range (fitted before it was
        recorded, or on rows without total dose and number of fractions) has nothing to compare with: True
        everywhere, as before. The prescriber flags ``regimen_outside_training`` where False."""
        check_is_fitted(self, "model_")
        d = np.atleast_1d(np.asarray(dose_per_fraction_gy, dtype=np.float64))
        bounds = getattr(self, "dose_per_fraction_range_gy_", None)
        if bounds is None:
            return np.ones(d.shape, dtype=bool)
        low, high = bounds
        return np.asarray((d >= low - DOSE_PER_FRACTION_TOLERANCE_GY) & (d <= high + DOSE_PER_FRACTION_TOLERANCE_GY))


def _dose_per_fraction_range(train: pd.DataFrame) -> tuple[float, float] | None:
    """(min, max) of ``clinical.total_dose_gy / clinical.n_fractions`` over the rows that have both (> 0)."""
    if TOTAL_DOSE_COLUMN not in train.columns or N_FRACTIONS_COLUMN not in train.columns:
        return None
    total = pd.to_numeric(train[TOTAL_DOSE_COLUMN], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    d = total / n_fractions_per_row(train)
    d = d[np.isfinite(d) & (d > 0)]
    return (float(d.min()), float(d.max())) if d.size else None


def _with_regimen(X: pd.DataFrame, n: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
    """``X`` with the model's treatment columns ``clinical.n_fractions`` = ``n`` and
    ``clinical.dose_per_fraction_gy`` = total / ``n`` (where the model uses them): the plan in n fractions."""
    from radiogenomics.features.preprocessing import numeric_matrix, with_columns

    names, values = [], []
    if N_FRACTIONS_COLUMN in columns and N_FRACTIONS_COLUMN in X.columns:
        names.append(N_FRACTIONS_COLUMN)
        values.append(n)
    if DOSE_PER_FRACTION_COLUMN in columns and DOSE_PER_FRACTION_COLUMN in X.columns:
        if TOTAL_DOSE_COLUMN in X.columns:
            total = numeric_matrix(X[[TOTAL_DOSE_COLUMN]])[:, 0]
        else:  # the scaled total from the scaled dose per fraction and the row's own n
            total = numeric_matrix(X[[DOSE_PER_FRACTION_COLUMN]])[:, 0] * n_fractions_per_row(X)
        names.append(DOSE_PER_FRACTION_COLUMN)
        values.append(total / n)
    return with_columns(X, names, np.column_stack(values)) if names else X


#: Kinds of calibration notes (:func:`calibration_notes`).
PLATT_CONSTANT = "a Platt map decreasing with the model score replaced by its constant (monotone in dose)"
UNCALIBRATED = "too few events to calibrate, uncalibrated"
#: The calibration notes being collected, (kind, message); None: each is logged as a warning.
_NOTES: ContextVar[list[tuple[str, str]] | None] = ContextVar("toxicity_calibration_notes", default=None)


@contextmanager
def calibration_notes() -> Iterator[list[tuple[str, str]]]:
    """Collect the calibration notes, ``(kind, message)``, of the fits inside (:data:`PLATT_CONSTANT`,
    :data:`UNCALIBRATED`) instead of logging each as a warning: training sums them up in one line per task.
    Each is still logged at DEBUG."""
    notes: list[tuple[str, str]] = []
    token = _NOTES.set(notes)
    try:
        yield notes
    finally:
        _NOTES.reset(token)


def _calibration_note(kind: str, message: str) -> None:
    collected = _NOTES.get()
    if collected is None:
        log.warning(message)
    else:
        collected.append((kind, message))
        log.debug(message)


def _keep_platt_increasing(model: CalibratedClassifierCV, folds: StratifiedKFold, X: pd.DataFrame,
                           label: np.ndarray) -> None:
    """Constrain each fold's Platt map ``expit(-(a f + b))`` to be non-decreasing in the model's score f.

    On a small calibration fold the unconstrained fit can come out decreasing (``a > 0``), which would make
    the calibrated probability fall with dose. The log-likelihood is concave in (a, b), so the optimum under
    ``a <= 0`` then lies at ``a = 0``: a constant, the mean of Platt's smoothed targets (Platt 1999, section
    2.2; the targets scikit-learn uses) over that fold's calibration rows. Isotonic calibration is increasing
    already. The folds are re-derived from the same seeded splitter, in the order scikit-learn fitted them.
    """
    for (_, calibration_rows), fitted in zip(folds.split(X, label), model.calibrated_classifiers_, strict=True):
        for calibrator in fitted.calibrators:
            if getattr(calibrator, "a_", 0.0) <= 0:
                continue
            y = label[calibration_rows]
            n1, n0 = float(y.sum()), float(y.size - y.sum())
            p = (n1 * (n1 + 1.0) / (n1 + 2.0) + n0 / (n0 + 2.0)) / y.size
            _calibration_note(PLATT_CONSTANT, "toxicity calibration: a calibration fold's Platt map decreased with the "
                                              f"model score (slope {calibrator.a_:.3g}); replaced by its constant "
                                              f"{p:.3f} (monotone in dose)")
            calibrator.a_, calibrator.b_ = 0.0, float(-np.log(p / (1.0 - p)))


def _feature_a(structures: Sequence[str]) -> float:
    """The gEUD exponent a the extraction used for these structures (``features/data/geud_a.yaml``)."""
    from radiogenomics.features.dosimetric import geud_a

    values = {geud_a(s)[0] for s in structures}
    if len(values) != 1:
        raise InputError(f"structures {list(structures)} have gEUD features with different a {sorted(values)}",
                         fix="combine structures of one organ only")
    return values.pop()


def population_lkb_ntcp(X: pd.DataFrame, endpoint: str, structures: Sequence[str] | None = None) -> np.ndarray:
    """Tabulated-parameter LKB NTCP (``radiobiology.ntcp_parameters``) on the endpoint organ's combined gEUD.

    The comparator without patient features (Burman 1991 form); an ``InputError`` for an endpoint without
    tabulated parameters.
    """
    params = load_ntcp_parameters().get(endpoint)
    if params is None:
        raise InputError(f"no tabulated LKB parameters for endpoint {endpoint!r}",
                         fix=f"use one of {sorted(load_ntcp_parameters())}, or fit PatientLKB without covariates")
    lkb_structures = endpoint_structures(X, endpoint, structures, lkb=True)
    cols = ([naming.dose_column(s, "geud_gy") for s in lkb_structures]
            + [naming.dose_column(s, VOLUME_METRIC) for s in lkb_structures])
    combiner = CombinedGEUD(a=_feature_a(lkb_structures)).fit(X[cols])
    geud_gy = combiner.transform(X[cols])["lkb.geud_gy"].to_numpy()
    return np.asarray(lkb_ntcp(geud_gy, params["td50_gy"], params["m"]))
