"""A schemathesis fuzz of a running Orca's /openapi.json, one route at a time: no 5xx and no
response outside the schema (status, content type, body)."""

from __future__ import annotations

from collections import Counter
from typing import Any

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

from orca.http.app import Api
from support.contract import bearer, http, login
from support.server import OrcaServer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# The fuzz may change or disable this user's password and role, never the admin's.
SPARE_USER = {"username": "fuzz-target", "password": "fuzz-target-pw", "role": "viewer"}


class Fuzzed:
    """An Orca under fuzz: its admin's token, a spare user, and its schema."""

    def __init__(self, orca: OrcaServer) -> None:
        self.orca = orca
        self.token = self.fresh_token()
        created = http().post(
            f"{orca.base_url}/api/users", json=SPARE_USER, headers=bearer(self.token)
        )
        assert created.status_code == 201, created.text
        self.schema = schemathesis.openapi.from_url(f"{orca.base_url}/openapi.json")

    def fresh_token(self) -> str:
        password = self.orca.settings.admin_password or ""
        return str(login(self.orca.base_url, "admin", password)["access_token"])

    def call(self, case: Any) -> int:
        """Send one generated request and check its response; return its status."""
        token = self.token
        if case.path == "/api/auth/logout":
            token = self.fresh_token()  # logging out must not end the fuzzer's own session
        username = (case.path_parameters or {}).get("username")
        if isinstance(username, str) and username.casefold() == "admin":
            case.path_parameters["username"] = SPARE_USER["username"]  # keep the admin's password
        response = case.call_and_validate(
            base_url=self.orca.base_url, headers=bearer(token), checks=CHECKS, timeout=30
        )
        return int(response.status_code)

    def route(self, api: Api, examples: int, statuses: Counter[int] | None = None) -> None:
        """Fuzz one route with valid and invalid input; count the statuses seen."""
        operation = self.schema[api.path][api.method]
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )

        @given(case=cases)
        @settings(
            # Logging out takes no input, and each example needs a login of its own.
            max_examples=min(3, examples) if api.path == "/api/auth/logout" else examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
            phases=[Phase.generate],
        )
        def fuzz(case: Any) -> None:
            status = self.call(case)
            if statuses is not None:
                statuses[status] += 1

        fuzz()
