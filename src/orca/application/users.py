"""Users of the API and their sessions: the first admin, logins, refreshes, administration."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from orca.application.app import OrcaApplication
from orca.domain.errors import Conflict, Invalid, NotFound
from orca.domain.index import NameIndex, index_id
from orca.domain.user import Session, User

USER_NAME = "user"
ADMIN = "admin"
MIN_PASSWORD_LENGTH = 8

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the user does not exist, so both failures cost the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking, and which login (session) they ask through."""

    username: str
    role: str
    session_id: UUID
    credentials_version: int


@dataclass(frozen=True, slots=True)
class Login:
    principal: Principal
    refresh_id: str
    expires_at: datetime
    position: int


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Invalid("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")


def find_user(app: OrcaApplication, username: str) -> User | None:
    index = app.find(index_id(USER_NAME, username))
    if not isinstance(index, NameIndex) or index.owner_id is None:
        return None
    user = app.find(index.owner_id)
    return user if isinstance(user, User) else None


def get_user(app: OrcaApplication, username: str) -> User:
    user = find_user(app, username)
    if user is None:
        raise NotFound(f"user {username!r} not found")
    return user


def add_user(app: OrcaApplication, username: str, password: str, role: str) -> int:
    _check_password(password)
    user = User(username=username, password_hash=_hasher.hash(password), role=role)
    index = app.find(index_id(USER_NAME, username))
    if isinstance(index, NameIndex):
        index.reclaim(user.id)
    else:
        index = NameIndex(kind=USER_NAME, name=username, owner_id=user.id)
    return app.commit([index, user], conflict=f"user {username!r} already exists")


def ensure_admin(app: OrcaApplication, password: str | None) -> str | None:
    """Create the first admin if there is none; return the password if Orca generated it."""
    if find_user(app, ADMIN) is not None:
        return None
    generated = None if password else secrets.token_urlsafe(18)
    try:
        add_user(app, ADMIN, password or generated or "", ADMIN)
    except Conflict:  # another process created it at the same moment
        return None
    return generated


def change_password(app: OrcaApplication, username: str, password: str, *, by: str) -> int:
    _check_password(password)
    user = get_user(app, username)
    user.change_password(_hasher.hash(password), by=by)
    return app.commit([user], conflict=f"user {username!r} changed concurrently")


def set_role(app: OrcaApplication, username: str, role: str, *, by: str) -> int:
    user = get_user(app, username)
    if user.username == by and role != ADMIN:
        raise Conflict("an admin cannot take their own admin role away")
    user.change_role(role, by=by)
    return app.commit([user], conflict=f"user {username!r} changed concurrently")


def set_active(app: OrcaApplication, username: str, active: bool, *, by: str) -> int:
    user = get_user(app, username)
    if user.username == by and not active:
        raise Conflict("you cannot disable yourself")
    if active:
        user.enable(by=by)
    else:
        user.disable(by=by)
    return app.commit([user], conflict=f"user {username!r} changed concurrently")


def authenticate(app: OrcaApplication, username: str, password: str) -> User | None:
    """The same answer, in about the same time, for an unknown user and a wrong password."""
    user = find_user(app, username)
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or not user.is_active:
        return None
    return user


def login(
    app: OrcaApplication, username: str, password: str, session_max: timedelta
) -> Login | None:
    user = authenticate(app, username, password)
    if user is None:
        return None
    session = Session(
        user_id=user.id,
        username=user.username,
        credentials_version=user.credentials_version,
        refresh_id=secrets.token_urlsafe(16),
        expires_at=datetime.now(UTC) + session_max,
    )
    position = app.commit([session], conflict="session id collision")
    return _login(user, session, position)


def _login(user: User, session: Session, position: int) -> Login:
    return Login(
        principal=Principal(
            username=user.username,
            role=user.role,
            session_id=session.id,
            credentials_version=user.credentials_version,
        ),
        refresh_id=session.refresh_id,
        expires_at=session.expires_at,
        position=position,
    )


def refresh(app: OrcaApplication, session_id: UUID, presented: str) -> Login | int:
    """Rotate the session's refresh token. A refusal is the position to wait for instead:
    a spent token revokes the whole family, and the revocation must show before answering."""
    session = app.find(session_id)
    if not isinstance(session, Session) or session.revoked:
        return 0
    user = app.find(session.user_id)
    if (
        not isinstance(user, User)
        or not user.is_active
        or user.credentials_version != session.credentials_version
        or session.expires_at <= datetime.now(UTC)
    ):
        return 0
    session.rotate(presented, secrets.token_urlsafe(16))
    try:
        position = app.commit([session], conflict="the refresh token was used concurrently")
    except Conflict:
        return 0
    if session.revoked:
        return position
    return _login(user, session, position)


def logout(app: OrcaApplication, session_id: UUID) -> int | None:
    session = app.find(session_id)
    if not isinstance(session, Session) or session.revoked:
        return None
    session.revoke("logged out")
    return app.commit([session], conflict="session changed concurrently")
