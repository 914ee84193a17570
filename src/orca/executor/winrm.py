"""Run one command on a Windows system over WinRM (WS-Management).

The only module of Orca that imports winrm: every pywinrm, requests and OS error is turned into a
`RunOutcome` here, so callers never see a protocol exception. pywinrm blocks, so a command runs in
a thread of a dedicated pool, on a `Protocol` of its own (NTLM authenticates one TCP connection:
a shared `Protocol` breaks). Orca keeps its own deadline and stops a command with Signal terminate
sent from a second `Protocol`, because the first one is blocked in a long-polling Receive.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import requests
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol

from orca.executor.outcome import CappedBuffer, RunOutcome

_UTF8_CODEPAGE = 65001  # ask the shell for UTF-8 output; anything else is decoded with replacement
# A Receive may block for the whole OperationTimeout: the HTTP read must wait longer than that.
_READ_MARGIN_SECONDS = 10
_SIGNAL_WAIT_SECONDS = 5.0  # bound on Signal terminate from the second Protocol
_WORKER_WAIT_SECONDS = 5.0  # bound on the worker's last Receive and clean-up after a stop
_SIGNAL_THREADS = 4  # a pool of their own, so stops never queue behind long-polling Receives
_BASIC_OVER_HTTP = "basic authentication is only allowed over HTTPS; use ntlm or https"


@dataclass(frozen=True, slots=True)
class WinrmTarget:
    host: str
    port: int  # 5985 http, 5986 https
    username: str
    # Secrets stay out of repr(), hence out of logs and tracebacks.
    password: str = field(repr=False)
    transport: Literal["ntlm", "basic"] = "ntlm"
    https: bool = False
    verify_tls: bool = True  # against the operating system's trust store


@dataclass(frozen=True, slots=True)
class WinrmLimits:
    connect_timeout: float = 10.0  # TCP connect, per HTTP request
    operation_timeout: float = 20.0  # WS-Man OperationTimeout: how long one Receive long-polls
    max_output_bytes: int = 1024 * 1024  # kept per stream; the rest is received and discarded
    threads: int = 32  # size of the dedicated thread pool


async def run_command(
    target: WinrmTarget, command: str, *, timeout: float, limits: WinrmLimits = WinrmLimits()
) -> RunOutcome:
    """Run `command` on `target`; only cancellation escapes, every other error is an outcome.

    `timeout` bounds the command itself, from the moment the host accepted it; opening the shell
    is bounded by `limits.connect_timeout` and the HTTP read timeout.
    """
    if target.transport == "basic" and not target.https:
        return RunOutcome.failure(_BASIC_OVER_HTTP)
    if not target.username:
        return RunOutcome.failure(f"no username is configured for {_address(target)}")
    run = _Run(target, limits, asyncio.get_running_loop())
    try:
        return await _supervise(run, command, timeout)
    except Exception as exc:
        message = _describe(exc, target, limits, run.phase)
        if len(target.password) >= 4:  # belt and braces: no library message may leak it
            message = message.replace(target.password, "***")
        return RunOutcome.failure(message)


class _Run:
    """One command on one Protocol: `execute` runs in a pool thread, the rest on the event loop."""

    def __init__(
        self, target: WinrmTarget, limits: WinrmLimits, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.target = target
        self.limits = limits
        self.phase: Literal["connect", "run"] = "connect"
        self.stop = threading.Event()
        self.started: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._lock = threading.Lock()
        self._ids: tuple[str, str] | None = None
        self._stdout = CappedBuffer(limits.max_output_bytes)
        self._stderr = CappedBuffer(limits.max_output_bytes)

    def execute(self, command: str, timeout: float) -> int | None:
        """Run the command to its end; None when it was stopped or ran out of time."""
        try:
            return self._execute(command, timeout)
        except StopIteration:  # pywinrm's next() on a reply lacking an element; no Future takes it
            raise WinRMError("the host's answer lacks an expected element") from None

    def _execute(self, command: str, timeout: float) -> int | None:
        protocol = _protocol(self.target, self.limits)
        try:
            shell_id = protocol.open_shell(codepage=_UTF8_CODEPAGE)
            try:
                if self.stop.is_set():
                    return None
                command_id = protocol.run_command(shell_id, command)
                try:
                    with self._lock:
                        self._ids = (shell_id, command_id)
                    self.phase = "run"
                    self._announce_start()
                    return self._receive(protocol, shell_id, command_id, timeout)
                finally:
                    # Signal terminate: ends a command that is still running, frees a finished one.
                    _quietly(protocol.cleanup_command, shell_id, command_id)
            finally:
                _quietly(protocol.close_shell, shell_id, close_session=False)
        finally:
            protocol.transport.close_session()

    def _receive(
        self, protocol: Protocol, shell_id: str, command_id: str, timeout: float
    ) -> int | None:
        # The event loop owns the deadline and sets `stop`; this one is a backstop checked
        # between rounds, for a loop that can no longer tell us.
        deadline = time.monotonic() + timeout
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                stdout, stderr, exit_code, done = protocol.get_command_output_raw(
                    shell_id, command_id
                )
            except WinRMOperationTimeoutError:
                continue  # a long-poll with nothing to say: ask again
            with self._lock:
                self._stdout.append(stdout)
                self._stderr.append(stderr)
            if done:
                return exit_code
        return None

    def _announce_start(self) -> None:
        def announce() -> None:
            if not self.started.done():
                self.started.set_result(None)

        try:
            self._loop.call_soon_threadsafe(announce)
        except RuntimeError:  # the loop is closed; nobody is waiting any more
            self.stop.set()

    def ids(self) -> tuple[str, str] | None:
        with self._lock:
            return self._ids

    def outcome(
        self,
        status: Literal["completed", "failed", "timeout"],
        exit_code: int | None,
        error_message: str | None,
    ) -> RunOutcome:
        with self._lock:
            return RunOutcome(
                status=status,
                exit_code=exit_code,
                stdout=self._stdout.text(),
                stderr=self._stderr.text(),
                stdout_truncated=self._stdout.truncated,
                stderr_truncated=self._stderr.truncated,
                error_message=error_message,
                host_key=None,
            )


async def _supervise(run: _Run, command: str, timeout: float) -> RunOutcome:
    loop = asyncio.get_running_loop()
    job = loop.run_in_executor(_pool("command", run.limits.threads), run.execute, command, timeout)
    try:
        first: set[asyncio.Future[Any]] = {job, run.started}
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        done, _ = await asyncio.wait({job}, timeout=timeout)
    except asyncio.CancelledError:
        # Abandoning the thread would leave the command running on the host: stop it first.
        await asyncio.shield(_stop(run, job))
        raise
    finally:
        run.started.cancel()
    if not done:
        await _stop(run, job)
    exit_code = job.result() if done else None
    if exit_code is None:
        return run.outcome("timeout", None, f"timed out after {timeout:g} s")
    return run.outcome("completed" if exit_code == 0 else "failed", exit_code, None)


async def _stop(run: _Run, job: asyncio.Future[int | None]) -> None:
    """Terminate the command from a second Protocol, then let the worker finish its last round."""
    run.stop.set()
    ids = run.ids()
    if ids is not None:  # otherwise the worker sees `stop` before it starts receiving
        signal = asyncio.get_running_loop().run_in_executor(
            _pool("signal", _SIGNAL_THREADS), _terminate, run.target, run.limits, *ids
        )
        await _bounded(signal, _SIGNAL_WAIT_SECONDS)
    await _bounded(job, _WORKER_WAIT_SECONDS)


async def _bounded(future: asyncio.Future[Any], seconds: float) -> None:
    """Wait a while for `future`; its result or error, now or later, is of no further interest."""
    await asyncio.wait({future}, timeout=seconds)
    future.add_done_callback(_consume)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _terminate(target: WinrmTarget, limits: WinrmLimits, shell_id: str, command_id: str) -> None:
    protocol = _protocol(target, limits)
    try:
        protocol.cleanup_command(shell_id, command_id)  # Signal terminate
    finally:
        protocol.transport.close_session()


def _protocol(target: WinrmTarget, limits: WinrmLimits) -> Protocol:
    read = _read_timeout(limits)
    host = f"[{target.host}]" if ":" in target.host else target.host
    protocol = Protocol(
        f"{'https' if target.https else 'http'}://{host}:{target.port}/wsman",
        transport=target.transport,
        username=target.username,
        password=target.password,
        ca_trust_path=_system_trust_store(),
        server_cert_validation="validate" if target.verify_tls else "ignore",
        read_timeout_sec=read,
        operation_timeout_sec=_operation_timeout(limits),
        message_encryption="auto",  # NTLM over http seals every message
        proxy=None,  # pywinrm would follow *_PROXY otherwise
    )
    # requests takes (connect, read): connecting gets Orca's connect timeout, not the long-poll's.
    cast(Any, protocol.transport).read_timeout_sec = (limits.connect_timeout, read)
    return protocol


def _operation_timeout(limits: WinrmLimits) -> int:
    return max(1, math.ceil(limits.operation_timeout))  # pywinrm sends whole seconds


def _read_timeout(limits: WinrmLimits) -> int:
    return _operation_timeout(limits) + _READ_MARGIN_SECONDS


_pools: dict[tuple[str, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(name: str, threads: int) -> ThreadPoolExecutor:
    """The dedicated pool, created on first use: the default asyncio pool is far too small."""
    with _pools_lock:
        pool = _pools.get((name, threads))
        if pool is None:
            pool = ThreadPoolExecutor(threads, thread_name_prefix=f"orca-winrm-{name}")
            _pools[(name, threads)] = pool
        return pool


def _system_trust_store() -> str:
    """The OS CA bundle (where a fleet's internal CAs are installed), else requests' own."""
    paths = ssl.get_default_verify_paths()
    return paths.cafile or paths.capath or requests.utils.DEFAULT_CA_BUNDLE_PATH


def _quietly(step: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    """Clean-up is best effort: the command's outcome is already known."""
    with contextlib.suppress(Exception):
        step(*args, **kwargs)


def _describe(exc: Exception, target: WinrmTarget, limits: WinrmLimits, phase: str) -> str:
    address = _address(target)
    verb = f"cannot connect to {address}" if phase == "connect" else f"lost {address}"
    if isinstance(exc, InvalidCredentialsError):
        return f"authentication failed for user '{target.username}' on {address}"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return (
            f"cannot connect to {address}: no connection within {limits.connect_timeout:g} s "
            "(connect timeout)"
        )
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"{verb}: no answer within {_read_timeout(limits)} s"
    if isinstance(exc, requests.exceptions.RequestException):
        return f"{verb}: {_root_cause(exc)}"
    if isinstance(exc, WSManFaultError):
        return (
            f"{address} refused the request: {exc.reason.strip()} "
            f"(WS-Management fault {exc.wsman_fault_code})"
        )
    if isinstance(exc, WinRMTransportError):
        return f"{address} answered HTTP {exc.code}; is WinRM listening there on /wsman?"
    if isinstance(exc, WinRMError):
        return f"WinRM error from {address}: {exc}"
    if isinstance(exc, OSError):
        return f"{verb}: {_root_cause(exc)}"
    return f"{verb}: unexpected {type(exc).__name__}: {exc}"


def _root_cause(exc: BaseException) -> str:
    """The innermost reason worth reading ("Connection refused"), not urllib3's pool repr."""
    queue: list[BaseException] = [exc]
    seen: set[int] = set()
    last = exc
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        last = current
        if isinstance(current, socket.gaierror):
            return str(current.strerror)
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted: {current.verify_message}"
        if isinstance(current, ssl.SSLError):
            return f"TLS handshake failed: {current.reason or current}"
        if isinstance(current, OSError) and current.errno is not None and current.errno > 0:
            return os.strerror(current.errno)
        queue.extend(arg for arg in current.args if isinstance(arg, BaseException))
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            queue.append(reason)
        queue.extend(c for c in (current.__cause__, current.__context__) if c is not None)
    return str(last)


def _address(target: WinrmTarget) -> str:
    return f"{target.host}:{target.port}"
