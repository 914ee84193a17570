"""Run one shell command on a Linux system over SSH.

The only module of Orca that imports asyncssh: every asyncssh, OS and timeout error is turned into
a `RunOutcome` here, so callers never see a protocol exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass, field

import asyncssh

from orca.executor.outcome import CappedBuffer, RunOutcome

__all__ = ["RunOutcome", "SshLimits", "SshTarget", "fingerprint", "run_command"]

_CHUNK_BYTES = 64 * 1024
_TERM_GRACE_SECONDS = 2.0
# After KILL; bounded because a child that escaped with setsid can keep the channel open.
_KILL_WAIT_SECONDS = 2.0
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


@dataclass(frozen=True, slots=True)
class SshLimits:
    connect_timeout: float = 10.0  # TCP connect + SSH login
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 3
    max_output_bytes: int = 1024 * 1024  # kept per stream; the rest is read and discarded


def fingerprint(public_key: str) -> str:
    """Return the key's fingerprint as ssh-keygen prints it ("SHA256:...")."""
    return asyncssh.import_public_key(public_key).get_fingerprint("sha256")


async def run_command(
    target: SshTarget, command: str, *, timeout: float, limits: SshLimits = SshLimits()
) -> RunOutcome:
    """Run `command` on `target`; only cancellation escapes, every other error is an outcome.

    `timeout` bounds the command itself; connecting is bounded by `limits.connect_timeout`.
    """
    host_key = target.host_key
    phase = "connect"
    try:
        if host_key is None:
            host_key = await _fetch_host_key(target, limits)
        conn = await _connect(target, host_key, limits)
        phase = "run"
        try:
            return await _run(conn, command, timeout, limits, host_key, _address(target))
        finally:
            await _close(conn)
    except _HostKeyChanged as exc:
        return RunOutcome.failure(str(exc), host_key=None)
    except Exception as exc:
        return RunOutcome.failure(_describe(exc, target, limits, phase), host_key)


class _HostKeyChanged(Exception):
    """The server offered a key other than the pinned one."""


class _Unusable(Exception):
    """The target's settings cannot work; the message is phrased for the user."""


class _HostKeyWitness(asyncssh.SSHClient):
    """Remembers the key a server offered when it was not the pinned one."""

    def __init__(self) -> None:
        self.offered: asyncssh.SSHKey | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.offered = key
        return False


async def _fetch_host_key(target: SshTarget, limits: SshLimits) -> str:
    key = await asyncio.wait_for(
        asyncssh.get_server_host_key(target.host, target.port, config=None),
        limits.connect_timeout,
    )
    if key is None:
        raise _Unusable(f"{_address(target)} offered no host key to verify")
    return _openssh_public(key)


async def _connect(
    target: SshTarget, host_key: str, limits: SshLimits
) -> asyncssh.SSHClientConnection:
    """Open a logged-in connection to a server proven to hold `host_key`.

    This is the seam for a per-host connection pool: it would hand out a pooled connection here.
    """
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
    witness = _HostKeyWitness()
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
            connect_timeout=limits.connect_timeout,
            login_timeout=limits.connect_timeout,
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
    conn: asyncssh.SSHClientConnection,
    command: str,
    timeout: float,
    limits: SshLimits,
    host_key: str,
    address: str,
) -> RunOutcome:
    process = await conn.create_process(command, encoding=None, request_pty=False)
    process.stdin.write_eof()
    stdout, stderr = CappedBuffer(limits.max_output_bytes), CappedBuffer(limits.max_output_bytes)
    finished = asyncio.ensure_future(_until_exit(process, stdout, stderr))
    try:
        done, _ = await asyncio.wait({finished}, timeout=timeout)
    except asyncio.CancelledError:
        # Closing the channel would leave the remote command running: signal it first.
        await asyncio.shield(_stop(process, finished))
        raise
    if not done:
        await _stop(process, finished)
        return RunOutcome(
            status="timeout",
            exit_code=None,
            stdout=stdout.text(),
            stderr=stderr.text(),
            stdout_truncated=stdout.truncated,
            stderr_truncated=stderr.truncated,
            error_message=f"timed out after {timeout:g} s",
            host_key=host_key,
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
        host_key=host_key,
    )


async def _until_exit(
    process: asyncssh.SSHClientProcess[bytes], stdout: CappedBuffer, stderr: CappedBuffer
) -> None:
    async with asyncio.TaskGroup() as group:
        group.create_task(_drain(process.stdout, stdout))
        group.create_task(_drain(process.stderr, stderr))
    await process.wait_closed()


async def _stop(process: asyncssh.SSHClientProcess[bytes], finished: asyncio.Future[None]) -> None:
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
