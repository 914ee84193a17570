"""/openapi.json describes every route, and a schemathesis fuzz of it finds no 5xx and no
response that breaks the schema (status, content type, body)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from orca.http.app import ENDPOINTS, Api
from support.contract import bearer, http, login
from support.server import OrcaServer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 15  # per route and backend: ~600 requests in all
SPARE_USER = {"username": "fuzz-target", "password": "fuzz-target-pw", "role": "viewer"}


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


class Fuzzed:
    def __init__(self, orca: OrcaServer) -> None:
        self.orca = orca
        self.token = self.fresh_token()

    def fresh_token(self) -> str:
        password = self.orca.settings.admin_password or ""
        return str(login(self.orca.base_url, "admin", password)["access_token"])


@pytest.fixture(scope="module")
def fuzzed(orca: OrcaServer) -> Fuzzed:
    target = Fuzzed(orca)
    created = http().post(
        f"{orca.base_url}/api/users", json=SPARE_USER, headers=bearer(target.token)
    )
    assert created.status_code == 201, created.text
    return target


@pytest.fixture(scope="module")
def api_schema(fuzzed: Fuzzed) -> Any:
    return schemathesis.openapi.from_url(f"{fuzzed.orca.base_url}/openapi.json")


def call(case: Any, fuzzed: Fuzzed) -> None:
    token = fuzzed.token
    if case.path == "/api/auth/logout":
        token = fuzzed.fresh_token()  # logging out must not end the fuzzer's own session
    username = (case.path_parameters or {}).get("username")
    if isinstance(username, str) and username.casefold() == "admin":
        case.path_parameters["username"] = SPARE_USER["username"]  # keep the admin's password
    case.call_and_validate(
        base_url=fuzzed.orca.base_url, headers=bearer(token), checks=CHECKS, timeout=30
    )


@pytest.mark.parametrize("api", ENDPOINTS, ids=lambda a: f"{a.method} {a.path}")
def test_a_schema_fuzz_finds_no_server_error_and_no_response_outside_the_schema(
    api_schema: Any, fuzzed: Fuzzed, api: Api
) -> None:
    operation = api_schema[api.path][api.method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        # Logging out takes no input, and each example needs a login of its own.
        max_examples=3 if api.path == "/api/auth/logout" else EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.generate],
    )
    def fuzz(case: Any) -> None:
        call(case, fuzzed)

    fuzz()
