"""The model a server serves, and its hot reload when the registry alias moves.

:class:`ServingState` loads the prescriber of a model URI once, at start. For an alias URI
(``models:/NAME@ALIAS``) it asks the registry, at most every ``reload_interval_s`` and in a background
thread, which version the alias points to; when that changed it loads the new version (still in the
background) and swaps one reference. A request takes :meth:`ServingState.current` once and keeps that
object to the end, so in-flight requests finish on the model they started with and nothing is served
half-loaded. URIs without an alias (``models:/NAME/3``, ``runs:/...``) are never reloaded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from radiogenomics.models.prescriber import ModelInfo

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class LoadedModel:
    """One loaded prescriber version and what GET /v1/model says about it."""

    prescriber: Any
    info: ModelInfo
    alias: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    loaded_at: str = ""


def alias_of(model_uri: str) -> tuple[str, str] | None:
    """``(registered name, alias)`` of ``models:/NAME@ALIAS``; None for any other URI."""
    from radiogenomics.training.registry import parse_registry_uri

    parsed = parse_registry_uri(model_uri)
    return (parsed[0], parsed[1]) if parsed is not None and parsed[1] is not None else None


def version_metrics(info: ModelInfo) -> dict[str, float]:
    """The registered version's metrics: the ``heldout.*`` tags the registry compares, then the metrics
    of the run that logged it (a run metric wins on a name clash). Empty when the registry cannot say."""
    import mlflow

    if not info.name or not info.version:
        return {}
    try:
        client = mlflow.MlflowClient()
        version = client.get_model_version(info.name, info.version)
        metrics = {k.removeprefix("heldout."): float(v) for k, v in (version.tags or {}).items()
                   if k.startswith("heldout.")}
        if version.run_id:
            metrics.update({k: float(v) for k, v in client.get_run(version.run_id).data.metrics.items()})
    except Exception as exc:  # the registry is down or forgot the run: serve without metrics
        log.warning("cannot read the metrics of %s version %s: %s", info.name, info.version, exc)
        return {}
    return metrics


def load_model(model_uri: str, alias: str | None = None) -> LoadedModel:
    """Load the prescriber of ``model_uri`` with its registry entry and metrics (InputError when it cannot)."""
    from radiogenomics.training.registry.prediction import load_prescriber

    prescriber, info = load_prescriber(model_uri)
    loaded = LoadedModel(prescriber=prescriber, info=info, alias=alias, metrics=version_metrics(info),
                         loaded_at=datetime.now(UTC).isoformat(timespec="seconds"))
    log.info("serving %s version %s (%s)", info.name or model_uri, info.version or "?", model_uri)
    return loaded


def alias_version(name: str, alias: str) -> str:
    """The version the registry's ``alias`` of ``name`` points to now."""
    import mlflow

    return str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)


class ServingState:
    """The currently served :class:`LoadedModel` of ``model_uri`` with alias hot reload (module docstring).

    ``loader(uri, alias)`` and ``resolver(name, alias)`` default to :func:`load_model` and
    :func:`alias_version`; the first load happens here and raises InputError when the model cannot load.
    """

    def __init__(self, model_uri: str, *, reload_interval_s: float = 5.0,
                 loader: Callable[[str, str | None], LoadedModel] = load_model,
                 resolver: Callable[[str, str], str] = alias_version) -> None:
        self.model_uri = model_uri
        self.reload_interval_s = float(reload_interval_s)
        self._alias = alias_of(model_uri)
        self._loader, self._resolver = loader, resolver
        self._loaded = loader(model_uri, self._alias[1] if self._alias else None)
        self._checked_at = time.monotonic()
        self._checking = threading.Lock()
        self._thread: threading.Thread | None = None
        self.reloads = 0

    @property
    def reloadable(self) -> bool:
        """Whether the URI names an alias that can move."""
        return self._alias is not None

    def current(self) -> LoadedModel:
        """The model to serve this request with; starts a background alias check when one is due."""
        if self._alias is not None and time.monotonic() - self._checked_at >= self.reload_interval_s:
            if self._checking.acquire(blocking=False):
                self._checked_at = time.monotonic()
                self._thread = threading.Thread(target=self._check_and_swap, name="radiogenomics-reload",
                                                daemon=True)
                self._thread.start()
        return self._loaded

    def check_now(self) -> bool:
        """Check the alias and swap in the new version synchronously; whether the model changed."""
        if not self._checking.acquire(timeout=600):
            return False
        return self._check_and_swap()

    def _check_and_swap(self) -> bool:
        """(Holding ``_checking``.) Resolve the alias; load and swap when its version moved."""
        try:
            assert self._alias is not None
            name, alias = self._alias
            version = self._resolver(name, alias)
            if version == self._loaded.info.version:
                return False
            log.info("alias %s of %s moved from version %s to %s: loading it", alias, name,
                     self._loaded.info.version, version)
            fresh = self._loader(f"models:/{name}/{version}", alias)
            self._loaded = fresh  # one reference assignment: requests see the old or the new model, whole
            self.reloads += 1
            log.info("now serving %s version %s", name, fresh.info.version)
            return True
        except Exception as exc:  # keep serving the old model; try again at the next interval
            log.warning("hot reload of %s failed (%s): still serving version %s", self.model_uri, exc,
                        self._loaded.info.version)
            return False
        finally:
            self._checked_at = time.monotonic()
            self._checking.release()
