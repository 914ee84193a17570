"""Run one shell command on a Linux system over SSH, on a channel of a pooled connection.

With pool.py, the only module of Orca that imports asyncssh: every asyncssh, OS and timeout error
is turned into a `RunOutcome` here, so callers never see a protocol exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import asyncssh

from orca.executor.outcome import CappedBuffer, RunOutcome
from orca.executor.pool import Channel, HostKeyChanged, NotConnected, SshPool, SshTarget, Unusable

__all__ = ["RunOutcome", "fingerprint", "run_command"]

_CHUNK_BYTES = 64 * 1024
_TERM_GRACE_SECONDS = 2.0
# After KILL; bounded because a child that escaped with setsid can keep the channel open.
_KILL_WAIT_SECONDS = 2.0


def fingerprint(public_key: str) -> str:
    """Return the key's fingerprint as ssh-keygen prints it ("SHA256:...")."""
    return asyncssh.import_public_key(public_key).get_fingerprint("sha256")


async def run_command(
    pool: SshPool, target: SshTarget, command: str, *, timeout: float
) -> RunOutcome:
    """Run `command` on `target`; only cancellation escapes, every other error is an outcome.

    `timeout` bounds the command itself; connecting is bounded by the pool's connect timeout.
    A cancelled command is stopped on the host (TERM, then KILL) before the cancellation goes on.
    """
    host_key = target.host_key
    phase = "connect"
    try:
        async with pool.start(target, command) as channel:
            host_key, phase = channel.host_key, "run"
            return await _run(channel, timeout, pool.limits.max_output_bytes, target.address)
    except HostKeyChanged as exc:
        return RunOutcome.failure(str(exc), host_key=None)
    except NotConnected as exc:
        return RunOutcome.failure(_describe(exc.cause, target, pool, "connect"), exc.host_key)
    except Exception as exc:
        return RunOutcome.failure(_describe(exc, target, pool, phase), host_key)


async def _drain(reader: asyncssh.SSHReader[bytes], capture: CappedBuffer) -> None:
    """Read the stream to its end, keeping what fits in `capture` and dropping the rest."""
    while chunk := await reader.read(_CHUNK_BYTES):
        capture.append(chunk)


async def _run(channel: Channel, timeout: float, max_output_bytes: int, address: str) -> RunOutcome:
    process = channel.process
    process.stdin.write_eof()
    stdout, stderr = CappedBuffer(max_output_bytes), CappedBuffer(max_output_bytes)
    finished = asyncio.ensure_future(_until_exit(process, stdout, stderr))
    timed_out = False
    try:
        await asyncio.wait({finished}, timeout=timeout)
        timed_out = not finished.done()
    finally:
        # Timed out or cancelled: letting go of the channel would leave the command running.
        if not finished.done():
            await _stop(channel, finished)
    if timed_out:
        return RunOutcome(
            status="timeout",
            exit_code=None,
            stdout=stdout.text(),
            stderr=stderr.text(),
            stdout_truncated=stdout.truncated,
            stderr_truncated=stderr.truncated,
            error_message=f"timed out after {timeout:g} s",
            host_key=channel.host_key,
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
        host_key=channel.host_key,
    )


async def _until_exit(
    process: asyncssh.SSHClientProcess[bytes], stdout: CappedBuffer, stderr: CappedBuffer
) -> None:
    async with asyncio.TaskGroup() as group:
        group.create_task(_drain(process.stdout, stdout))
        group.create_task(_drain(process.stderr, stderr))
    await process.wait_closed()


async def _stop(channel: Channel, finished: asyncio.Future[None]) -> None:
    """Signal the command to its end, even if cancelled meanwhile (raised after)."""
    stopping = asyncio.ensure_future(_signal(channel, finished))
    cancelled: asyncio.CancelledError | None = None
    while not stopping.done():
        try:
            await asyncio.shield(stopping)
        except asyncio.CancelledError as exc:
            cancelled = exc
    stopping.result()
    if cancelled is not None:
        raise cancelled


async def _signal(channel: Channel, finished: asyncio.Future[None]) -> None:
    """TERM, then KILL after a grace period; OpenSSH signals the command's process group."""
    for signal, wait in (("TERM", _TERM_GRACE_SECONDS), ("KILL", _KILL_WAIT_SECONDS)):
        with contextlib.suppress(OSError):
            channel.process.send_signal(signal)
        done, _ = await asyncio.wait({finished}, timeout=wait)
        if done:
            break
    else:
        finished.cancel()
        await asyncio.wait({finished})
        channel.abandon()
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


def _describe(exc: Exception, target: SshTarget, pool: SshPool, phase: str) -> str:
    address = target.address
    # A dropped connection fails the stdout and stderr readers together, as one group.
    while isinstance(exc, ExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, Unusable):
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
            f"cannot connect to {address}: no SSH login within {pool.limits.connect_timeout:g} s "
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
