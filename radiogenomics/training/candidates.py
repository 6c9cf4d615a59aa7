"""Candidate models of `radiogenomics train`: a name in ``TRAIN.yaml`` -> estimator factory + Optuna search space.

Each task of the configuration (``tasks.<task>.candidates``) names candidates from :data:`TASK_CANDIDATES`.
A :class:`Candidate` gives ``build(params)`` (a new, unfitted estimator of the package's models) and
``space(trial)`` (a small Optuna search space; an empty one means fixed parameters, which
:func:`~radiogenomics.training.nested_cv.nested_cv` does not search). Search spaces are deliberately small: the
estimators with internal penalty selection (``ElasticNetCV``/``RidgeCV`` in the RSI surrogate, the cross-validated
penalty of the outcome-alpha model) are not searched again.

| name | task | estimator | searched |
| --- | --- | --- | --- |
| ``ridge`` | radiosensitivity | ``RSISurrogate(regressor="ridge", n_screen=None)``: plain ridge baseline | nothing |
| ``rsi_surrogate`` | radiosensitivity | ``RSISurrogate()`` (screening + elastic net, CV+ intervals) | nothing |
| ``multimodal`` | radiosensitivity / multimodal | ``MultimodalRSI`` (MONAI encoder + MLP, split-conformal) | nothing |
| ``outcome_alpha`` | outcome_alpha | ``OutcomeCalibratedAlpha`` as a risk (:class:`AlphaRisk`) | nothing |
| ``logistic`` | toxicity | ``ToxicityClassifier(estimator="logistic")`` | ``C`` in [0.01, 10] (log) |
| ``lkb_patient`` | toxicity | ``ToxicityClassifier(estimator="patient_lkb")`` | ``lkb_alpha`` in [0.1, 10] (log) |
| ``coxnet`` | survival | ``LocalControlCox`` (ridge-penalised Cox, GARD + covariates) | ``alpha`` in [0.1, 10] (log) |

The RSI candidates (``multimodal`` included) are evaluated with ``measured="ignore"`` (imaging + clinical
only: with the measured RSI in the test rows the prediction would be the label); the train command sets
``measured="use"`` on the final model it registers. Toxicity candidates get 0/1 labels (grade >= 2, made by
the train command) and therefore ``threshold_grade=1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone

from radiogenomics.errors import InputError

#: The candidate names each task accepts.
TASK_CANDIDATES: dict[str, tuple[str, ...]] = {
    "radiosensitivity": ("ridge", "rsi_surrogate", "multimodal"),
    "outcome_alpha": ("outcome_alpha",),
    "toxicity": ("logistic", "lkb_patient"),
    "multimodal": ("multimodal",),
    "survival": ("coxnet",),
}

Params = dict[str, Any]


@dataclass(frozen=True)
class CandidateContext:
    """What a factory may need: the seed, the toxicity endpoint (``xerostomia``), the cohort folder (images)."""

    seed: int
    endpoint: str | None = None
    cohort: Path | None = None
    params: Params | None = None  #: fixed parameters of the candidate (``tasks.<task>.params.<name>``)


@dataclass(frozen=True)
class Candidate:
    """One competing model: ``build(params)`` -> unfitted estimator; ``space(trial)`` -> params;
    ``predict_params``: keyword arguments of its held-out predictions (``cohort=`` for the multimodal network,
    which reads images only from the folder its caller gives)."""

    name: str
    task: str
    build: Callable[[Params], Any]
    space: Callable[[Any], Params]
    predict_params: Params = field(default_factory=dict)

    @property
    def fixed(self) -> bool:
        """True when nothing is searched (the parameters are fixed)."""
        return self.space is _none


class AlphaRisk(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """An alpha model seen as a local-failure risk score: ``predict`` = -alpha (lower alpha, earlier failure).

    Lets the outcome-calibrated alpha be scored with Harrell's C-index on (event, time) targets like any
    survival model. ``fit`` clones and fits ``estimator``; ``alpha(X)`` gives the alpha itself (Gy^-1).
    """

    def __init__(self, estimator: Any = None) -> None:
        self.estimator = estimator

    def fit(self, X: Any, y: Any = None) -> AlphaRisk:
        if self.estimator is None:
            raise InputError("AlphaRisk needs an alpha estimator", fix="pass OutcomeCalibratedAlpha()")
        self.estimator_ = clone(self.estimator).fit(X, y)
        return self

    def alpha(self, X: Any) -> np.ndarray:
        """Predicted alpha per Gy."""
        return np.asarray(self.estimator_.predict(X), dtype=float)

    def predict(self, X: Any) -> np.ndarray:
        return -self.alpha(X)


def _none(trial: Any) -> Params:
    return {}


def _log_float(name: str, low: float, high: float) -> Callable[[Any], Params]:
    def space(trial: Any) -> Params:
        return {name: trial.suggest_float(name, low, high, log=True)}
    return space


def _rsi(regressor: str, n_screen: int | None, seed: int) -> Callable[[Params], Any]:
    def build(params: Params) -> Any:
        from radiogenomics.models.radiosensitivity import RSISurrogate

        return RSISurrogate(regressor, n_screen=n_screen, measured="ignore", random_state=seed, **params)
    return build


def _toxicity(estimator: str, context: CandidateContext) -> Callable[[Params], Any]:
    if not context.endpoint:
        raise ValueError("toxicity candidates need an endpoint")

    def build(params: Params) -> Any:
        from radiogenomics.models.toxicity import ToxicityClassifier

        return ToxicityClassifier(endpoint=str(context.endpoint), estimator=estimator,  # type: ignore[arg-type]
                                  threshold_grade=1.0, random_state=context.seed, **params)
    return build


def _outcome_alpha(seed: int) -> Callable[[Params], Any]:
    def build(params: Params) -> Any:
        from radiogenomics.models.outcome_alpha import OutcomeCalibratedAlpha

        return AlphaRisk(OutcomeCalibratedAlpha(random_state=seed, **params))
    return build


def _coxnet(seed: int) -> Callable[[Params], Any]:
    def build(params: Params) -> Any:
        from radiogenomics.models.survival import LocalControlCox

        return LocalControlCox(random_state=seed, **params)
    return build


def _multimodal(context: CandidateContext) -> Callable[[Params], Any]:
    def build(params: Params) -> Any:
        """``MultimodalRSI`` around a ``MultimodalRegressor`` on the cohort's images: the network's parameters
        (``epochs``, ``crop_size``, ...) go to the network, the rest (``calibration_fraction``, ...) to the
        wrapper (an unknown name is a TypeError there)."""
        from radiogenomics.models.multimodal import MultimodalRegressor
        from radiogenomics.models.multimodal_rsi import MultimodalRSI
        from radiogenomics.models.radiosensitivity import RSI_INPUT_GROUPS

        names = set(MultimodalRegressor().get_params())
        network = {"cohort": context.cohort, "groups": RSI_INPUT_GROUPS, "random_state": context.seed,
                   **{k: v for k, v in params.items() if k in names}}
        wrapper = {"measured": "ignore", "random_state": context.seed,
                   **{k: v for k, v in params.items() if k not in names}}
        return MultimodalRSI(MultimodalRegressor(**network), **wrapper)
    return build


def make_candidate(task: str, name: str, context: CandidateContext) -> Candidate:
    """The candidate ``name`` of ``task``; an unknown name is an InputError naming the config key."""
    known = TASK_CANDIDATES.get(task, ())
    if name not in known:
        raise InputError(f"tasks.{task}.candidates: unknown candidate {name!r} (known for {task}: "
                         f"{', '.join(known) or 'none'})", fix="use the names listed in docs/training.md")
    factories: dict[str, tuple[Callable[[Params], Any], Callable[[Any], Params]]] = {
        "ridge": (_rsi("ridge", None, context.seed), _none),
        "rsi_surrogate": (_rsi("elasticnet", 100, context.seed), _none),
        "outcome_alpha": (_outcome_alpha(context.seed), _none),
        "coxnet": (_coxnet(context.seed), _log_float("alpha", 0.1, 10.0)),
        "multimodal": (_multimodal(context), _none),
    }
    if name in ("logistic", "lkb_patient"):
        estimator = "logistic" if name == "logistic" else "patient_lkb"
        space = _log_float("C", 0.01, 10.0) if name == "logistic" else _log_float("lkb_alpha", 0.1, 10.0)
        return Candidate(name, task, _with_fixed(_toxicity(estimator, context), context.params), space)
    build, space = factories[name]
    # the held-out patients of cross-validation are the training cohort's: their images are there
    predict_params: Params = {"cohort": context.cohort} if name == "multimodal" else {}
    return Candidate(name, task, _with_fixed(build, context.params), space, predict_params)


def _with_fixed(build: Callable[[Params], Any], fixed: Params | None) -> Callable[[Params], Any]:
    """``build`` with the configured fixed parameters under the searched ones."""
    if not fixed:
        return build
    return lambda params: build({**fixed, **params})


def validate_candidates(config: Any) -> None:
    """InputError for an unknown candidate name of any enabled task (before anything is fitted)."""
    for task in TASK_CANDIDATES:
        section = getattr(config.tasks, task)
        if not section.enabled:
            continue
        if not section.candidates:
            raise InputError(f"tasks.{task}.candidates is empty", fix=f"name at least one of "
                             f"{', '.join(TASK_CANDIDATES[task])}, or set tasks.{task}.enabled: false")
        for name in section.candidates:
            make_candidate(task, name, CandidateContext(seed=0, endpoint="x"))
        for name, fixed in section.params.items():
            if name not in section.candidates:
                listed = ", ".join(section.candidates)
                raise InputError(f"tasks.{task}.params.{name}: {name!r} is not a candidate of tasks.{task}",
                                 fix=f"give parameters only for the candidates listed ({listed})")
            candidate = make_candidate(task, name, CandidateContext(seed=0, endpoint="x", params=fixed))
            try:
                candidate.build({})
            except TypeError as exc:
                raise InputError(f"tasks.{task}.params.{name}: {exc}",
                                 fix="use the estimator's parameter names (docs/models.md)") from exc
