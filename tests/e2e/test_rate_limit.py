"""The rate limit: per client IP on /api, headers on every response, 429 with Retry-After.

One server allows 5 requests a minute (3 logins) and trusts 127.0.0.1 as a proxy. Every test
speaks from its own loopback address, so each starts with a full budget: 127.0.0.2 and up are
ordinary, untrusted clients; 127.0.0.1 plays the trusted proxy.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.contract import assert_error, serve
from support.server import OrcaServer

LIMIT = 5
LOGIN_LIMIT = 3


@pytest.fixture(scope="module")
def limited() -> Iterator[OrcaServer]:
    with serve(
        "sqlite",
        rate_limit=f"{LIMIT}/minute",
        login_rate_limit=f"{LOGIN_LIMIT}/minute",
        trusted_proxies=("127.0.0.1",),
    ) as server:
        yield server


def assert_refused(response: httpx.Response) -> dict[str, Any]:
    """429 with the error shape. Whether its request_id matches X-Request-ID is a test of its own,
    so that a wrong request_id does not hide what the other tests check."""
    assert response.status_code == 429, response.text
    body: dict[str, Any] = response.json()
    assert set(body) >= {"detail", "error_type", "errors", "request_id"}
    assert body["error_type"] == "RateLimitExceeded" and body["detail"] and body["errors"] == []
    assert 1 <= int(response.headers["retry-after"]) <= 60
    return body


def client_at(orca: OrcaServer, address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (any 127.x.y.z reaches the server)."""
    return httpx.Client(
        base_url=orca.base_url,
        transport=httpx.HTTPTransport(local_address=address),
        trust_env=False,
        timeout=30,
    )


def test_the_first_requests_say_where_they_stand_and_the_next_one_is_refused(
    limited: OrcaServer,
) -> None:
    with client_at(limited, "127.0.0.2") as client:
        for remaining in range(LIMIT - 1, -1, -1):
            response = client.get("/api/systems")
            assert response.status_code == 401  # no token: still counted
            assert response.headers["x-ratelimit-limit"] == str(LIMIT)
            assert response.headers["x-ratelimit-remaining"] == str(remaining)
            reset = int(response.headers["x-ratelimit-reset"])
            assert time.time() - 1 <= reset <= time.time() + 61

        refused = client.get("/api/jobs")
        assert_refused(refused)
        assert refused.headers["x-ratelimit-limit"] == str(LIMIT)
        assert refused.headers["x-ratelimit-remaining"] == "0"


def test_a_refused_request_has_the_error_shape_with_its_request_id(limited: OrcaServer) -> None:
    with client_at(limited, "127.0.0.6") as client:
        for _ in range(LIMIT):
            client.get("/api/dashboard")
        refused = client.get("/api/dashboard", headers={"X-Request-ID": "limited-42"})
        assert refused.headers["x-request-id"] == "limited-42"
        assert assert_error(refused, 429)["request_id"] == "limited-42"


def test_health_checks_and_the_schema_are_never_limited(limited: OrcaServer) -> None:
    with client_at(limited, "127.0.0.3") as client:
        for _ in range(3 * LIMIT):
            for path in ("/health", "/health/detailed", "/openapi.json"):
                response = client.get(path)
                assert response.status_code == 200, path
                assert "x-ratelimit-limit" not in response.headers
        assert client.get("/api/systems").headers["x-ratelimit-remaining"] == str(LIMIT - 1)


def test_logins_have_their_own_stricter_limit(limited: OrcaServer) -> None:
    wrong = {"username": "admin", "password": "wrong-password"}
    with client_at(limited, "127.0.0.4") as client:
        for remaining in range(LOGIN_LIMIT - 1, -1, -1):
            response = client.post("/api/auth/token", json=wrong)
            assert response.status_code == 401
            assert response.headers["x-ratelimit-limit"] == str(LOGIN_LIMIT)
            assert response.headers["x-ratelimit-remaining"] == str(remaining)
        right = {"username": "admin", "password": limited.settings.admin_password}
        assert_refused(client.post("/api/auth/token", json=right))
        other = client.get("/api/systems")
        assert other.status_code == 401  # the rest of the API has its own budget
        assert other.headers["x-ratelimit-limit"] == str(LIMIT)


def test_a_client_cannot_escape_the_limit_by_spoofing_x_forwarded_for(
    limited: OrcaServer,
) -> None:
    with client_at(limited, "127.0.0.5") as client:
        for i in range(LIMIT):
            spoofed = {"X-Forwarded-For": f"198.51.100.{i}"}
            assert client.get("/api/systems", headers=spoofed).status_code == 401
        assert_refused(client.get("/api/systems", headers={"X-Forwarded-For": "198.51.100.99"}))


def test_a_trusted_proxy_gets_one_budget_per_forwarded_client(limited: OrcaServer) -> None:
    with client_at(limited, "127.0.0.1") as proxy:
        first = {"X-Forwarded-For": "203.0.113.7"}
        for _ in range(LIMIT):
            assert proxy.get("/api/systems", headers=first).status_code == 401
        assert_refused(proxy.get("/api/systems", headers=first))

        second = proxy.get("/api/systems", headers={"X-Forwarded-For": "203.0.113.8"})
        assert second.status_code == 401
        assert second.headers["x-ratelimit-remaining"] == str(LIMIT - 1)
        # The proxy's own address is not the client: it never shares a client's budget.
        chained = proxy.get("/api/systems", headers={"X-Forwarded-For": "203.0.113.9, 127.0.0.1"})
        assert chained.headers["x-ratelimit-remaining"] == str(LIMIT - 1)


REDIS_URL = os.environ.get("ORCA_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def test_api_processes_sharing_redis_share_each_clients_budget() -> None:
    """Two API processes behind one load balancer: a client cannot double its budget by
    landing on both."""
    shared = {"rate_limit": f"{LIMIT}/minute", "rate_limit_storage": REDIS_URL}
    # An address of its own: Redis keeps the counts of an earlier run for a minute.
    address = f"127.{random.randrange(1, 255)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    with (
        serve("sqlite", **shared) as first,
        serve("sqlite", **shared) as second,
        client_at(first, address) as to_first,
        client_at(second, address) as to_second,
    ):
        seen = [
            to_first.get("/api/systems").headers["x-ratelimit-remaining"],
            to_second.get("/api/systems").headers["x-ratelimit-remaining"],
            to_first.get("/api/systems").headers["x-ratelimit-remaining"],
            to_second.get("/api/systems").headers["x-ratelimit-remaining"],
            to_first.get("/api/systems").headers["x-ratelimit-remaining"],
        ]
        assert seen == [str(n) for n in range(LIMIT - 1, -1, -1)]
        assert_refused(to_second.get("/api/jobs"))
        assert_refused(to_first.get("/api/jobs"))
