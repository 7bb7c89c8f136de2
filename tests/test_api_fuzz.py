"""The whole OpenAPI, fuzzed by schemathesis: no 5xx, and every answer is the one documented.

Every operation of /api/v1/openapi.json (the tus upload endpoints included) gets generated
requests, valid and invalid: anonymous, with a signed-in user's bearer token, signed in on an
upload and an account that exist (so the fuzzing gets past the 404), and from a blocked market.
Each response must not be a 5xx, and must have a documented status code, content type and
headers, and a body that matches the documented schema. The number of examples is bounded and
the generation deterministic (the same requests every run), so CI is reproducible. Measured:
33 s on a quiet two-core machine, 3-6 minutes while eight other test runs shared it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks as st_checks
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi import checks as openapi_checks

from reelm.app import create_app
from reelm.bootstrap import Platform
from reelm.media import uploads
from tests.conftest import signed_in

# Per operation, generation mode (valid, invalid) and identity: about 2,300 requests in all.
# Raise it locally to search harder (REELM_FUZZ_EXAMPLES=50: nothing more found, 6 minutes).
MAX_EXAMPLES = int(os.environ.get("REELM_FUZZ_EXAMPLES", "8"))
CHECKS = [
    st_checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
]
# tus PATCH bodies are raw bytes.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
# These end the session the request is made with: each such example gets a user of its own.
OPERATIONS = 60  # in the OpenAPI today: a route that leaves it must be noticed
SESSION_ENDING = {("DELETE", "/api/v1/me"), ("DELETE", "/api/v1/session")}
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,  # the same requests on every run: CI is reproducible
    database=None,  # nothing written to .hypothesis/
    deadline=None,
    # Hypothesis' data-generation health checks judge the strategies, not the API.
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)


@pytest.fixture(scope="module")
def fuzz_platform(session_platform_factory: Callable[..., Platform]) -> Platform:
    """A platform of its own: the fuzzer's users, follows and comments stay out of others'."""
    return session_platform_factory()


@pytest.fixture(scope="module")
def api_schema(fuzz_platform: Platform) -> Any:
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", create_app(fuzz_platform))
    rejection = schema.config.checks.negative_data_rejection
    # tus answers a missing or wrong Tus-Resumable with 412 (tus 1.0 core), and a body over
    # the limit is 413 whatever else is wrong with it.
    rejection.expected_statuses = [*rejection.expected_statuses, "412", "413"]
    return schema


def fuzz(
    schema: Any,
    headers: Callable[[Any], dict[str, str]],
    *,
    known: dict[str, str] | None = None,
    modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
    examples: int = MAX_EXAMPLES,
) -> int:
    """Every operation, valid and invalid requests; all failures reported together. With
    ``known``, only the operations with such path parameters, each set to a resource that
    exists (an upload, an account), so the fuzzing reaches past the 404. The operations run."""
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        names = {p.name for p in operation.path_parameters}
        fixed = {k: v for k, v in (known or {}).items() if k in names}
        if known is not None and not fixed:
            continue
        operations += 1
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed or None)

            @settings(SETTINGS, max_examples=examples)
            @given(case=strategy)
            def run(case: Any) -> None:
                case.call_and_validate(headers=headers(case), checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label
                continue  # nothing to get wrong: no parameter, no body (or only fixed ones)
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, f"{len(failures)} failing:\n\n" + "\n\n".join(failures)
    return operations


def test_anonymous(api_schema: Any) -> None:
    assert fuzz(api_schema, lambda case: {}) >= OPERATIONS


def test_from_a_blocked_market(api_schema: Any) -> None:
    """Every operation but the health check answers a blocked market's visitor with 451, and
    says so in the document (a few valid requests each suffice: the gate answers first)."""
    blocked = {"CF-IPCountry": "IN"}
    assert fuzz(api_schema, lambda case: blocked, modes=(GenerationMode.POSITIVE,), examples=3)


def _bearer(case: Any, token: str) -> dict[str, str]:
    """The user's token, unless the case is an invalid request made by leaving the token out
    of an operation that requires one (it must get 401, not the user's answer)."""
    required = bool(case.operation.definition.raw.get("security"))
    if required and "Authorization" not in (case.headers or {}):
        return {}
    return {"Authorization": f"Bearer {token}"}


def test_signed_in(api_schema: Any, fuzz_platform: Platform) -> None:
    token, _ = signed_in(fuzz_platform, "fuzz")

    def bearer(case: Any) -> dict[str, str]:
        if (case.method.upper(), case.path) in SESSION_ENDING:
            fresh, _ = signed_in(fuzz_platform, "fuzzend")
            return _bearer(case, fresh)
        return _bearer(case, token)

    assert fuzz(api_schema, bearer) >= OPERATIONS


def test_signed_in_on_resources_that_exist(api_schema: Any, fuzz_platform: Platform) -> None:
    """The tus endpoints on a real upload of the user, the account endpoints on a real (and
    other) account: appends at right and wrong offsets, follows, blocks, removals."""
    token, user = signed_in(fuzz_platform, "fuzzown")
    _, other = signed_in(fuzz_platform, "fuzzother")
    upload = uploads.create_upload(fuzz_platform, user, 64, uploads.UploadMeta())
    ran = fuzz(
        api_schema,
        lambda case: _bearer(case, token),
        known={"upload_id": str(upload.id), "handle": other.handle},
    )
    assert ran >= 10


def test_the_tus_endpoints_are_described(fuzz_platform: Platform) -> None:
    """Discovery, creation, offset, append and cancel, with the headers tus clients read."""
    paths = create_app(fuzz_platform).openapi()["paths"]
    options = paths["/api/v1/videos"]["options"]["responses"]["204"]["headers"]
    assert {"Tus-Resumable", "Tus-Version", "Tus-Extension", "Tus-Max-Size"} <= set(options)
    create = paths["/api/v1/videos"]["post"]
    assert {p["name"] for p in create["parameters"]} >= {"upload-length", "tus-resumable"}
    assert "Location" in create["responses"]["201"]["headers"]
    upload = paths["/api/v1/uploads/{upload_id}"]
    assert "Upload-Offset" in upload["head"]["responses"]["200"]["headers"]
    body = upload["patch"]["requestBody"]["content"]
    assert set(body) == {"application/offset+octet-stream"}
    assert "upload-offset" in {p["name"] for p in upload["patch"]["parameters"]}
    assert "content-type" not in {p["name"] for p in upload["patch"]["parameters"]}
    for method in ("head", "patch", "delete"):
        assert {"401", "404"} <= set(upload[method]["responses"]), method
        assert upload[method]["security"] == [{"bearer": []}]
