"""Users of the API: the first admin, and checking a login."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from orca.application.app import OrcaApplication
from orca.domain.index import NameIndex, index_id
from orca.domain.user import User

USER_NAME = "user"
ADMIN = "admin"

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the user does not exist, so both failures cost the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True, slots=True)
class Principal:
    username: str
    role: str


def find_user(app: OrcaApplication, username: str) -> User | None:
    index = app.find(index_id(USER_NAME, username))
    if not isinstance(index, NameIndex) or index.owner_id is None:
        return None
    user = app.find(index.owner_id)
    return user if isinstance(user, User) else None


def ensure_admin(app: OrcaApplication, password: str | None) -> str | None:
    """Create the first admin if there is none; return the password if Orca generated it."""
    if find_user(app, ADMIN) is not None:
        return None
    generated = None if password else secrets.token_urlsafe(18)
    user = User(username=ADMIN, password_hash=_hasher.hash(password or generated or ""), role=ADMIN)
    index = NameIndex(kind=USER_NAME, name=ADMIN, owner_id=user.id)
    app.commit([index, user], conflict="the admin user was created concurrently")
    return generated


def authenticate(app: OrcaApplication, username: str, password: str) -> Principal | None:
    """The same answer, in about the same time, for an unknown user and a wrong password."""
    user = find_user(app, username)
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or not user.is_active:
        return None
    return Principal(username=user.username, role=user.role)
