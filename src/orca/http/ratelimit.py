"""Requests per client IP on /api (moving window, the ``limits`` library).

Every /api response says where the client stands (``X-RateLimit-*``); a 429 says when to
come back (``Retry-After``). Logins have their own, stricter limit. The client is the socket
peer, unless that peer is a trusted proxy: only then is ``X-Forwarded-For`` believed.
"""

from __future__ import annotations

import ipaddress
import math
import time

from limits import RateLimitItem, parse, strategies
from limits.aio import strategies as aio_strategies
from limits.storage import storage_from_string
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orca.http.errors import error_response

LOGIN_PATH = "/api/auth/token"
TRUST_MEMO = 4096


class RateLimit:
    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: str,
        login_limit: str,
        storage: str,
        trusted_proxies: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self._limit = parse(limit)
        self._login_limit = parse(login_limit)
        # In memory, the limiter is called as it is: its calls never wait. The asynchronous
        # one would hand every request's expiry of old hits to a thread of its own, and
        # that hand-over cost more than everything else the limit does (a fifth of the
        # API's CPU for each job created). Other storages (Redis) are reached asynchronously.
        self._memory: strategies.MovingWindowRateLimiter | None = None
        self._shared: aio_strategies.MovingWindowRateLimiter | None = None
        if storage.startswith("memory"):
            self._memory = strategies.MovingWindowRateLimiter(storage_from_string(storage))
        else:
            self._shared = aio_strategies.MovingWindowRateLimiter(
                storage_from_string(_async_uri(storage))
            )
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in trusted_proxies]
        self._trust: dict[str, bool] = {}  # address -> trusted, as the same peers come back

    def client_ip(self, scope: Scope) -> str:
        peer = (scope.get("client") or ("unknown", 0))[0]
        if not self._is_trusted(peer):
            return str(peer)
        forwarded = ""
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded = value.decode("latin-1")
        # Walk from the nearest hop outwards; the first untrusted address is the client.
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            if not self._is_trusted(hop):
                return hop
        return str(peer)

    def _is_trusted(self, address: str) -> bool:
        if not self._trusted:
            return False
        trusted = self._trust.get(address)
        if trusted is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                return False
            trusted = any(ip in net for net in self._trusted)
            if len(self._trust) >= TRUST_MEMO:
                self._trust.clear()
            self._trust[address] = trusted
        return trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api"):
            await self.app(scope, receive, send)
            return
        client = self.client_ip(scope)
        item: RateLimitItem = self._limit
        if scope["path"] == LOGIN_PATH and scope["method"] == "POST":
            item = self._login_limit
        allowed, (reset, remaining) = await self._hit(item, client)
        headers = [
            (b"x-ratelimit-limit", str(item.amount).encode()),
            (b"x-ratelimit-remaining", str(max(0, remaining)).encode()),
            (b"x-ratelimit-reset", str(math.ceil(reset)).encode()),
        ]
        if not allowed:
            retry_after = max(1, math.ceil(reset - time.time()))
            response = error_response(
                Request(scope),
                429,
                f"rate limit of {item.amount} per {item.get_expiry()} s exceeded;"
                f" retry in {retry_after} s",
                "RateLimitExceeded",
                [],
            )
            response.headers["retry-after"] = str(retry_after)
            response.raw_headers.extend(headers)
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _hit(self, item: RateLimitItem, client: str) -> tuple[bool, tuple[float, int]]:
        """Count the request; whether it is allowed, and the window's reset and remaining."""
        if self._memory is not None:
            return self._memory.hit(item, client), self._memory.get_window_stats(item, client)
        assert self._shared is not None
        allowed = await self._shared.hit(item, client)
        return allowed, await self._shared.get_window_stats(item, client)


def _async_uri(storage: str) -> str:
    return storage if storage.startswith("async+") else f"async+{storage}"
