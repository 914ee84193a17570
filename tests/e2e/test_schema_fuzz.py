"""/openapi.json describes every route, and a schemathesis fuzz of it finds no 5xx and no
response that breaks the schema (status, content type, body)."""

from __future__ import annotations

import pytest

from orca.http.app import ENDPOINTS, Api
from support.contract import http
from support.fuzz import Fuzzed
from support.server import OrcaServer

EXAMPLES = 15  # per route and backend: ~600 requests in all


def test_openapi_describes_every_route_of_the_endpoint_table(orca: OrcaServer) -> None:
    response = http().get(f"{orca.base_url}/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    described = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert described == {(api.method, api.path) for api in ENDPOINTS}
    for api in ENDPOINTS:
        operation = document["paths"][api.path][api.method.lower()]
        assert str(api.status) in operation["responses"], api.path
        assert ("security" in operation) == (api.permission is not None), api.path
        if api.body is not None:
            assert operation["requestBody"]["content"]["application/json"]["schema"]


@pytest.fixture(scope="module")
def fuzzed(orca: OrcaServer) -> Fuzzed:
    return Fuzzed(orca)


@pytest.mark.parametrize("api", ENDPOINTS, ids=lambda a: f"{a.method} {a.path}")
def test_a_schema_fuzz_finds_no_server_error_and_no_response_outside_the_schema(
    fuzzed: Fuzzed, api: Api
) -> None:
    fuzzed.route(api, EXAMPLES)
