"""The REST API (contract section 6): :func:`create_app` builds the FastAPI application.

Layers, outermost first:

* :class:`AuditGate` on every ``/v1`` path: the bearer token is checked before anything else (401 with
  ``WWW-Authenticate: Bearer``; a client over the failed-authentication limit gets 429 with ``Retry-After``,
  :mod:`radiogenomics.serving.auth_limit`: such requests are counted in memory and audited as one aggregated
  row per client per window, never one row each), then the body limit (413; streamed bytes are counted
  whatever Content-Length says; the multipart routes have the uploads' larger limit), and when the response
  starts one audit row per patient is written (one row with no patient when none is known); a response whose
  audit row cannot be written becomes a 503;
* the routes, whose request models are strict (:mod:`radiogenomics.serving.schemas`). Unknown feature names
  and values of the wrong type for the model's schema are 422s naming the field; so is every
  ``InputError`` of the prescriber. Validation errors never echo the input back (it may hold NaN, which
  JSON cannot carry, and patient data).

Each request takes the served model once (:meth:`ServingState.current`) and finishes on it, also while the
registry alias moves (:mod:`radiogenomics.serving.state`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import tempfile
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, cast

import anyio
import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, Security, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from radiogenomics import __version__
from radiogenomics.errors import InputError
from radiogenomics.features import naming
from radiogenomics.jsonio import json_safe
from radiogenomics.models.inputs import SITE_COLUMN, closest_name, is_gate_column
from radiogenomics.serving import schemas
from radiogenomics.serving.auth_limit import AuthFailureLimiter, AuthFailureLimits, write_summaries
from radiogenomics.serving.schemas import (
    ErrorResponse,
    PrescriptionRequest,
    ServeLimits,
    ValidationErrorResponse,
)
from radiogenomics.serving.state import LoadedModel, ServingState

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
TEXT_DTYPES = frozenset({"str", "string", "object", "category"})
#: Environment of :func:`app_from_environment` (``radiogenomics serve --workers N``).
ENV_MODEL, ENV_TOKENS, ENV_AUDIT = "RADIOGENOMICS_SERVE_MODEL", "RADIOGENOMICS_TOKENS_FILE", "RADIOGENOMICS_AUDIT_DB"
ENV_FEATURES, ENV_WORKDIR, ENV_RELOAD = ("RADIOGENOMICS_SERVE_FEATURES", "RADIOGENOMICS_SERVE_WORKDIR",
                                         "RADIOGENOMICS_SERVE_RELOAD_S")
#: The failed-authentication limits of ``serve --workers N`` (per client, over all clients, window seconds).
ENV_AUTH_PER_CLIENT, ENV_AUTH_TOTAL, ENV_AUTH_WINDOW = ("RADIOGENOMICS_SERVE_AUTH_FAIL_PER_CLIENT",
                                                       "RADIOGENOMICS_SERVE_AUTH_FAIL_TOTAL",
                                                       "RADIOGENOMICS_SERVE_AUTH_FAIL_WINDOW_S")
UNAUTHORIZED = "missing or invalid bearer token"
RATE_LIMITED = "too many requests without a valid bearer token; retry after the Retry-After seconds"
IMAGES_PATH = "/v1/prescriptions/images"
#: Adaptive re-prescription from uploaded planning and mid-treatment images (contract section 8).
ADAPT_PATH = "/v1/adaptations/images"
#: The multipart routes: the uploads' body limit.
UPLOAD_PATHS = frozenset({IMAGES_PATH, ADAPT_PATH})
#: The OpenAPI schema, behind the token like every /v1 path (no interactive docs: they load JavaScript from a CDN).
OPENAPI_URL = "/v1/openapi.json"

_ERR: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No or wrong bearer token (`WWW-Authenticate: Bearer`)."},
    429: {"model": ErrorResponse,
          "description": "Too many requests without a valid bearer token from this client (or from all clients) "
                         "in the current window (docs/serving.md#tokens). A valid token is never limited.",
          "headers": {"Retry-After": {"description": "Seconds until the window ends.",
                                      "schema": {"type": "integer", "minimum": 1}}}},
    405: {"model": ErrorResponse, "description": "Method not allowed on this path."},
    422: {"model": ValidationErrorResponse, "description": "Invalid request; each item names its field."},
    503: {"model": ErrorResponse, "description": "The audit log cannot be written: nothing is served."},
}
_BODY_ERR: dict[int | str, dict[str, Any]] = {
    **_ERR,
    400: {"model": ErrorResponse, "description": "Body bytes that cannot be decoded (not UTF-8 JSON, or a broken "
                                                 "multipart form). Malformed JSON text is a 422."},
    413: {"model": ErrorResponse, "description": "Request body larger than the server's limit."},
    415: {"model": ErrorResponse, "description": "The body is not `application/json`."},
}


# ---------------------------------------------------------------------------------------------- the gate
class BodyTooLarge(HTTPException):
    """A request body over the limit (raised while it is read; FastAPI answers 413 with its detail)."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(413, f"request body larger than {limit_bytes} bytes")


class AuditGate:
    """ASGI middleware for ``/v1``: bearer token first, then the body limit, and one audit row per patient
    per request. A request without a valid token writes no row: ``auth_failures`` counts it (401, or 429 with
    ``Retry-After`` over the limit), and the aggregated rows of ended windows are written on the next request.

    The body limit (``limits(path) -> bytes``) refuses a declared Content-Length over it at once and counts
    the bytes actually streamed otherwise (a missing or lying Content-Length does not help). Routes put what
    the audit needs into ``request.state``: ``audit_patients`` (list of (patient_id, input_sha256)) and
    ``model_version``.
    """

    def __init__(self, app: ASGIApp, *, tokens: Any, audit: Any, limit_bytes: Callable[[str], int],
                 routes: Sequence[Any] = (), auth_failures: AuthFailureLimiter | None = None) -> None:
        self.app, self.tokens, self.audit, self.routes = app, tokens, audit, routes
        self.limit_bytes = limit_bytes
        self.auth_failures = auth_failures if auth_failures is not None else AuthFailureLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"] == "/v1" or scope["path"].startswith("/v1/")):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        token = _bearer(scope)
        name = await anyio.to_thread.run_sync(self.tokens.verify, token) if token else None
        state["token_name"] = name or ""
        ended = self.auth_failures.take()
        if ended:  # aggregated rows of failed-authentication windows that are over
            await anyio.to_thread.run_sync(functools.partial(write_summaries, self.auth_failures, self.audit, ended))
        if name is None:  # counted, not audited one row each (radiogenomics.serving.auth_limit)
            client = scope.get("client")
            decision = self.auth_failures.failed(str(client[0]) if client else None)
            if decision.limited:
                refused = JSONResponse({"detail": RATE_LIMITED}, status_code=429,
                                       headers={"Retry-After": str(decision.retry_after_s)})
            else:
                refused = JSONResponse({"detail": UNAUTHORIZED}, status_code=401,
                                       headers={"WWW-Authenticate": "Bearer"})
            await refused(scope, receive, send)
            return
        audited = self._audited(scope, send)
        limit = self.limit_bytes(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            response = JSONResponse({"detail": BodyTooLarge(limit).detail}, status_code=413)
        else:
            received = 0

            async def receive_limited() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLarge(limit)
                return message

            await self.app(scope, receive_limited, audited)
            return
        await response(scope, receive, audited)

    def _audited(self, scope: Scope, send: Send) -> Send:
        swallow = False

        async def send_audited(message: Message) -> None:
            nonlocal swallow
            if swallow:
                return
            if message["type"] == "http.response.start":
                try:
                    await anyio.to_thread.run_sync(self._write, scope, int(message["status"]))
                except Exception:
                    log.exception("audit log write failed: refusing to answer")
                    swallow = True
                    await JSONResponse({"detail": "the audit log cannot be written"}, status_code=503)(
                        scope, _no_body, send)
                    return
            await send(message)

        return send_audited

    def _write(self, scope: Scope, status: int) -> None:
        state = scope.get("state", {})
        endpoint = f"{scope['method']} {self._route_path(scope)}"
        outcome = "ok" if status < 400 else (f"rejected:{status}" if status < 500 else f"error:{status}")
        patients: Sequence[tuple[str | None, str | None]] = state.get("audit_patients") or [(None, None)]
        for patient_id, digest in patients:
            self.audit.record(token_name=state.get("token_name", ""), endpoint=endpoint, patient_id=patient_id,
                              input_sha256=digest if status < 400 else None,
                              model_version=state.get("model_version"), outcome=outcome, status_code=status)


    def _route_path(self, scope: Scope) -> str:
        """The path template of the route (``/v1/patients/{patient_id}``: no identifier in the endpoint)."""
        route = scope.get("route")
        if route is None:  # refused before routing (401): find the route the request was for
            route = next((r for r in self.routes if r.matches(scope)[0] != Match.NONE), None)
        return str(getattr(route, "path", "/v1/<unmatched>"))


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _bearer(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


_bearer_scheme = HTTPBearer(auto_error=False, description="A token from `radiogenomics token create`.")


def require_token(request: Request,
                  credentials: HTTPAuthorizationCredentials | None = Security(_bearer_scheme)) -> str:
    """The token's name (checked by :class:`AuditGate`; checked here too when a route is mounted without it)."""
    name = getattr(request.state, "token_name", None)
    if not name:
        name = request.app.state.tokens.verify(credentials.credentials) if credentials else None
    if not name:
        raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
    return str(name)


def require_json(request: Request) -> None:
    """415 unless the body is declared JSON."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json" and not (kind.startswith("application/") and kind.endswith("+json")):
        raise HTTPException(415, f"send the body as application/json, not {kind or 'no content type'}")


# ------------------------------------------------------------------------------------------ request checks
def _error(loc: Sequence[str | int], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


def _reject(errors: list[dict[str, Any]]) -> None:
    if errors:
        raise RequestValidationError(errors)


def check_patients(body: PrescriptionRequest, loaded: LoadedModel, limits: ServeLimits, *,
                   exactly_one: bool = False) -> None:
    """422 for too many or duplicate patients, feature names the model does not know, and values whose type
    does not match the model's schema (a number for a text column or text for a number column)."""
    n = len(body.patients)
    if exactly_one and n != 1:
        _reject([_error(["body", "patients"], f"exactly one patient per request here, got {n}", "one_patient")])
    if n > limits.max_patients:
        _reject([_error(["body", "patients"], f"at most {limits.max_patients} patients per request, got {n}",
                        "too_long")])
    kinds = _feature_kinds(loaded.prescriber)
    errors, seen = [], set()
    for i, patient in enumerate(body.patients):
        if patient.patient_id in seen:
            errors.append(_error(["body", "patients", i, "patient_id"], f"duplicate patient_id {patient.patient_id}",
                                 "duplicate_patient"))
        seen.add(patient.patient_id)
        for name, value in patient.features.items():
            kind = kinds.get(name)
            if kind is _FLOAT and type(value) is float:
                continue  # the common case, checked first
            loc: list[str | int] = ["body", "patients", i, "features", name]
            if kind is None and is_gate_column(name):  # the safety gate's input (dose of any organ, site, regimen)
                if value is not None and isinstance(value, str) != (name == SITE_COLUMN):
                    errors.append(_error(loc, f"{name} must be {'text' if name == SITE_COLUMN else 'a number'}",
                                         "feature_type"))
            elif kind is None:
                close = closest_name(name, kinds)
                errors.append(_error(loc, f"unknown feature {name!r}{f' (did you mean {close!r}?)' if close else ''}"
                                          f": model version {loaded.info.version} was trained without it "
                                          "(GET /v1/model lists its features)", "unknown_feature"))
            elif value is not None and isinstance(value, str) != (kind.dtype in TEXT_DTYPES):
                wanted = "text" if kind.dtype in TEXT_DTYPES else "a number"
                errors.append(_error(loc, f"feature {name} must be {wanted} (schema dtype {kind.dtype})",
                                     "feature_type"))
            elif isinstance(value, int | float) and (bounds := kind.integer_bounds) is not None and \
                    not (value == int(value) and bounds[0] <= value <= bounds[1]):
                errors.append(_error(loc, f"feature {name} must be a whole number in [{bounds[0]}, {bounds[1]}] "
                                          f"(schema dtype {kind.dtype})", "feature_type"))
    _reject(errors[:50])


@dataclass(frozen=True)
class _Kind:
    """What a feature column accepts: its schema dtype and, for integer dtypes, the range."""

    dtype: str
    integer_bounds: tuple[int, int] | None


_FLOAT = _Kind("float64", None)
_KINDS: weakref.WeakKeyDictionary[Any, dict[str, _Kind]] = weakref.WeakKeyDictionary()


def _feature_kinds(prescriber: Any) -> dict[str, _Kind]:
    """``{column: _Kind}`` of the columns a caller may send (without ``patient_id``), computed once per loaded
    prescriber (a request checks ~1,400 values against it)."""
    kinds = _KINDS.get(prescriber)
    if kinds is None:
        dtypes = {c.name: c.dtype for c in prescriber.schema.columns}
        allowed = set(prescriber.feature_columns) - {naming.PATIENT_ID}
        kinds = {name: _FLOAT if dtypes[name] == "float64" else _Kind(dtypes[name], _integer_bounds(dtypes[name]))
                 for name in allowed}
        _KINDS[prescriber] = kinds
    return kinds


@functools.lru_cache(maxsize=256)  # called once per value sent: np.iinfo raising for float dtypes cost ~90 ms
def _integer_bounds(dtype: str) -> tuple[int, int] | None:  # for 32 patients x 1,400 features
    """(min, max) of an integer dtype (``int8``, ``Int64``, ``uint8``, ...); None for any other dtype."""
    try:
        info = np.iinfo(dtype.lower())
    except (TypeError, ValueError):
        return None
    return int(info.min), int(info.max)


def feature_rows(body: PrescriptionRequest) -> list[dict[str, Any]]:
    """One row per patient: ``patient_id`` and the features sent (absent = missing), as
    ``Prescriber.predict_records`` takes them (built straight into the schema's layout, no DataFrame first)."""
    return [{naming.PATIENT_ID: p.patient_id, **p.features} for p in body.patients]


def feature_frame(body: PrescriptionRequest) -> pd.DataFrame:
    """:func:`feature_rows` as a DataFrame."""
    from radiogenomics.models.prescriber import frame_from_features

    return frame_from_features(feature_rows(body))


#: The multipart routes' form fields an InputError's message may name (the first one named is the 422's ``loc``).
_FORM_FIELDS = re.compile(r"\b(manifest|timepoint|expression|clinical)\b")


def _input_error(request: Request, exc: InputError) -> JSONResponse:
    loc: list[str | int] = ["body"]
    if request.headers.get("content-type", "").lower().startswith("multipart/"):
        named = _FORM_FIELDS.search(exc.reason)
        loc = ["body", named.group(1) if named else "files"]  # else: the uploaded files themselves
    else:
        ids = [p for p, _ in getattr(request.state, "audit_patients", None) or []]
        if exc.patient_id and exc.patient_id in ids:
            loc = ["body", "patients", ids.index(exc.patient_id)]
    return JSONResponse({"detail": [_error(loc, str(exc), "input_error")]}, status_code=422)


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 without ``input``/``ctx`` (they may hold NaN, which JSON cannot carry, or patient data);
    the per-member errors of a feature value (number | text | null) merged into one item per field."""
    merged: dict[tuple[str | int, ...], dict[str, Any]] = {}
    for e in exc.errors():
        loc = tuple(p if isinstance(p, int) else str(p) for p in e.get("loc", ()))
        if len(loc) == 6 and loc[:2] == ("body", "patients") and loc[3] == "features":
            loc = loc[:5]  # the union member's tag (float, int, str)
        msg, kind = str(e.get("msg", "")), str(e.get("type", "invalid"))
        if kind == "finite_number":  # a JSON NaN/Infinity literal: that is the whole story
            merged[loc] = _error(loc, "Input should be a finite number (NaN and Infinity are not allowed)", kind)
        elif loc in merged and merged[loc]["type"] != "finite_number":
            merged[loc]["msg"] += f"; or {msg[0].lower()}{msg[1:]}" if msg else ""
        elif loc not in merged:
            merged[loc] = _error(loc, msg, kind)
    return JSONResponse({"detail": list(merged.values())}, status_code=422)


# ------------------------------------------------------------------------------------------ feature table
class FeatureTable:
    """The ``--features`` table: patient ids and each patient's JSON-ready feature values."""

    def __init__(self, path: Path | None) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        if path is None:
            return
        from radiogenomics.features.schema import read_feature_table

        table = read_feature_table(path)
        if naming.PATIENT_ID not in table.columns:
            raise InputError("the feature table has no patient_id column", file=str(path),
                             fix="give a table written by `radiogenomics extract`")
        columns = [c for c in table.columns if c != naming.PATIENT_ID and not c.startswith(f"{naming.OUTCOME}.")]
        for record in table[[naming.PATIENT_ID, *columns]].astype(object).to_dict(orient="records"):
            pid = str(record.pop(naming.PATIENT_ID))
            self.rows[pid] = {k: _feature_value(v) for k, v in record.items()}

    def features(self, patient_id: str, allowed: set[str]) -> dict[str, Any] | None:
        """The patient's values of the ``allowed`` columns that are not missing; None for an unknown patient."""
        row = self.rows.get(patient_id)
        return None if row is None else {k: v for k, v in row.items() if k in allowed and v is not None}


def _feature_value(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    value = json_safe(value)
    return int(value) if isinstance(value, bool) else value


# ------------------------------------------------------------------------------------------------ the app
def create_app(model_uri: str, *, tokens_file: Path, audit_db: Path, features: Path | None = None,
               workdir: Path | None = None, reload_interval_s: float = 5.0,
               limits: ServeLimits | None = None, auth_failures: AuthFailureLimits | None = None,
               clock: Callable[[], float] | None = None) -> FastAPI:
    """The API serving ``model_uri`` (see the module docstring); InputError when the model, the tokens file,
    the audit log or the feature table cannot be used.

    ``auth_failures``: the limits on requests without a valid token (default :class:`AuthFailureLimits`:
    60 per client and 1,000 in all per 60 s); ``clock``: their monotonic clock (tests). The aggregated rows
    of ended windows are written on the next ``/v1`` request, every window while the app runs (lifespan),
    and those of the open windows at shutdown.
    """
    from radiogenomics.serving.audit import AuditLog
    from radiogenomics.serving.tokens import TokenStore

    limits = limits or ServeLimits()
    tokens = TokenStore(Path(tokens_file))
    state = ServingState(model_uri, reload_interval_s=reload_interval_s)
    table = FeatureTable(Path(features) if features is not None else None)
    audit = AuditLog(Path(audit_db))
    failures = AuthFailureLimiter(auth_failures, **({"clock": clock} if clock is not None else {}))
    upload_limits = limits.upload_limits()
    work = Path(workdir) if workdir is not None else Path(tempfile.gettempdir()) / "radiogenomics-serve"

    async def flush_periodically() -> None:
        while True:
            await anyio.sleep(failures.limits.window_s)
            await anyio.to_thread.run_sync(write_summaries, failures, audit)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with anyio.create_task_group() as group:
            group.start_soon(flush_periodically)
            try:
                yield
            finally:
                group.cancel_scope.cancel()
        await anyio.to_thread.run_sync(functools.partial(write_summaries, failures, audit, close_all=True))

    app = FastAPI(title="radiogenomics", version=__version__, lifespan=lifespan,
                  openapi_url=OPENAPI_URL, docs_url=None, redoc_url=None,
                  description="Prescription records from the registered radiogenomics prescriber "
                              "(docs/serving.md). Every /v1 endpoint needs `Authorization: Bearer <token>`.")
    app.state.tokens, app.state.serving, app.state.audit, app.state.features = tokens, state, audit, table
    app.state.auth_failures = failures
    upload_body_bytes = upload_limits.max_total_bytes + limits.multipart_overhead_bytes

    def limit_bytes(path: str) -> int:
        return upload_body_bytes if path in UPLOAD_PATHS else limits.max_body_bytes

    app.add_middleware(AuditGate, tokens=tokens, audit=audit, limit_bytes=limit_bytes, routes=app.router.routes,
                       auth_failures=failures)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(InputError, _input_error)  # type: ignore[arg-type]
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    authorised = [Depends(require_token)]

    def model(request: Request) -> LoadedModel:
        loaded = state.current()
        request.state.model_version = loaded.info.version
        return loaded

    @app.get("/health", response_model=schemas.Health, tags=["service"])
    def health() -> dict[str, Any]:
        """Liveness (anonymous): the model being served."""
        loaded = state.current()
        return {"status": "ok", "model_uri": loaded.info.uri or model_uri, "model_version": loaded.info.version}

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/v1/model", response_model=schemas.ModelDescription, responses=_ERR, dependencies=authorised,
             tags=["model"])
    def describe_model(request: Request) -> dict[str, Any]:
        """The registry entry served, its metrics, feature schema, regimen defaults and toxicity endpoints."""
        loaded = model(request)
        p = loaded.prescriber
        allowed = set(p.feature_columns) - {naming.PATIENT_ID}
        from radiogenomics.models.prescriber import toxicity_key

        return {"name": loaded.info.name, "version": loaded.info.version, "alias": loaded.alias,
                "uri": loaded.info.uri, "requested_uri": model_uri, "loaded_at": loaded.loaded_at,
                "metrics": json_safe(loaded.metrics),
                "features": [{"column": c.name, "group": c.group, "dtype": c.dtype} for c in p.schema.columns
                             if c.name in allowed],
                "regimen_defaults": _regimen_defaults(p),
                "toxicity_endpoints": [toxicity_key(e) for e in sorted(p.toxicity)], "site": p.site,
                "beta_per_gy2": p.beta_per_gy2, "max_patients": limits.max_patients}

    def _records(request: Request, body: PrescriptionRequest, *, exactly_one: bool = False,
                 ) -> tuple[LoadedModel, list[dict[str, Any]]]:
        loaded = model(request)
        request.state.audit_patients = [(p.patient_id, None) for p in body.patients]
        check_patients(body, loaded, limits, exactly_one=exactly_one)
        records = loaded.prescriber.predict_records(feature_rows(body), model=loaded.info,
                                                    **body.regimen_options())
        request.state.audit_patients = [(r["patient_id"], r["input_sha256"]) for r in records]
        return loaded, [json_safe(r) for r in records]

    @app.post("/v1/prescriptions", response_model=schemas.Records, responses=_BODY_ERR,
              dependencies=[*authorised, Depends(require_json)], tags=["prescriptions"])
    def prescriptions(request: Request, body: PrescriptionRequest) -> dict[str, Any]:
        """One prescription record (contract section 2) per patient."""
        return {"records": _records(request, body)[1]}

    @app.post("/v1/dose-response", response_model=schemas.DoseResponse, responses=_BODY_ERR,
              dependencies=[*authorised, Depends(require_json)], tags=["prescriptions"])
    def dose_response_curve(request: Request, body: PrescriptionRequest) -> dict[str, Any]:
        """TCP and NTCP against total dose for one patient, with the rails and the recommendation."""
        from radiogenomics.serving.dose_response import dose_response

        loaded, records = _records(request, body, exactly_one=True)
        regimen = body.regimen_options()
        return json_safe(dose_response(loaded.prescriber, feature_frame(body), loaded.info,
                                       n_fractions=regimen["n_fractions"],
                                       dose_per_fraction_gy=regimen["dose_per_fraction_gy"],
                                       target_gard=regimen["target_gard"]))

    @app.post("/v1/objectives", response_model=schemas.ObjectivesResponse, responses=_BODY_ERR,
              dependencies=[*authorised, Depends(require_json)], tags=["prescriptions"])
    def objectives(request: Request, body: PrescriptionRequest) -> dict[str, Any]:
        """The record and its optimizer objectives (``objectives.json``, radiogenomics-objectives/1)."""
        from radiogenomics.planning.objectives import build_objectives

        loaded, records = _records(request, body, exactly_one=True)
        site = body.patients[0].features.get(naming.clinical_column("site"))
        objectives = build_objectives(records[0], site=site if isinstance(site, str) else loaded.prescriber.site)
        return {"record": records[0], "objectives": json_safe(objectives)}

    upload_responses: dict[int | str, dict[str, Any]] = {
        **_BODY_ERR, 415: {"model": ErrorResponse, "description": "The body is not multipart/form-data."}}
    form_limits: Any = {"max_files": upload_limits.max_files + 1, "max_fields": 32, "max_part_size": 4 << 20}

    async def from_images(request: Request, *, patient_id: str, manifest: str, files: list[UploadFile],
                          expression: str | None, clinical: str | None, n_fractions: int | None,
                          dose_per_fraction_gy: float | None, target_gard: float | None,
                          timepoint: str | None = None) -> dict[str, Any]:
        """The multipart routes' shared path: uploads -> one-patient cohort -> the record (adapted at
        ``timepoint`` when given), audited with the patient and the input hash."""
        from radiogenomics.serving.uploads import UploadTooLarge, prescribe_images

        loaded = model(request)
        request.state.audit_patients = [(patient_id, None)]
        regimen = {"n_fractions": None if n_fractions is None else float(n_fractions),
                   "dose_per_fraction_gy": dose_per_fraction_gy, "target_gard": target_gard}
        try:
            records = await prescribe_images(loaded, patient_id=patient_id, manifest=manifest,
                                             files=cast(list[Any], files), expression=expression,
                                             clinical=clinical, regimen=regimen, workdir=work, cache_dir=None,
                                             limits=upload_limits, timepoint=timepoint)
        except UploadTooLarge as exc:
            raise HTTPException(413, str(exc)) from exc
        request.state.audit_patients = [(r["patient_id"], r["input_sha256"]) for r in records]
        return {"records": [json_safe(r) for r in records]}

    @app.post(IMAGES_PATH, response_model=schemas.Records, tags=["prescriptions"], responses=upload_responses,
              dependencies=authorised, form_limits=form_limits)
    async def prescription_images(
        request: Request,
        patient_id: Annotated[str, Form(pattern=schemas.PATIENT_ID_PATTERN)],
        manifest: Annotated[str, Form(description="JSON: which file is which image and mask (docs/serving.md)")],
        files: Annotated[list[UploadFile], File(description="NIfTI/NRRD/MHA images and masks, or zipped DICOM")],
        expression: Annotated[str | None, Form(description="JSON object gene -> log2 expression")] = None,
        clinical: Annotated[str | None, Form(description="JSON object of patients.csv columns")] = None,
        n_fractions: Annotated[int | None, Form(ge=1, le=100)] = None,
        dose_per_fraction_gy: Annotated[float | None, Form(gt=0, le=30, allow_inf_nan=False)] = None,
        target_gard: Annotated[float | None, Form(ge=0, le=200, allow_inf_nan=False)] = None,
    ) -> dict[str, Any]:
        """One patient's images and masks (+ optional expression) -> features with the model's schema -> record."""
        return await from_images(request, patient_id=patient_id, manifest=manifest, files=files,
                                 expression=expression, clinical=clinical, n_fractions=n_fractions,
                                 dose_per_fraction_gy=dose_per_fraction_gy, target_gard=target_gard)

    @app.post(ADAPT_PATH, response_model=schemas.AdaptedRecords, tags=["prescriptions"],
              responses=upload_responses, dependencies=authorised, form_limits=form_limits)
    async def adaptation_images(
        request: Request,
        patient_id: Annotated[str, Form(pattern=schemas.PATIENT_ID_PATTERN)],
        timepoint: Annotated[str, Form(min_length=1, max_length=40, examples=["fraction_10"],
                                       description="`fraction_K`: the mid-treatment imaging after K fractions")],
        manifest: Annotated[str, Form(description="JSON: which file is which image and mask, each image's "
                                                  "timepoint (docs/serving.md)")],
        files: Annotated[list[UploadFile], File(description="NIfTI/NRRD/MHA images and masks, or zipped DICOM")],
        expression: Annotated[str | None, Form(description="JSON object gene -> log2 expression")] = None,
        clinical: Annotated[str | None, Form(description="JSON object of patients.csv columns (also "
                                                         "delivered_n_fractions, delivered_dose_gy)")] = None,
        n_fractions: Annotated[int | None, Form(ge=1, le=100)] = None,
        dose_per_fraction_gy: Annotated[float | None, Form(gt=0, le=30, allow_inf_nan=False)] = None,
        target_gard: Annotated[float | None, Form(ge=0, le=200, allow_inf_nan=False)] = None,
    ) -> dict[str, Any]:
        """Adaptive re-prescription (contract section 8): the baseline record from the planning images, as the
        images endpoint gives it, then the rest of the course re-prescribed from the PET at ``timepoint``."""
        from radiogenomics.cohort.schema import PLANNING, parse_timepoint

        canonical = parse_timepoint(timepoint)
        if canonical is None or canonical == PLANNING:
            model(request)
            request.state.audit_patients = [(patient_id, None)]
            why = "is the baseline, not a mid-treatment timepoint" if canonical == PLANNING else \
                "is not a timepoint"
            _reject([_error(["body", "timepoint"], f"timepoint {timepoint[:40]!r} {why}: give fraction_K, the "
                                                   "imaging after K delivered fractions (e.g. fraction_10), as the "
                                                   "mid-treatment images' timepoint in manifest", "timepoint")])
        return await from_images(request, patient_id=patient_id, manifest=manifest, files=files,
                                 expression=expression, clinical=clinical, n_fractions=n_fractions,
                                 dose_per_fraction_gy=dose_per_fraction_gy, target_gard=target_gard,
                                 timepoint=canonical)

    @app.get("/v1/patients", response_model=schemas.PatientList, responses=_ERR, dependencies=authorised,
             tags=["patients"])
    def patients(request: Request) -> dict[str, Any]:
        """Patient ids of the feature table the server was given (``--features``); empty without one."""
        model(request)
        return {"patients": sorted(table.rows)}

    @app.get("/v1/patients/{patient_id}", response_model=schemas.PatientFeatures, dependencies=authorised,
             responses={**_ERR, 404: {"model": ErrorResponse, "description": "No such patient in the table."}},
             tags=["patients"])
    def patient(request: Request,
                patient_id: Annotated[str, PathParam(pattern=schemas.PATIENT_ID_PATTERN)]) -> dict[str, Any]:
        """A patient's features from the table, limited to the served model's columns (missing ones left out)."""
        loaded = model(request)
        request.state.audit_patients = [(patient_id, None)]
        values = table.features(patient_id, set(loaded.prescriber.feature_columns) - {naming.PATIENT_ID})
        if values is None:
            raise HTTPException(404, f"patient {patient_id} is not in the feature table")
        return {"patient_id": patient_id, "features": values}
    return app


def app_from_environment() -> FastAPI:
    """:func:`create_app` configured by ``RADIOGENOMICS_*`` variables (uvicorn's factory for ``--workers N``)."""
    missing = [k for k in (ENV_MODEL, ENV_TOKENS, ENV_AUDIT) if not os.environ.get(k)]
    if missing:
        raise InputError(f"environment variable(s) {', '.join(missing)} not set",
                         fix="start the server with `radiogenomics serve`")
    env: Mapping[str, str] = os.environ
    defaults = AuthFailureLimits()
    auth = AuthFailureLimits(per_client=int(env.get(ENV_AUTH_PER_CLIENT) or defaults.per_client),
                             total=int(env.get(ENV_AUTH_TOTAL) or defaults.total),
                             window_s=float(env.get(ENV_AUTH_WINDOW) or defaults.window_s))
    return create_app(env[ENV_MODEL], tokens_file=Path(env[ENV_TOKENS]), audit_db=Path(env[ENV_AUDIT]),
                      features=Path(env[ENV_FEATURES]) if env.get(ENV_FEATURES) else None,
                      workdir=Path(env[ENV_WORKDIR]) if env.get(ENV_WORKDIR) else None,
                      reload_interval_s=float(env.get(ENV_RELOAD, "5")), auth_failures=auth)


def _regimen_defaults(prescriber: Any) -> dict[str, Any]:
    """The regimen of a patient whose features and request give none: the standard regimen of the model's site
    (rails); a patient's own ``clinical.total_dose_gy`` in ``clinical.n_fractions`` comes first."""
    from radiogenomics.radiobiology import load_rails

    standard = load_rails().site(prescriber.site)
    return {"n_fractions": standard.standard_n_fractions,
            "dose_per_fraction_gy": standard.standard_dose_per_fraction_gy, "target_gard": prescriber.target_gard,
            "used_when": "neither the request's regimen nor the patient's clinical.total_dose_gy and "
                         "clinical.n_fractions give one (contract section 2, regimen_source 'default')"}
