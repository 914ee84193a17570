"""Secrets are sealed (AES-256-GCM) before they enter an event.

One master key (``ORCA_SECRET_KEY``) yields a separate sub-key per purpose with HKDF, so the
key that seals system credentials is never the key that signs API tokens.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Callable, Collection, Mapping
from typing import Protocol
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE_BYTES = 12
_VERSION = "v1"


class SealError(ValueError):
    """A sealed value cannot be opened: a wrong key, or a tampered or foreign value."""


def new_master_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def parse_master_key(text: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.encode() + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < 32:
        raise ValueError(
            "ORCA_SECRET_KEY must be at least 32 random bytes, base64-encoded "
            '(make one with: python -c "import secrets,base64;'
            'print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())")'
        )
    return key


def derive_key(master: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
        master
    )


class Sealer:
    """Seals and opens small secrets, bound to a context (such as the owning aggregate id)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, context: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plaintext, context)
        return f"{_VERSION}:{base64.b64encode(sealed).decode()}"

    def open(self, sealed: str, context: bytes) -> bytes:
        version, _, body = sealed.partition(":")
        if version != _VERSION:
            raise SealError(f"unknown sealed format {version!r}")
        try:
            raw = base64.b64decode(body, validate=True)
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context)
        except (binascii.Error, InvalidTag) as error:
            raise SealError("sealed value does not open with this ORCA_SECRET_KEY") from error


class KeyStore(Protocol):
    """Wrapped data keys, one per owner, kept outside the event log so they can be destroyed."""

    def get(self, owners: Collection[UUID]) -> dict[UUID, str]: ...  # those that have one
    def add(self, owner: UUID, wrapped: str) -> None: ...  # keeps an existing key
    def delete(self, owner: UUID) -> None: ...
    def rewrap(self, change: Callable[[UUID, str], str]) -> int: ...


class Vault:
    """Envelope encryption: each owner (a system) has its own data key, wrapped by the key
    derived from ``ORCA_SECRET_KEY``. Destroying an owner's data key destroys every copy of
    its secrets in the event log at once (crypto-shredding); rotating the master key rewraps
    the data keys and leaves the log as it is."""

    def __init__(self, key_wrapper: Sealer, keys: KeyStore) -> None:
        self._wrapper = key_wrapper
        self._keys = keys

    def _data_key(self, owner: UUID) -> Sealer:
        wrapped = self._keys.get([owner]).get(owner)
        if wrapped is None:
            self._keys.add(owner, self._wrapper.seal(secrets.token_bytes(32), owner.bytes))
            wrapped = self._keys.get([owner])[owner]
        return Sealer(self._wrapper.open(wrapped, owner.bytes))

    def seal(self, owner: UUID, plaintext: bytes) -> str:
        return self._data_key(owner).seal(plaintext, owner.bytes)

    def open(self, sealed: Mapping[UUID, str]) -> dict[UUID, bytes]:
        """The secrets of these owners, opened with one read of their data keys."""
        wrapped = self._keys.get(sealed.keys())
        opened = {}
        for owner, value in sealed.items():
            if owner not in wrapped:
                raise SealError(f"the secrets of {owner} were destroyed")
            data_key = Sealer(self._wrapper.open(wrapped[owner], owner.bytes))
            opened[owner] = data_key.open(value, owner.bytes)
        return opened

    def shred(self, owner: UUID) -> None:
        self._keys.delete(owner)


def rotate_master_key(keys: KeyStore, old: Sealer, new: Sealer) -> int:
    """Rewrap every data key from the old master key to the new one; return how many."""
    return keys.rewrap(lambda owner, wrapped: new.seal(old.open(wrapped, owner.bytes), owner.bytes))
