"""The OpenAPI document, completed with what is answered before or around every route.

Routes document their own problems (`problem_responses`). Some answers come from the middleware
or the framework, alike for every route: the market gate's 451, the signed-in check's 401, the
cookie-write CSRF check and a suspended account's 403, the body checks (400 for a body that
cannot be parsed, 413, 415, 422), FastAPI's validation errors (answered as problem+json, not the
`HTTPValidationError` JSON FastAPI documents by default). Written once here from what each route
is, rather than in sixty decorators where the schemathesis run found them missing.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from reelm.api.deps import BEARER_SCHEME
from reelm.api.gate import UNGATED_PREFIXES
from reelm.api.problems import PROBLEM_JSON, problem_responses

BODY_METHODS = frozenset({"post", "put", "patch"})
BODY_PROBLEMS = (400, 413, 415, 422)
SIGNED_IN_PROBLEMS = (401, 403)


def install(app: FastAPI) -> None:
    plain = app.openapi

    def document() -> dict[str, Any]:
        spec = plain()  # FastAPI's, cached (and built again when routes are added)
        complete(spec)
        return spec

    app.openapi = document  # type: ignore[method-assign]


def complete(spec: dict[str, Any]) -> None:
    """Add what the middleware answers to every operation (idempotent). An operation that
    needs a signed-in user is one with the bearer security requirement (`deps.CurrentUserDep`
    declares it)."""
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            signed_in = any(BEARER_SCHEME in req for req in operation.get("security", []))
            _complete_operation(
                operation,
                method,
                gated=not path.startswith(UNGATED_PREFIXES),
                signed_in=signed_in,
            )
    # FastAPI's own validation error shapes: nothing refers to them once replaced.
    schemas = spec.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def _complete_operation(
    operation: dict[str, Any], method: str, *, gated: bool, signed_in: bool
) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    codes: list[int] = []
    if gated:
        codes.append(451)
    if signed_in:
        codes.extend(SIGNED_IN_PROBLEMS)
    if method in BODY_METHODS and "requestBody" in operation:
        codes.extend(BODY_PROBLEMS)
    if operation.get("parameters") or "requestBody" in operation:
        codes.append(422)
    for code, entry in problem_responses(*codes).items():
        existing = responses.get(str(code))
        if existing is None or PROBLEM_JSON not in existing.get("content", {}):
            responses[str(code)] = entry
