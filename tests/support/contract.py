"""Helpers for the API contract tests (tests/e2e/test_*_api.py and friends).

- ``TunedServer``: an ``OrcaServer`` that also passes the settings ``OrcaServer.env()`` leaves
  at their defaults (``ORCA_SESSION_MAX``, ``ORCA_TRUSTED_PROXIES``, ...).
- ``serve``: a throw-away server on either backend with any settings.
- Tokens signed like the server signs them (the key is derived from ``ORCA_SECRET_KEY``), so a
  test can make an expired, unsigned or tampered token.
- ``dump_database``: every row of the server's database as text, the raw event table apart.
- ``assert_error``: the one error shape every 4xx has.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
import psycopg
from psycopg import sql

from orca.application.sealing import derive_key, new_master_key, parse_master_key
from orca.config import Settings
from support.databases import fresh_database
from support.server import OrcaServer

UNLIMITED = "1000000/minute"
ADMIN_PASSWORD = "admin-pw-contract"
T = TypeVar("T")


class TunedServer(OrcaServer):
    """``orca serve`` with every setting of its ``Settings``, not only those OrcaServer passes."""

    def env(self) -> dict[str, str]:
        s = self.settings
        return super().env() | {
            "ORCA_SESSION_MAX": f"{s.session_max_seconds:g}",
            "ORCA_TRUSTED_PROXIES": ",".join(s.trusted_proxies),
            "ORCA_MAX_CONCURRENCY": str(s.max_concurrency),
            "ORCA_MAX_OUTPUT_BYTES": str(s.max_output_bytes),
            "ORCA_KEEPALIVE_INTERVAL": f"{s.keepalive_interval:g}",
            "ORCA_LOG_LEVEL": s.log_level,
            "ORCA_RATE_LIMIT_STORAGE": s.rate_limit_storage,
        }


@contextmanager
def serve(backend: str = "sqlite", **overrides: Any) -> Iterator[TunedServer]:
    """A fresh ``orca serve`` on ``backend`` ("sqlite" or "postgres") with these settings."""
    with tempfile.TemporaryDirectory(prefix="orca-contract-") as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "var",
            admin_password=ADMIN_PASSWORD,
            secret_key=new_master_key(),
            connect_timeout=3.0,
            rate_limit=UNLIMITED,
            login_rate_limit=UNLIMITED,
        )
        settings = replace(settings, **overrides)
        log = Path(tmp) / "orca.log"
        if backend == "sqlite":
            with TunedServer(settings, log) as server:
                yield server
            return
        with fresh_database() as url, TunedServer(replace(settings, database_url=url), log) as s:
            yield s


# --- tokens ------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def http() -> httpx.Client:
    """One shared client without a base URL (a new httpx client costs ~0.1 s to make)."""
    return httpx.Client(trust_env=False, timeout=30)


def login(base_url: str, username: str, password: str) -> dict[str, Any]:
    """Log in like a client; return the token response."""
    response = http().post(
        f"{base_url}/api/auth/token", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_key(settings: Settings) -> bytes:
    """The key the server signs its tokens with (HKDF of ORCA_SECRET_KEY, as bootstrap does)."""
    assert settings.secret_key, "the server needs an explicit ORCA_SECRET_KEY"
    return derive_key(parse_master_key(settings.secret_key), "orca/api-tokens")


def claims_of(token: str) -> dict[str, Any]:
    """What a token says, without checking its signature."""
    return jwt.decode(token, options={"verify_signature": False})  # type: ignore[no-any-return]


def signed(settings: Settings, claims: dict[str, Any]) -> str:
    """A token signed with the server's own key: only its claims can make it invalid."""
    return jwt.encode(claims, token_key(settings), algorithm="HS256")


def expired(settings: Settings, token: str) -> str:
    """The same token, correctly signed, that expired a minute ago."""
    now = int(time.time())
    return signed(settings, claims_of(token) | {"iat": now - 3600, "exp": now - 60})


def unsigned(token: str) -> str:
    """The same claims with ``alg: none`` and no signature."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims_of(token)).encode())}."


def tampered(token: str) -> str:
    """The same token with one character of its signature changed."""
    head, payload, signature = token.split(".")
    i = len(signature) // 2  # a middle character: every one of its bits is signature
    flipped = "A" if signature[i] != "A" else "B"
    return f"{head}.{payload}.{signature[:i]}{flipped}{signature[i + 1 :]}"


# --- the database as text ----------------------------------------------------------------------


@dataclass(frozen=True)
class Dump:
    views: dict[str, str]  # table name -> every row as text (read models, sessions, ...)
    events: bytes  # every row of the raw event table(s), raw


def _is_event_table(columns: list[str]) -> bool:
    return {"topic", "state"} <= set(columns)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return repr(value).encode()


def dump_database(settings: Settings) -> Dump:
    views: dict[str, str] = {}
    events = b""
    if settings.database_url is None:
        db = sqlite3.connect(f"file:{settings.sqlite_path}?mode=ro", uri=True)
        try:
            names = [
                r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            for name in names:
                cursor = db.execute(f'SELECT * FROM "{name}"')
                columns = [d[0] for d in cursor.description]
                rows = cursor.fetchall()
                if _is_event_table(columns):
                    events += b"\n".join(b"|".join(_as_bytes(v) for v in row) for row in rows)
                else:
                    views[name] = "\n".join(repr(row) for row in rows)
        finally:
            db.close()
        return Dump(views, events)
    with psycopg.connect(settings.database_url) as db:
        names = [
            r[0]
            for r in db.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            ).fetchall()
        ]
        for name in names:
            cursor = db.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(name)))
            columns = [d.name for d in cursor.description or []]
            rows = cursor.fetchall()
            if _is_event_table(columns):
                events += b"\n".join(b"|".join(_as_bytes(v) for v in row) for row in rows)
            else:
                views[name] = "\n".join(repr(row) for row in rows)
    return Dump(views, events)


# --- what every error looks like ---------------------------------------------------------------


def assert_error(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """``status`` with the documented error body; ``field`` named in ``errors[].field``
    (the part before any ``[index]``)."""
    assert response.status_code == status, (response.status_code, response.text[:2000])
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) >= {"detail", "error_type", "errors", "request_id"}, body
    assert isinstance(body["detail"], str) and body["detail"], body
    assert isinstance(body["error_type"], str) and body["error_type"], body
    assert isinstance(body["errors"], list), body
    for error in body["errors"]:
        assert isinstance(error["field"], str) and isinstance(error["message"], str), body
    assert body["request_id"] == response.headers["x-request-id"], body
    if field is not None:  # "a|b": either one will do
        named = {e["field"].split("[")[0] for e in body["errors"]}
        assert named & set(field.split("|")), f"{field!r} not named in {body}"
    return body


def wait_until(check: Callable[[], T], timeout: float = 20, every: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; return that (or fail on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s; last value {value!r}")
        time.sleep(every)
