"""Typed settings from ``ORCA_*`` environment variables, read once, with loud errors."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import limits
import psycopg


class ConfigError(ValueError):
    """An ``ORCA_*`` variable has a value Orca cannot use."""


def _rate(value: str, name: str) -> str:
    try:
        limits.parse(value)
    except ValueError:
        raise ConfigError(f"ORCA_{name} must look like 100/minute, not {value!r}") from None
    return value


def _networks(value: str) -> tuple[str, ...]:
    nets = tuple(v.strip() for v in value.split(",") if v.strip())
    for net in nets:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(
                f"ORCA_TRUSTED_PROXIES: {net!r} is not an IP address or network"
            ) from None
    return nets


@dataclass(frozen=True, slots=True)
class PostgresDsn:
    host: str
    port: int
    user: str
    password: str
    dbname: str

    def connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        """A connection of its own, outside the pools (LISTEN, advisory locks)."""
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.dbname,
            autocommit=True,
            connect_timeout=5,
        )


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("var")
    database_url: str | None = None
    admin_password: str | None = None
    secret_key: str | None = None
    max_concurrency: int = 10
    max_output_bytes: int = 1024 * 1024
    connect_timeout: float = 10.0
    keepalive_interval: float = 15.0
    log_level: str = "info"
    session_max_seconds: float = 12 * 3600
    rate_limit: str = "100/minute"
    login_rate_limit: str = "10/minute"
    rate_limit_storage: str = "memory://"
    trusted_proxies: tuple[str, ...] = ()
    health_interval: float = 300.0
    worker_lease_seconds: float = 30.0

    @property
    def postgres(self) -> PostgresDsn | None:
        """The PostgreSQL server to use, or None for the embedded SQLite store."""
        if not self.database_url:
            return None
        url = urlsplit(self.database_url)
        if url.scheme not in ("postgresql", "postgres") or not url.path.strip("/"):
            raise ConfigError(
                "ORCA_DATABASE_URL must look like postgresql://user:password@host:5432/dbname"
            )
        return PostgresDsn(
            host=url.hostname or "127.0.0.1",
            port=url.port or 5432,
            user=unquote(url.username or "postgres"),
            password=unquote(url.password or ""),
            dbname=unquote(url.path.strip("/")),
        )

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "orca.sqlite3"

    def to_env(self) -> dict[str, str]:
        """The ``ORCA_*`` variables that ``from_env`` reads back into these settings."""
        return {
            "ORCA_HOST": self.host,
            "ORCA_PORT": str(self.port),
            "ORCA_DATA_DIR": str(self.data_dir),
            "ORCA_DATABASE_URL": self.database_url or "",
            "ORCA_ADMIN_PASSWORD": self.admin_password or "",
            "ORCA_SECRET_KEY": self.secret_key or "",
            "ORCA_MAX_CONCURRENCY": str(self.max_concurrency),
            "ORCA_MAX_OUTPUT_BYTES": str(self.max_output_bytes),
            "ORCA_CONNECT_TIMEOUT": str(self.connect_timeout),
            "ORCA_KEEPALIVE_INTERVAL": str(self.keepalive_interval),
            "ORCA_LOG_LEVEL": self.log_level,
            "ORCA_SESSION_MAX": str(self.session_max_seconds),
            "ORCA_RATE_LIMIT": self.rate_limit,
            "ORCA_LOGIN_RATE_LIMIT": self.login_rate_limit,
            "ORCA_RATE_LIMIT_STORAGE": self.rate_limit_storage,
            "ORCA_TRUSTED_PROXIES": ",".join(self.trusted_proxies),
            "ORCA_HEALTH_INTERVAL": str(self.health_interval),
            "ORCA_WORKER_LEASE": str(self.worker_lease_seconds),
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def text(name: str, default: str | None) -> str | None:
            value = env.get(f"ORCA_{name}", "").strip()
            return value or default

        def number(name: str, default: float, minimum: float, maximum: float) -> float:
            raw = text(name, None)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"ORCA_{name} must be a number, not {raw!r}") from None
            if not minimum <= value <= maximum:
                raise ConfigError(f"ORCA_{name} must be between {minimum:g} and {maximum:g}")
            return value

        settings = cls(
            host=text("HOST", cls.host) or cls.host,
            port=int(number("PORT", cls.port, 1, 65535)),
            data_dir=Path(text("DATA_DIR", str(cls.data_dir)) or cls.data_dir),
            database_url=text("DATABASE_URL", None),
            admin_password=text("ADMIN_PASSWORD", None),
            secret_key=text("SECRET_KEY", None),
            max_concurrency=int(number("MAX_CONCURRENCY", cls.max_concurrency, 1, 10_000)),
            max_output_bytes=int(
                number("MAX_OUTPUT_BYTES", cls.max_output_bytes, 1024, 256 * 1024 * 1024)
            ),
            connect_timeout=number("CONNECT_TIMEOUT", cls.connect_timeout, 0.1, 600),
            keepalive_interval=number("KEEPALIVE_INTERVAL", cls.keepalive_interval, 1, 3600),
            log_level=(text("LOG_LEVEL", cls.log_level) or cls.log_level).lower(),
            session_max_seconds=number("SESSION_MAX", cls.session_max_seconds, 60, 30 * 86400),
            rate_limit=_rate(text("RATE_LIMIT", cls.rate_limit) or cls.rate_limit, "RATE_LIMIT"),
            login_rate_limit=_rate(
                text("LOGIN_RATE_LIMIT", cls.login_rate_limit) or cls.login_rate_limit,
                "LOGIN_RATE_LIMIT",
            ),
            rate_limit_storage=text("RATE_LIMIT_STORAGE", cls.rate_limit_storage)
            or cls.rate_limit_storage,
            trusted_proxies=_networks(text("TRUSTED_PROXIES", "") or ""),
            health_interval=number("HEALTH_INTERVAL", cls.health_interval, 0, 86400),
            worker_lease_seconds=number("WORKER_LEASE", cls.worker_lease_seconds, 1, 3600),
        )
        settings.postgres  # noqa: B018 - validate the URL now, not on first use
        return settings
