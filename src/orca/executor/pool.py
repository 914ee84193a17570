"""SSH connections, pooled: one logged-in connection carries many commands, each on a channel.

A new connection costs ~100 ms (sshd's post-auth setup), a command on an open one 3-5 ms. With
ssh.py, the only module of Orca that imports asyncssh.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Self, TypeVar

import asyncssh

__all__ = [
    "Channel",
    "HostKeyChanged",
    "NotConnected",
    "SshLimits",
    "SshPool",
    "SshTarget",
    "Unusable",
]

T = TypeVar("T")

# OpenSSH's MaxStartups drops bursts of new connections before the login: try again, backing off
# 0.1, 0.2, 0.4, 0.8 s, all within the connect timeout.
_CONNECT_ATTEMPTS = 5
_FIRST_BACKOFF_SECONDS = 0.1
_CLOSE_WAIT_SECONDS = 2.0
_REPIN_HINT = "re-pin it with POST /api/systems/<id>/host-key if the change is expected"


@dataclass(frozen=True, slots=True)
class SshTarget:
    host: str
    port: int
    username: str
    # Secrets stay out of repr(), hence out of logs and tracebacks.
    password: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)  # OpenSSH/PEM private key text
    passphrase: str | None = field(default=None, repr=False)  # for an encrypted private_key
    # Pinned server public key, OpenSSH format "ssh-ed25519 AAAA..."; None = trust on first use.
    host_key: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SshLimits:
    connect_timeout: float = 10.0  # TCP connect + SSH login, retries included
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 3
    max_output_bytes: int = 1024 * 1024  # kept per stream; the rest is read and discarded
    idle_seconds: float = 60.0  # a connection unused for this long is closed
    # Below OpenSSH's default MaxSessions (10), past which a server refuses new channels.
    max_channels_per_connection: int = 8
    max_connections_per_host: int = 4  # then commands wait for a free channel


class HostKeyChanged(Exception):
    """The server offered a key other than the pinned one; the message is phrased for the user."""


class Unusable(Exception):
    """The target's settings cannot work; the message is phrased for the user."""


class NotConnected(Exception):
    """No connection could be opened; `host_key` is the key fetched on first use, if any."""

    def __init__(self, cause: Exception, host_key: str | None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.host_key = host_key


class Channel:
    """A command started on a pooled connection."""

    __slots__ = ("_connection", "process")

    def __init__(self, process: asyncssh.SSHClientProcess[bytes], connection: _Connection) -> None:
        self.process = process
        self._connection = connection

    @property
    def host_key(self) -> str:
        """The key the server proved it holds."""
        return self._connection.host_key

    def abandon(self) -> None:
        """Close the channel of a command that would not end. The channel may stay open on the
        server (a child that escaped with setsid): its connection takes no new commands and
        closes once its last one ends."""
        self.process.close()
        self._connection.reusable = False


class SshPool:
    """Logged-in connections, kept per host, port, user, credentials and pinned host key, so a
    connection is only ever lent to the login that opened it, under the key its server proved.

    Each connection carries at most `max_channels_per_connection` commands and each login at most
    `max_connections_per_host` connections; more commands wait for a channel. A lost connection
    is forgotten and replaced on next use; one unused for `idle_seconds` is closed; `close()`
    closes them all at shutdown. One event loop's: asyncssh ties a connection to its loop.
    """

    def __init__(self, limits: SshLimits = SshLimits()) -> None:
        self.limits = limits
        self._salt = os.urandom(16)
        self._groups: dict[_Key, _Group] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def start(self, target: SshTarget, command: str) -> AsyncIterator[Channel]:
        """Start `command` on a connection to `target`; its channel is freed on the way out.

        A cancellation that arrives while the server starts the command is delivered once it
        has started, at the block's first await: the block, holding the process, can stop it.
        """
        connection, process = await self._start(target, command)
        try:
            yield Channel(process, connection)
        finally:
            self._release(connection)

    async def close(self) -> None:
        """Close the idle connections now and the others after their last command; from now
        on no connection outlives its commands."""
        self._closed = True
        for group in list(self._groups.values()):
            for connection in list(group.connections):
                self._retire(connection)
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def _start(
        self, target: SshTarget, command: str
    ) -> tuple[_Connection, asyncssh.SSHClientProcess[bytes]]:
        for attempt in (1, 2):
            connection = await self._lease(target)
            try:
                process = await _through_cancellation(
                    connection.conn.create_process(command, encoding=None, request_pty=False)
                )
            except asyncssh.ChannelOpenError as exc:
                # The connection died before the server confirmed the channel, so the command
                # never started (an exec refused later might have): try once on another one.
                retry = exc.code == asyncssh.OPEN_CONNECT_FAILED and attempt == 1
                if retry:
                    self._forget(connection)
                self._release(connection)
                if not retry:
                    raise
                continue
            except BaseException:
                self._release(connection)
                raise
            return connection, process
        raise AssertionError("unreachable")

    async def _lease(self, target: SshTarget) -> _Connection:
        """A connection with a channel taken for one command; `_release` it afterwards."""
        key = self._key(target)
        cap = max(1, self.limits.max_channels_per_connection)
        most = max(1, self.limits.max_connections_per_host)
        while True:
            group = self._groups.get(key) or self._groups.setdefault(key, _Group(key))
            room = [c for c in group.connections if c.has_room(cap)]
            if room:
                # The busiest one with room: spare connections go idle and get closed.
                connection = max(room, key=lambda c: c.channels)
                self._take(connection)
                return connection
            # A connection being opened has room for cap - 1 waiters besides its opener.
            if len(group.waiters) >= group.opening * (cap - 1) and (
                len(group.connections) + group.opening < most
            ):
                return await self._open(group, target)
            waiter = asyncio.get_running_loop().create_future()
            group.waiters.append(waiter)
            try:
                failure = await waiter
            finally:
                with contextlib.suppress(ValueError):
                    group.waiters.remove(waiter)
            if failure is not None:
                raise failure

    def _release(self, connection: _Connection) -> None:
        connection.channels -= 1
        if not connection.channels:
            if self._closed or not connection.reusable or connection.conn.is_closed():
                self._retire(connection)
            elif connection in connection.group.connections:
                connection.idle_timer = asyncio.get_running_loop().call_later(
                    self.limits.idle_seconds, self._retire, connection
                )
        self._wake(connection.group)

    def _forget(self, connection: _Connection) -> None:
        """Never lend `connection` again: it is gone, or going."""
        connection.reusable = False
        group = connection.group
        if connection in group.connections:
            group.connections.remove(connection)
            if connection.idle_timer is not None:
                connection.idle_timer.cancel()
            self._drop_if_unused(group)
        self._wake(group)

    def _key(self, target: SshTarget) -> _Key:
        secrets = hashlib.blake2b(key=self._salt, digest_size=32)
        for secret in (target.password, target.private_key, target.passphrase):
            data = b"" if secret is None else b"=" + secret.encode()
            secrets.update(len(data).to_bytes(8, "big") + data)
        pinned = None if target.host_key is None else " ".join(target.host_key.split()[:2])
        return (target.host, target.port, target.username, secrets.digest(), pinned)

    def _take(self, connection: _Connection) -> None:
        if connection.idle_timer is not None:
            connection.idle_timer.cancel()
            connection.idle_timer = None
        connection.channels += 1

    async def _open(self, group: _Group, target: SshTarget) -> _Connection:
        group.opening += 1
        witness = _Witness()
        try:
            conn, host_key = await _open_connection(target, self.limits, witness)
        except BaseException as exc:
            group.opening -= 1
            # Commands waiting for a connection share its failure (connect timeout, refused
            # login) rather than each trying in turn, unless the login has a working one.
            shared = exc if isinstance(exc, Exception) and group.unreachable() else None
            self._wake(group, shared)
            self._drop_if_unused(group)
            raise
        group.opening -= 1
        connection = _Connection(conn, host_key, group)
        witness.on_lost = lambda: self._forget(connection)
        group.connections.append(connection)
        self._take(connection)
        self._wake(group)
        return connection

    def _wake(self, group: _Group, failure: Exception | None = None) -> None:
        waiters, group.waiters = group.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(failure)

    def _retire(self, connection: _Connection) -> None:
        """Close `connection` if no command uses it (else its last one's release will)."""
        if connection.channels or connection.retired:
            return
        connection.retired = True
        self._forget(connection)
        closing = asyncio.get_running_loop().create_task(_close(connection.conn))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    def _drop_if_unused(self, group: _Group) -> None:
        unused = not (group.connections or group.opening or group.waiters)
        if unused and self._groups.get(group.key) is group:
            del self._groups[group.key]


# host, port, username, keyed digest of the credentials, pinned host key (None: first use).
_Key = tuple[str, int, str, bytes, str | None]


class _Connection:
    """One logged-in connection and how many commands it carries."""

    __slots__ = ("channels", "conn", "group", "host_key", "idle_timer", "retired", "reusable")

    def __init__(self, conn: asyncssh.SSHClientConnection, host_key: str, group: _Group) -> None:
        self.conn = conn
        self.host_key = host_key
        self.group = group
        self.channels = 0
        self.idle_timer: asyncio.TimerHandle | None = None
        self.reusable = True  # False once lost, or once a command's channel may stay open on it
        self.retired = False

    def has_room(self, cap: int) -> bool:
        return self.reusable and self.channels < cap and not self.conn.is_closed()


class _Group:
    """The connections of one pool key, and the commands waiting for a channel on them."""

    __slots__ = ("connections", "key", "opening", "waiters")

    def __init__(self, key: _Key) -> None:
        self.key = key
        self.connections: list[_Connection] = []
        self.opening = 0
        # Each waiter is woken with None (look again) or the failure it shares.
        self.waiters: list[asyncio.Future[Exception | None]] = []

    def unreachable(self) -> bool:
        """Whether no open connection could give a waiter a channel."""
        return not any(c.reusable for c in self.connections)


async def _through_cancellation(starting: Awaitable[T]) -> T:
    """Await `starting` to its end even if cancelled meanwhile, then deliver the cancellation at
    the caller's next await: the command may have started, and only the caller can stop it."""
    task = asyncio.ensure_future(starting)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is None:
        return task.result()
    if task.cancelled() or task.exception() is not None:
        raise cancelled
    current = asyncio.current_task()
    assert current is not None
    current.uncancel()  # counted once already: deliver it again, not twice
    current.cancel(*cancelled.args)
    return task.result()


class _Witness(asyncssh.SSHClient):
    """Remembers the key a server offered when it was not the pinned one; reports a lost link."""

    def __init__(self) -> None:
        self.offered: asyncssh.SSHKey | None = None
        self.on_lost: Callable[[], None] | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.offered = key
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.on_lost is not None:
            self.on_lost()


async def _open_connection(
    target: SshTarget, limits: SshLimits, witness: _Witness
) -> tuple[asyncssh.SSHClientConnection, str]:
    """Connect and log in, retrying connections dropped before the login; trust on first use."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.connect_timeout
    host_key = target.host_key
    delay = _FIRST_BACKOFF_SECONDS
    for attempt in range(1, _CONNECT_ATTEMPTS + 1):
        try:
            if host_key is None:
                host_key = await _fetch_host_key(target, _left(deadline))
            return await _connect(target, host_key, limits, _left(deadline), witness), host_key
        except HostKeyChanged:
            raise
        except Exception as exc:
            if attempt == _CONNECT_ATTEMPTS or not _dropped(exc) or loop.time() + delay >= deadline:
                raise NotConnected(exc, host_key) from exc
        await asyncio.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


def _dropped(exc: Exception) -> bool:
    """Whether the server hung up before the login, as OpenSSH does past MaxStartups."""
    return isinstance(exc, asyncssh.ConnectionLost | ConnectionResetError) or (
        type(exc) is asyncssh.DisconnectError
    )


def _left(deadline: float) -> float:
    return max(deadline - asyncio.get_running_loop().time(), 0.001)


async def _fetch_host_key(target: SshTarget, timeout: float) -> str:
    key = await asyncio.wait_for(
        asyncssh.get_server_host_key(target.host, target.port, config=None), timeout
    )
    if key is None:
        raise Unusable(f"{target.address} offered no host key to verify")
    algorithm, data = key.export_public_key("openssh").decode("ascii").split()[:2]
    return f"{algorithm} {data}"


async def _connect(
    target: SshTarget, host_key: str, limits: SshLimits, timeout: float, witness: _Witness
) -> asyncssh.SSHClientConnection:
    """Open a logged-in connection to a server proven to hold `host_key`."""
    address = target.address
    try:
        pinned = asyncssh.import_public_key(host_key)
    except asyncssh.KeyImportError:
        raise Unusable(
            f"the pinned host key for {address} is not an OpenSSH public key; {_REPIN_HINT}"
        ) from None
    client_keys = await _client_keys(target)
    methods = (["publickey"] if client_keys else []) + (
        ["keyboard-interactive", "password"] if target.password is not None else []
    )
    if not methods:
        raise Unusable(f"no password or private key is configured for user '{target.username}'")
    try:
        return await asyncssh.connect(
            target.host,
            target.port,
            username=target.username,
            password=target.password,
            client_keys=client_keys,  # None disables keys; () would load ~/.ssh/id_*
            known_hosts=([pinned], [], [], [], [], [], []),
            client_factory=lambda: witness,
            config=None,
            agent_path=None,
            agent_forwarding=False,
            x509_trusted_certs=None,
            gss_kex=False,
            gss_auth=False,
            preferred_auth=methods,
            request_pty=False,
            encoding=None,
            connect_timeout=timeout,
            login_timeout=timeout,
            keepalive_interval=limits.keepalive_interval,
            keepalive_count_max=limits.keepalive_count_max,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        if witness.offered is None:
            raise HostKeyChanged(
                f"host key for {address} could not be verified: {exc.reason}; {_REPIN_HINT}"
            ) from None
        raise HostKeyChanged(
            f"host key for {address} changed (pinned {pinned.get_fingerprint('sha256')}, "
            f"offered {witness.offered.get_fingerprint('sha256')}); {_REPIN_HINT}"
        ) from None
    except asyncssh.KeyExchangeFailed as exc:
        if "host key" not in exc.reason:
            raise
        raise HostKeyChanged(
            f"host key for {address} changed (pinned {pinned.get_fingerprint('sha256')}, "
            f"the server offers no {pinned.get_algorithm()} key); {_REPIN_HINT}"
        ) from None


async def _client_keys(target: SshTarget) -> list[asyncssh.SSHKey] | None:
    if target.private_key is None:
        return None
    try:
        # Decrypting a passphrase-protected key runs a deliberately slow KDF: keep it off the loop.
        key = await asyncio.to_thread(
            asyncssh.import_private_key, target.private_key, target.passphrase
        )
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
        raise Unusable(f"cannot load the private key for user '{target.username}': {exc}") from None
    return [key]


async def _close(conn: asyncssh.SSHClientConnection) -> None:
    conn.close()
    try:
        await asyncio.wait_for(conn.wait_closed(), _CLOSE_WAIT_SECONDS)
    except TimeoutError:
        conn.abort()
