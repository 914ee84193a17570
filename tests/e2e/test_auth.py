"""Logging in, refreshing, logging out, and sessions that end when an admin changes the user."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.contract import assert_error, bearer, claims_of, http, login, serve
from support.server import OrcaServer

PASSWORD = "auth-password-1"
ADMIN_PERMISSIONS = {"systems:read", "systems:write", "jobs:read", "jobs:write"}
PERMISSIONS = {
    "operator": {"systems:read", "jobs:read", "jobs:write"},
    "viewer": {"systems:read", "jobs:read"},
}


def me(orca: OrcaServer, token: str) -> httpx.Response:
    return http().get(f"{orca.base_url}/api/auth/me", headers=bearer(token))


def refresh(orca: OrcaServer, **kwargs: Any) -> httpx.Response:
    return http().post(f"{orca.base_url}/api/auth/refresh", **kwargs)


def admin_token(orca: OrcaServer) -> str:
    return str(login(orca.base_url, "admin", orca.settings.admin_password or "")["access_token"])


def add_user(orca: OrcaServer, role: str = "viewer") -> str:
    name = f"{role}-{uuid.uuid4().hex[:8]}"
    response = http().post(
        f"{orca.base_url}/api/users",
        json={"username": name, "password": PASSWORD, "role": role},
        headers=bearer(admin_token(orca)),
    )
    assert response.status_code == 201, response.text
    assert response.json()["username"] == name and response.json()["role"] == role
    return name


def change_user(orca: OrcaServer, username: str, **changes: Any) -> None:
    response = http().put(
        f"{orca.base_url}/api/users/{username}", json=changes, headers=bearer(admin_token(orca))
    )
    assert response.status_code == 200, response.text


def test_a_json_login_gets_a_bearer_token_for_30_minutes_and_a_refresh_token(
    orca: OrcaServer,
) -> None:
    response = http().post(
        f"{orca.base_url}/api/auth/token",
        json={"username": "admin", "password": orca.settings.admin_password},
    )
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 1800
    assert 12 * 3600 - 60 <= tokens["refresh_expires_in"] <= 12 * 3600
    assert tokens["refresh_token"] != tokens["access_token"]
    assert me(orca, tokens["access_token"]).json()["username"] == "admin"


def test_an_oauth2_form_login_works_like_a_json_one(orca: OrcaServer) -> None:
    response = http().post(
        f"{orca.base_url}/api/auth/token",
        data={"username": "admin", "password": orca.settings.admin_password or ""},
    )
    assert response.status_code == 200, response.text
    assert response.json()["expires_in"] == 1800
    assert me(orca, response.json()["access_token"]).status_code == 200


def test_a_wrong_password_and_an_unknown_user_get_the_same_401(orca: OrcaServer) -> None:
    def attempt(username: str, password: str) -> dict[str, Any]:
        response = http().post(
            f"{orca.base_url}/api/auth/token", json={"username": username, "password": password}
        )
        body = assert_error(response, 401)
        assert body["error_type"] == "AuthenticationError"
        return {k: v for k, v in body.items() if k != "request_id"}

    assert attempt("admin", "not-the-password") == attempt("no-such-user", "not-the-password")


@pytest.mark.parametrize("role", ["admin", "operator", "viewer"])
def test_me_says_who_i_am_with_my_roles_and_permissions(orca: OrcaServer, role: str) -> None:
    username = "admin" if role == "admin" else add_user(orca, role)
    password = orca.settings.admin_password if role == "admin" else PASSWORD
    response = me(orca, login(orca.base_url, username, password or "")["access_token"])
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"username", "roles", "permissions"}
    assert body["username"] == username and body["roles"] == [role]
    if role == "admin":
        assert set(body["permissions"]) >= ADMIN_PERMISSIONS
    else:
        assert set(body["permissions"]) == PERMISSIONS[role]


def test_a_refresh_rotates_the_refresh_token_and_a_reuse_revokes_the_whole_family(
    orca: OrcaServer,
) -> None:
    first = login(orca.base_url, "admin", orca.settings.admin_password or "")
    second = refresh(orca, json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.text
    second_tokens = second.json()
    assert second_tokens["refresh_token"] != first["refresh_token"]
    assert second_tokens["expires_in"] == 1800
    assert me(orca, second_tokens["access_token"]).status_code == 200
    # The refresh token may also come as a bearer token.
    third = refresh(orca, headers=bearer(second_tokens["refresh_token"]))
    assert third.status_code == 200, third.text
    third_tokens = third.json()
    assert me(orca, third_tokens["access_token"]).status_code == 200

    reuse = refresh(orca, json={"refresh_token": first["refresh_token"]})
    assert_error(reuse, 401)

    assert_error(refresh(orca, json={"refresh_token": third_tokens["refresh_token"]}), 401)
    for access in (third_tokens["access_token"], second_tokens["access_token"]):
        assert_error(me(orca, access), 401)


def test_a_still_valid_access_token_is_swapped_for_a_new_access_token(orca: OrcaServer) -> None:
    tokens = login(orca.base_url, "admin", orca.settings.admin_password or "")
    response = refresh(orca, headers=bearer(tokens["access_token"]))
    assert response.status_code == 200, response.text
    renewed = response.json()
    assert renewed["token_type"] == "bearer" and 0 < renewed["expires_in"] <= 1800
    assert renewed["access_token"] != tokens["access_token"]
    assert me(orca, renewed["access_token"]).json()["username"] == "admin"
    assert claims_of(renewed["access_token"])["exp"] <= claims_of(tokens["refresh_token"])["exp"]


def test_logout_ends_the_session_and_only_that_session(orca: OrcaServer) -> None:
    ending = login(orca.base_url, "admin", orca.settings.admin_password or "")
    other = login(orca.base_url, "admin", orca.settings.admin_password or "")
    response = http().post(
        f"{orca.base_url}/api/auth/logout", headers=bearer(ending["access_token"])
    )
    assert response.status_code == 200, response.text
    assert response.json()["message"]
    assert_error(me(orca, ending["access_token"]), 401)
    assert_error(refresh(orca, json={"refresh_token": ending["refresh_token"]}), 401)
    assert me(orca, other["access_token"]).status_code == 200


def test_disabling_a_user_ends_their_sessions_and_their_logins(orca: OrcaServer) -> None:
    user = add_user(orca)
    tokens = login(orca.base_url, user, PASSWORD)
    change_user(orca, user, is_active=False)
    assert_error(me(orca, tokens["access_token"]), 401)
    assert_error(refresh(orca, json={"refresh_token": tokens["refresh_token"]}), 401)
    refused = http().post(
        f"{orca.base_url}/api/auth/token", json={"username": user, "password": PASSWORD}
    )
    assert_error(refused, 401)


def test_changing_a_password_ends_the_sessions_and_the_old_password(orca: OrcaServer) -> None:
    user = add_user(orca)
    tokens = login(orca.base_url, user, PASSWORD)
    change_user(orca, user, password="a-new-password-2")
    assert_error(me(orca, tokens["access_token"]), 401)
    assert_error(refresh(orca, json={"refresh_token": tokens["refresh_token"]}), 401)
    old = http().post(
        f"{orca.base_url}/api/auth/token", json={"username": user, "password": PASSWORD}
    )
    assert_error(old, 401)
    assert (
        me(orca, login(orca.base_url, user, "a-new-password-2")["access_token"]).status_code == 200
    )


def test_changing_a_role_ends_the_sessions_and_the_next_login_has_the_new_role(
    orca: OrcaServer,
) -> None:
    user = add_user(orca, "viewer")
    tokens = login(orca.base_url, user, PASSWORD)
    change_user(orca, user, role="operator")
    assert_error(me(orca, tokens["access_token"]), 401)
    renewed = me(orca, login(orca.base_url, user, PASSWORD)["access_token"]).json()
    assert renewed["roles"] == ["operator"] and "jobs:write" in renewed["permissions"]


@pytest.fixture(scope="module")
def one_minute_sessions() -> Iterator[OrcaServer]:
    with serve("sqlite", session_max_seconds=60) as server:
        yield server


def test_no_token_outlives_the_session_maximum(one_minute_sessions: OrcaServer) -> None:
    orca = one_minute_sessions
    tokens = login(orca.base_url, "admin", orca.settings.admin_password or "")
    assert 0 < tokens["expires_in"] <= 60 and 0 < tokens["refresh_expires_in"] <= 60
    session_end = claims_of(tokens["refresh_token"])["exp"]

    rotated = refresh(orca, json={"refresh_token": tokens["refresh_token"]}).json()
    assert 0 < rotated["expires_in"] <= 60 and 0 < rotated["refresh_expires_in"] <= 60
    assert rotated["refresh_expires_in"] <= tokens["refresh_expires_in"]
    assert claims_of(rotated["refresh_token"])["exp"] <= session_end
    assert claims_of(rotated["access_token"])["exp"] <= session_end

    renewed = refresh(orca, headers=bearer(rotated["access_token"])).json()
    assert 0 < renewed["expires_in"] <= 60
    assert claims_of(renewed["access_token"])["exp"] <= session_end
