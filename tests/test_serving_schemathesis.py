"""schemathesis against the ASGI app with a valid token: no server errors, every status code, content type and
response body as the OpenAPI schema declares (generated valid and invalid requests for every operation)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from prescriber_factory import Bundle, build_bundle, session_base, use_tracking_uri
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from serving_factory import MODEL, new_token, shared_registry, tracking_uri

from radiogenomics.serving.api import OPENAPI_URL, create_app
from radiogenomics.serving.schemas import ServeLimits

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
TOKEN: dict[str, str] = {}
MAX_EXAMPLES = 10


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    base = session_base(tmp_path_factory)
    bundle: Bundle = build_bundle(base)
    folder, _ = shared_registry(bundle, base)
    work = tmp_path_factory.mktemp("serving-schemathesis")
    tokens, token = new_token(work)
    TOKEN["Authorization"] = f"Bearer {token}"
    with use_tracking_uri(tracking_uri(folder)):
        app = create_app(MODEL, tokens_file=tokens, audit_db=work / "audit.sqlite", features=bundle.features_path,
                         workdir=work / "uploads", limits=ServeLimits(max_patients=50))
        yield schemathesis.openapi.from_asgi(OPENAPI_URL, app, headers=dict(TOKEN))


#: Operations that take input (a body or a path parameter) are also sent invalid input.
WITH_INPUT = ["POST /v1/prescriptions", "POST /v1/dose-response", "POST /v1/objectives",
              "POST /v1/prescriptions/images", "POST /v1/adaptations/images", "GET /v1/patients/{patient_id}"]
OPERATIONS = ["GET /health", "GET /v1/model", "GET /v1/patients", *WITH_INPUT]
CASES = [(o, GenerationMode.POSITIVE) for o in OPERATIONS] + [(o, GenerationMode.NEGATIVE) for o in WITH_INPUT]


def test_every_operation_is_covered(api_schema: Any) -> None:
    found = {f"{r.ok().method.upper()} {r.ok().path}" for r in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


# schemathesis.pytest.from_fixture (lazy schemas) does not run on pytest 9 (it sets Function._nodeid), so the
# operations are parametrized here and each runs hypothesis itself. The multipart images route is included:
# random parts are refused (422) before any image work starts.
@pytest.mark.parametrize("operation,mode", CASES, ids=[f"{o}-{m.value}" for o, m in CASES])
def test_api_conforms_to_its_schema(api_schema: Any, operation: str, mode: GenerationMode) -> None:
    method, path = operation.split(" ", 1)
    found = api_schema[path][method]

    @given(case=found.as_strategy(mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              phases=[Phase.explicit, Phase.generate])
    def run(case: Any) -> None:
        case.call_and_validate(headers=dict(TOKEN), checks=CHECKS, timeout=300)

    run()
