"""Request and response models of the REST API (contract section 6) and the server's limits.

Request models are strict (``ConfigDict(strict=True, extra="forbid")``): a feature value is a number, a
string or null (never a boolean), numbers are finite (JSON ``NaN``/``Infinity`` literals, which Python's
``json`` accepts, are refused), a patient id is pseudonymous (``[A-Za-z0-9._-]{1,64}``). Response models
describe what the routes return so the OpenAPI schema is complete (schemathesis checks the responses
against it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

#: Pseudonymous patient id: letters, digits, ``.``, ``_``, ``-`` (never a name or a hospital number).
PATIENT_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
MiB = 1024 * 1024

PatientId = Annotated[str, Field(pattern=PATIENT_ID_PATTERN, min_length=1, max_length=64,
                                 examples=["P001"])]
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
#: Integers a float64 holds exactly (JSON numbers beyond it are refused rather than rounded or overflowing).
SafeInt = Annotated[StrictInt, Field(ge=-(2**53), le=2**53)]
FeatureValue = FiniteFloat | SafeInt | StrictStr | None
FeatureName = Annotated[str, Field(min_length=1, max_length=256)]


@dataclass(frozen=True)
class ServeLimits:
    """Request limits: JSON body bytes (streamed bytes are counted, whatever Content-Length says), patients
    per request; ``uploads`` (``radiogenomics.serving.uploads.UploadLimits``) for the multipart route, its
    default when None."""

    max_body_bytes: int = 10 * MiB
    max_patients: int = 1000
    uploads: Any = None
    #: Slack over the uploads' total size for the multipart framing and the text fields.
    multipart_overhead_bytes: int = 4 * MiB

    def upload_limits(self) -> Any:
        """The uploads' limits (the default ``UploadLimits()`` when none were given)."""
        if self.uploads is not None:
            return self.uploads
        from radiogenomics.serving.uploads import UploadLimits

        return UploadLimits()


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Regimen(_Strict):
    """The regimen the dose figures refer to (default: the model's, see GET /v1/model)."""

    n_fractions: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=1, le=100, multiple_of=1,
                                        description="A whole number (35 or 35.0).")] | None = None
    dose_per_fraction_gy: Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0, le=30)] | None = None


class PatientIn(_Strict):
    """One patient: a pseudonymous id and feature values keyed by feature-table column."""

    patient_id: PatientId
    features: dict[FeatureName, FeatureValue] = Field(
        default_factory=dict, examples=[{"clinical.age_years": 61.0, "clinical.site": "head_neck"}],
        description="Columns of the model's feature schema (GET /v1/model); absent or null = missing.")


class PrescriptionRequest(_Strict):
    """Body of POST /v1/prescriptions (and, with exactly one patient, /v1/dose-response and /v1/objectives)."""

    patients: list[PatientIn] = Field(min_length=1)
    regimen: Regimen | None = None
    target_gard: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=200)] | None = None

    def regimen_options(self) -> dict[str, float | None]:
        """``n_fractions``, ``dose_per_fraction_gy``, ``target_gard`` for ``Prescriber.predict_records``."""
        regimen = self.regimen or Regimen()
        return {"n_fractions": None if regimen.n_fractions is None else float(regimen.n_fractions),
                "dose_per_fraction_gy": regimen.dose_per_fraction_gy, "target_gard": self.target_gard}


# ------------------------------------------------------------------------------------------------ responses
class ErrorResponse(BaseModel):
    """401, 404, 405, 413, 415 and 503: a one-line reason."""

    detail: str


class ErrorItem(BaseModel):
    """One problem of a request: where (``loc``, e.g. ``["body", "patients", 0, "features", "x"]``) and what."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    """422: every problem found, each naming its field."""

    detail: list[ErrorItem]


class Health(BaseModel):
    status: str
    model_uri: str
    model_version: str


class FeatureColumn(BaseModel):
    column: str
    group: str
    dtype: str


class RegimenDefaults(BaseModel):
    """The site's standard regimen (used when neither the request nor the patient gives one) and the target."""

    n_fractions: int
    dose_per_fraction_gy: float
    target_gard: float
    used_when: str = ""


class OARCheck(BaseModel):
    """One OAR limit at the recommended regimen (contract section 2, ``oar_checks``)."""

    structure: str
    metric: str
    limit_gy: float | None
    value_gy: float | None
    hard: bool
    status: str
    dose_gy: float | None = None
    source: str = ""
    note: str = ""


class ModelDescription(BaseModel):
    """GET /v1/model: the registry entry being served, its metrics and what it accepts."""

    name: str
    version: str
    alias: str | None
    uri: str
    requested_uri: str
    loaded_at: str
    metrics: dict[str, float | None]
    features: list[FeatureColumn]
    regimen_defaults: RegimenDefaults
    toxicity_endpoints: list[str]
    site: str
    beta_per_gy2: float
    max_patients: int


class Record(BaseModel):
    """The prescription record of contract section 2 (missing numbers are null)."""

    patient_id: str
    model_name: str
    model_version: str
    model_uri: str
    rsi: float | None
    rsi_lower: float | None
    rsi_upper: float | None
    alpha_per_gy: float | None
    beta_per_gy2: float | None
    alpha_beta_gy: float | None
    dose_per_fraction_gy: float | None
    n_fractions: int | None
    gard: float | None
    target_gard: float | None
    dose_for_target_gard_gy: float | None
    recommended_total_dose_gy: float | None
    toxicity: dict[str, float | None]
    recommended_n_fractions: int | None
    recommended_dose_per_fraction_gy: float | None
    dose_for_target_gard_lower_gy: float | None
    dose_for_target_gard_upper_gy: float | None
    site: str
    regimen_source: str
    rsi_source: str
    oar_checks: list[OARCheck]
    flags: list[str]
    input_sha256: str
    created_at: str
    notes: list[str] = []


class Records(BaseModel):
    records: list[Record]


class AdaptedRecord(Record):
    """An adapted record (contract section 8; docs/adaptive.md): the baseline record's fields plus the
    re-prescription of the rest of the course from the mid-treatment imaging. Fields the adaptation adds later
    are passed through."""

    model_config = ConfigDict(extra="allow")

    timepoint: str = Field(description="`fraction_K`: imaging after K delivered fractions.")
    delivered_n_fractions: int
    delivered_dose_gy: float
    remaining_n_fractions: int
    remaining_dose_per_fraction_gy: float
    adapted_total_dose_gy: float = Field(description="delivered_dose_gy + remaining_n_fractions x "
                                                     "remaining_dose_per_fraction_gy, exactly.")
    baseline_total_dose_gy: float = Field(description="The recommendation before adaptation.")
    response: dict[str, Any] = Field(description="`baseline` and `mid_treatment` figures in the planning target "
                                                 "(hypoxic_fraction, mean_po2_mmhg, fmiso_tbr_max, "
                                                 "fmiso_tbr_hypoxic_fraction (share at FMISO TBR >= 1.2), "
                                                 "suv_max, suv_mean, mtv_cc, clonogens; gtv_volume_cc), "
                                                 "`modalities`, `notes`; empty when the imaging could not be used.")
    tcp_baseline: float | None
    tcp_adapted: float | None
    adaptation: dict[str, Any] = Field(description="`method`, `tcp_target` (= max(`tcp_planning`, min(`tcp_goal`, "
                                                   "`tcp_baseline`))), `tcp_planning` (the baseline course's "
                                                   "projection at planning), `tcp_goal` (the control goal, 0.95), "
                                                   "`bound`, `delivered_source`, `whole_course_oar_checks`, "
                                                   "`delivered_oar_eqd2` (per organ: delivered EQD2 of its "
                                                   "maximum, mean and gEUD), `notes`.")


class AdaptedRecords(BaseModel):
    records: list[AdaptedRecord]


class PatientList(BaseModel):
    patients: list[str]


class PatientFeatures(BaseModel):
    patient_id: str
    features: dict[str, float | int | str | None]


class Rails(BaseModel):
    min_total_dose_gy: float | None
    max_total_dose_gy: float | None


class DoseResponse(BaseModel):
    """TCP and NTCP against total dose at the regimen's dose per fraction (``dose_response``)."""

    patient_id: str
    total_dose_gy: list[float]
    tcp: list[float | None]
    tcp_low: list[float | None] = Field(description="TCP at the resistant end of the record's RSI interval")
    tcp_high: list[float | None] = Field(description="TCP at the sensitive end of the record's RSI interval")
    ntcp: dict[str, list[float | None]]
    rails: Rails
    recommended_total_dose_gy: float | None
    dose_for_target_gard_gy: float | None
    tcp_source: str


class ObjectivesResponse(BaseModel):
    """The record and its ``objectives.json`` (format radiogenomics-objectives/1, contract section 7)."""

    record: Record
    objectives: dict[str, Any]
