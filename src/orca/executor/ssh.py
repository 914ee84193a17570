"""Run one shell command on a Linux system over SSH.

The only module of Orca that imports asyncssh: every asyncssh, OS and timeout error is turned into
a `RunOutcome` here, so callers never see a protocol exception.

Connections are pooled per host, user, credentials and pinned host key on the running event loop
(a new connection costs ~100 ms, a command on an open one 3-5 ms): `close_pool()` at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncssh

from orca.executor.outcome import CappedBuffer, RunOutcome

__all__ = ["RunOutcome", "SshLimits", "SshTarget", "close_pool", "fingerprint", "run_command"]

_CHUNK_BYTES = 64 * 1024
_TERM_GRACE_SECONDS = 2.0
# After KILL; bounded because a child that escaped with setsid can keep the channel open.
_KILL_WAIT_SECONDS = 2.0
_CLOSE_WAIT_SECONDS = 2.0
# OpenSSH's MaxStartups drops bursts of new connections before the login: try again, backing off
# 0.1, 0.2, 0.4, 0.8 s, all within the connect timeout.
_CONNECT_ATTEMPTS = 5
_FIRST_BACKOFF_SECONDS = 0.1
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


@dataclass(frozen=True, slots=True)
class SshLimits:
    connect_timeout: float = 10.0  # TCP connect + SSH login, retries included
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 3
    max_output_bytes: int = 1024 * 1024  # kept per stream; the rest is read and discarded
    idle_seconds: float = 60.0  # a pooled connection unused for this long is closed
    # Below OpenSSH's default MaxSessions (10), past which a server refuses new channels.
    max_channels_per_connection: int = 8
    max_connections_per_host: int = 4  # then commands wait for a free channel


def fingerprint(public_key: str) -> str:
    """Return the key's fingerprint as ssh-keygen prints it ("SHA256:...")."""
    return asyncssh.import_public_key(public_key).get_fingerprint("sha256")


async def run_command(
    target: SshTarget, command: str, *, timeout: float, limits: SshLimits = SshLimits()
) -> RunOutcome:
    """Run `command` on `target`; only cancellation escapes, every other error is an outcome.

    `timeout` bounds the command itself; connecting is bounded by `limits.connect_timeout`.
    """
    pool = _running_pool()
    host_key = target.host_key
    phase = "connect"
    try:
        pooled, process = await _start(pool, target, command, limits)
        host_key, phase = pooled.host_key, "run"
        try:
            return await _run(process, pooled, timeout, limits, _address(target))
        finally:
            pool.release(pooled, limits)
    except _HostKeyChanged as exc:
        return RunOutcome.failure(str(exc), host_key=None)
    except _NotConnected as exc:
        return RunOutcome.failure(_describe(exc.cause, target, limits, "connect"), exc.host_key)
    except Exception as exc:
        return RunOutcome.failure(_describe(exc, target, limits, phase), host_key)


async def close_pool() -> None:
    """Close the running event loop's pooled connections, once their commands have ended.

    Call it at shutdown, after the executions ended or were cancelled. A loop that ends without
    it (`asyncio.run` returning) still closes them, when its remaining tasks are cancelled.
    """
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.close()


async def _start(
    pool: _Pool, target: SshTarget, command: str, limits: SshLimits
) -> tuple[_Pooled, asyncssh.SSHClientProcess[bytes]]:
    for attempt in (1, 2):
        pooled = await pool.lease(target, limits)
        try:
            process = await pooled.conn.create_process(command, encoding=None, request_pty=False)
        except asyncssh.ChannelOpenError as exc:
            # The connection died before the server confirmed the channel, so the command never
            # started (an exec refused later might have): safe to try once on another connection.
            retry = exc.code == asyncssh.OPEN_CONNECT_FAILED and attempt == 1
            if retry:
                pool.forget(pooled)
            pool.release(pooled, limits)
            if not retry:
                raise
            continue
        except BaseException:
            pool.release(pooled, limits)
            raise
        return pooled, process
    raise AssertionError("unreachable")


# --- the pool ------------------------------------------------------------------------------------

# host, port, username, digest of the credentials, pinned host key (None: trust on first use).
# The pinned key is part of the key: a connection is only ever reused under the key it proved.
_PoolKey = tuple[str, int, str, bytes, str | None]


class _Pooled:
    """One logged-in connection and the channels (commands) open on it."""

    __slots__ = ("channels", "conn", "group", "host_key", "idle_timer", "reusable")

    def __init__(self, conn: asyncssh.SSHClientConnection, host_key: str, group: _Group) -> None:
        self.conn = conn
        self.host_key = host_key  # the key this server proved it holds
        self.group = group
        self.channels = 0
        self.idle_timer: asyncio.TimerHandle | None = None
        # False once a channel may be left open on it (a stopped command's escaped child): no new
        # commands then, it closes when its last command ends.
        self.reusable = True

    def has_room(self, cap: int) -> bool:
        return self.reusable and self.channels < cap and not self.conn.is_closed()


class _Group:
    """The connections of one pool key, and the commands waiting for a channel on them."""

    __slots__ = ("connections", "key", "opening", "waiters")

    def __init__(self, key: _PoolKey) -> None:
        self.key = key
        self.connections: list[_Pooled] = []
        self.opening = 0
        # Each waiter is woken with None (look again) or the failure it shares.
        self.waiters: list[asyncio.Future[BaseException | None]] = []

    def unreachable(self) -> bool:
        """Whether no open connection could give a waiter a channel."""
        return not any(p.reusable for p in self.connections)


class _Pool:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._salt = os.urandom(16)
        self._groups: dict[_PoolKey, _Group] = {}
        self._channels = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._stop = asyncio.Event()
        self._closing: set[asyncio.Task[None]] = set()
        # Closes everything on close_pool(), or when the loop's last tasks are cancelled.
        self._guard = loop.create_task(self._close_when_stopped(), name="orca ssh pool")

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    async def lease(self, target: SshTarget, limits: SshLimits) -> _Pooled:
        """A connection with a channel reserved for one command; `release` it afterwards."""
        key = self._key(target)
        cap = max(1, limits.max_channels_per_connection)
        while True:
            group = self._groups.get(key) or self._groups.setdefault(key, _Group(key))
            room = [p for p in group.connections if p.has_room(cap)]
            if room:
                # The busiest one with room: spare connections go idle and get closed.
                pooled = max(room, key=lambda p: p.channels)
                self._take(pooled)
                return pooled
            # Connections being opened have room for cap - 1 waiters each besides their opener.
            expected = group.opening * (cap - 1)
            if len(group.waiters) >= expected and (
                len(group.connections) + group.opening < max(1, limits.max_connections_per_host)
            ):
                return await self._open(group, target, limits)
            waiter = self._loop.create_future()
            group.waiters.append(waiter)
            try:
                failure = await waiter
            finally:
                with contextlib.suppress(ValueError):
                    group.waiters.remove(waiter)
            if failure is not None:
                raise failure

    def release(self, pooled: _Pooled, limits: SshLimits) -> None:
        pooled.channels -= 1
        self._channels -= 1
        if not self._channels:
            self._drained.set()
        if not pooled.channels:
            if not pooled.reusable or self.stopped or pooled.conn.is_closed():
                self._retire(pooled)
            elif pooled in pooled.group.connections:
                pooled.idle_timer = self._loop.call_later(limits.idle_seconds, self._retire, pooled)
        self._wake(pooled.group)

    def forget(self, pooled: _Pooled) -> None:
        """Never hand `pooled` out again: its connection is gone."""
        pooled.reusable = False
        group = pooled.group
        if pooled in group.connections:
            group.connections.remove(pooled)
            if pooled.idle_timer is not None:
                pooled.idle_timer.cancel()
            self._drop_if_unused(group)
        self._wake(group, None)

    async def close(self) -> None:
        self._stop.set()
        await asyncio.wait({self._guard})

    def _key(self, target: SshTarget) -> _PoolKey:
        secrets = hashlib.blake2b(key=self._salt, digest_size=32)
        for secret in (target.password, target.private_key, target.passphrase):
            data = b"" if secret is None else b"=" + secret.encode()
            secrets.update(len(data).to_bytes(8, "big") + data)
        pinned = None if target.host_key is None else " ".join(target.host_key.split()[:2])
        return (target.host, target.port, target.username, secrets.digest(), pinned)

    def _take(self, pooled: _Pooled) -> None:
        if pooled.idle_timer is not None:
            pooled.idle_timer.cancel()
            pooled.idle_timer = None
        pooled.channels += 1
        self._channels += 1
        self._drained.clear()

    async def _open(self, group: _Group, target: SshTarget, limits: SshLimits) -> _Pooled:
        group.opening += 1
        try:
            witness = _HostKeyWitness()
            conn, host_key = await _open_connection(target, limits, witness)
        except BaseException as exc:
            group.opening -= 1
            # Commands waiting for a connection share the failure (connect timeout, refused login)
            # rather than each trying in turn, unless the host already has a working one.
            shared = exc if isinstance(exc, Exception) and group.unreachable() else None
            self._wake(group, shared)
            self._drop_if_unused(group)
            raise
        group.opening -= 1
        pooled = _Pooled(conn, host_key, group)
        witness.on_lost = lambda: self.forget(pooled)
        group.connections.append(pooled)
        self._take(pooled)
        self._wake(group)
        return pooled

    def _wake(self, group: _Group, failure: BaseException | None = None) -> None:
        waiters, group.waiters = group.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(failure)

    def _retire(self, pooled: _Pooled, *, force: bool = False) -> None:
        """Close a connection nobody uses (or, with `force`, one still in use: at shutdown)."""
        if pooled.channels and not force:
            return
        self.forget(pooled)
        closing = self._loop.create_task(_close(pooled.conn))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    def _drop_if_unused(self, group: _Group) -> None:
        unused = not (group.connections or group.opening or group.waiters)
        if unused and self._groups.get(group.key) is group:
            del self._groups[group.key]

    async def _close_when_stopped(self) -> None:
        try:
            await self._stop.wait()
        finally:
            self._stop.set()
            # Commands being cancelled with the loop still signal TERM/KILL over their channel.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._drained.wait(), _TERM_GRACE_SECONDS + _KILL_WAIT_SECONDS + 1
                )
            for group in list(self._groups.values()):
                for pooled in list(group.connections):
                    self._retire(pooled, force=True)
            await asyncio.gather(*self._closing, return_exceptions=True)
            if _pools.get(self._loop) is self:
                del _pools[self._loop]


# One pool per event loop: asyncssh connections belong to the loop that opened them.
_pools: dict[asyncio.AbstractEventLoop, _Pool] = {}


def _running_pool() -> _Pool:
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None or pool.stopped:
        for gone in [other for other in _pools if other.is_closed()]:
            del _pools[gone]
        pool = _pools[loop] = _Pool(loop)
    return pool


# --- one connection ------------------------------------------------------------------------------


class _HostKeyChanged(Exception):
    """The server offered a key other than the pinned one."""


class _Unusable(Exception):
    """The target's settings cannot work; the message is phrased for the user."""


class _NotConnected(Exception):
    """No connection could be opened; `host_key` is the key fetched on first use, if any."""

    def __init__(self, cause: Exception, host_key: str | None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.host_key = host_key


class _HostKeyWitness(asyncssh.SSHClient):
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
    target: SshTarget, limits: SshLimits, witness: _HostKeyWitness
) -> tuple[asyncssh.SSHClientConnection, str]:
    """Connect and log in, retrying connections dropped before the login; trust on first use."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.connect_timeout
    host_key = target.host_key
    delay = _FIRST_BACKOFF_SECONDS
    attempt = 1
    while True:
        try:
            if host_key is None:
                host_key = await _fetch_host_key(target, _left(deadline))
            conn = await _connect(target, host_key, limits, _left(deadline), witness)
            return conn, host_key
        except _HostKeyChanged:
            raise
        except Exception as exc:
            if attempt == _CONNECT_ATTEMPTS or not _dropped(exc) or loop.time() + delay >= deadline:
                raise _NotConnected(exc, host_key) from exc
        await asyncio.sleep(delay)
        delay *= 2
        attempt += 1


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
        raise _Unusable(f"{_address(target)} offered no host key to verify")
    return _openssh_public(key)


async def _connect(
    target: SshTarget, host_key: str, limits: SshLimits, timeout: float, witness: _HostKeyWitness
) -> asyncssh.SSHClientConnection:
    """Open a logged-in connection to a server proven to hold `host_key`."""
    address = _address(target)
    try:
        pinned = asyncssh.import_public_key(host_key)
    except asyncssh.KeyImportError:
        raise _Unusable(
            f"the pinned host key for {address} is not an OpenSSH public key; {_REPIN_HINT}"
        ) from None
    client_keys = await _client_keys(target)
    methods = (["publickey"] if client_keys else []) + (
        ["keyboard-interactive", "password"] if target.password is not None else []
    )
    if not methods:
        raise _Unusable(f"no password or private key is configured for user '{target.username}'")
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
            raise _HostKeyChanged(
                f"host key for {address} could not be verified: {exc.reason}; {_REPIN_HINT}"
            ) from None
        raise _HostKeyChanged(
            f"host key for {address} changed (pinned {pinned.get_fingerprint('sha256')}, "
            f"offered {witness.offered.get_fingerprint('sha256')}); {_REPIN_HINT}"
        ) from None
    except asyncssh.KeyExchangeFailed as exc:
        if "host key" not in exc.reason:
            raise
        raise _HostKeyChanged(
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
        raise _Unusable(
            f"cannot load the private key for user '{target.username}': {exc}"
        ) from None
    return [key]


async def _drain(reader: asyncssh.SSHReader[bytes], capture: CappedBuffer) -> None:
    """Read the stream to its end, keeping what fits in `capture` and dropping the rest."""
    while chunk := await reader.read(_CHUNK_BYTES):
        capture.append(chunk)


async def _run(
    process: asyncssh.SSHClientProcess[bytes],
    pooled: _Pooled,
    timeout: float,
    limits: SshLimits,
    address: str,
) -> RunOutcome:
    process.stdin.write_eof()
    stdout, stderr = CappedBuffer(limits.max_output_bytes), CappedBuffer(limits.max_output_bytes)
    finished = asyncio.ensure_future(_until_exit(process, stdout, stderr))
    try:
        done, _ = await asyncio.wait({finished}, timeout=timeout)
    except asyncio.CancelledError:
        # Closing the channel would leave the remote command running: signal it first.
        await asyncio.shield(_stop(process, finished, pooled))
        raise
    if not done:
        await _stop(process, finished, pooled)
        return RunOutcome(
            status="timeout",
            exit_code=None,
            stdout=stdout.text(),
            stderr=stderr.text(),
            stdout_truncated=stdout.truncated,
            stderr_truncated=stderr.truncated,
            error_message=f"timed out after {timeout:g} s",
            host_key=pooled.host_key,
        )
    finished.result()
    exit_code, error_message = _exit_of(process, address)
    return RunOutcome(
        status="completed" if exit_code == 0 else "failed",
        exit_code=exit_code,
        stdout=stdout.text(),
        stderr=stderr.text(),
        stdout_truncated=stdout.truncated,
        stderr_truncated=stderr.truncated,
        error_message=error_message,
        host_key=pooled.host_key,
    )


async def _until_exit(
    process: asyncssh.SSHClientProcess[bytes], stdout: CappedBuffer, stderr: CappedBuffer
) -> None:
    async with asyncio.TaskGroup() as group:
        group.create_task(_drain(process.stdout, stdout))
        group.create_task(_drain(process.stderr, stderr))
    await process.wait_closed()


async def _stop(
    process: asyncssh.SSHClientProcess[bytes], finished: asyncio.Future[None], pooled: _Pooled
) -> None:
    """TERM, then KILL after a grace period; OpenSSH signals the command's process group."""
    for signal, wait in (("TERM", _TERM_GRACE_SECONDS), ("KILL", _KILL_WAIT_SECONDS)):
        with contextlib.suppress(OSError):
            process.send_signal(signal)
        done, _ = await asyncio.wait({finished}, timeout=wait)
        if done:
            break
    else:
        finished.cancel()
        await asyncio.wait({finished})
        # Its channel may stay open on the server: no new commands on this connection.
        process.close()
        pooled.reusable = False
    if not finished.cancelled():
        finished.exception()  # the command was stopped on purpose: a late read error is moot


def _exit_of(
    process: asyncssh.SSHClientProcess[bytes], address: str
) -> tuple[int | None, str | None]:
    if process.exit_signal is not None:
        return None, f"the command was killed by signal {process.exit_signal[0]}"
    if process.exit_status is None:
        return None, f"{address} closed the session before the command reported an exit status"
    return process.exit_status, None


async def _close(conn: asyncssh.SSHClientConnection) -> None:
    conn.close()
    try:
        await asyncio.wait_for(conn.wait_closed(), _CLOSE_WAIT_SECONDS)
    except TimeoutError:
        conn.abort()


def _describe(exc: Exception, target: SshTarget, limits: SshLimits, phase: str) -> str:
    address = _address(target)
    if isinstance(exc, _Unusable):
        return str(exc)
    if isinstance(exc, asyncssh.PermissionDenied):
        return f"authentication failed for user '{target.username}' on {address}"
    if isinstance(exc, asyncssh.ConnectionLost):
        return f"connection to {address} lost: {exc.reason}"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"{address} closed the SSH connection: {exc.reason}"
    if isinstance(exc, asyncssh.ChannelOpenError):
        return f"{address} refused to start the command: {exc.reason}"
    if phase == "connect" and isinstance(exc, TimeoutError):
        return (
            f"cannot connect to {address}: no SSH login within {limits.connect_timeout:g} s "
            "(connect timeout)"
        )
    if isinstance(exc, OSError):
        return f"{_phase_verb(phase, address)}: {_os_reason(exc)}"
    return f"{_phase_verb(phase, address)}: unexpected {type(exc).__name__}: {exc}"


def _phase_verb(phase: str, address: str) -> str:
    return f"cannot connect to {address}" if phase == "connect" else f"lost {address}"


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return str(exc.strerror)
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)
    return str(exc)


def _address(target: SshTarget) -> str:
    return f"{target.host}:{target.port}"


def _openssh_public(key: asyncssh.SSHKey) -> str:
    algorithm, data = key.export_public_key("openssh").decode("ascii").split()[:2]
    return f"{algorithm} {data}"
