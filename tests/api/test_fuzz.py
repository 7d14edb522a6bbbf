"""Fuzz the OpenAPI schema with schemathesis: whatever is sent, no 5xx and no trace.

Runs as the demo enterprise (so state-changing operator endpoints answer 403 and the
rest of the session's data stays as it is) and anonymously. The strategy is used
directly with Hypothesis (schemathesis' pytest plugin does not load on pytest 9).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from gateway.app import create_app
from gateway.services import Services
from tests.api.conftest import auth


def _check(case: Any, headers: dict[str, str]) -> None:
    response = case.call(headers=headers)
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
    if response.status_code >= 400:
        content_type = response.headers["content-type"]
        if isinstance(content_type, list):  # schemathesis' response keeps header lists
            content_type = content_type[0]
        assert content_type.startswith("application/problem+json"), (
            case.method, case.path, response.status_code)
        assert "Traceback" not in response.text


@pytest.mark.parametrize("caller", ["acme-analyst", "anon"])
def test_no_server_errors(services: Services, tokens: dict[str, str], caller: str) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(services=services))
    headers = auth(tokens[caller]) if caller != "anon" else {}

    @given(case=schema.as_strategy())
    @settings(max_examples=200, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        _check(case, headers)

    run()


@pytest.mark.parametrize(("method", "path"), [
    ("get", "/v1/exports/{}"), ("get", "/v1/exports/{}/file"),
    ("post", "/v1/exports/{}/approve"), ("post", "/v1/exports/{}/deny"),
])
@pytest.mark.parametrize("number", [2**63, 10**30, 0, -1])
def test_row_ids_out_of_range_are_422(client: Any, tokens: dict[str, str], method: str,
                                      path: str, number: int) -> None:
    # Found by the fuzzer: 2**63 reached the store and overflowed the driver (500).
    response = getattr(client, method)(path.format(number), headers=auth(tokens["wang"]),
                                       **({"json": {"reason": "x"}} if method == "post" else {}))
    assert response.status_code == 422, response.text[:300]
