"""The SSH adapter against a real OpenSSH sshd on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from orca.executor.pool import SshLimits, SshPool, SshTarget
from orca.executor.ssh import RunOutcome, fingerprint, run_command
from support.processes import remote_processes, wait_until_gone
from support.sshd import SshdHost

pytestmark = pytest.mark.sshd


def password_target(sshd: SshdHost, **changes: str | None) -> SshTarget:
    fields: dict[str, str | None] = {"password": sshd.password, **changes}
    return SshTarget(sshd.host, sshd.port, sshd.username, **fields)


def run(
    target: SshTarget, command: str, *, timeout: float = 10, limits: SshLimits | None = None
) -> RunOutcome:
    async def in_a_pool() -> RunOutcome:
        async with SshPool(limits or SshLimits()) as pool:
            return await run_command(pool, target, command, timeout=timeout)

    return asyncio.run(in_a_pool())


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_whoami_with_password_trusts_the_host_key_on_first_use(sshd_host: SshdHost) -> None:
    outcome = run(password_target(sshd_host), "whoami")

    assert (outcome.status, outcome.exit_code, outcome.stdout) == ("completed", 0, "orcatest\n")
    assert outcome.error_message is None
    assert outcome.host_key == sshd_host.public_host_key


def test_whoami_with_a_private_key(sshd_host: SshdHost) -> None:
    target = SshTarget(
        sshd_host.host, sshd_host.port, sshd_host.username, private_key=sshd_host.private_key
    )

    outcome = run(target, "whoami")

    assert (outcome.status, outcome.stdout) == ("completed", "orcatest\n")


def test_whoami_with_an_encrypted_private_key_and_its_passphrase(sshd_host: SshdHost) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    sshd_host.authorize_key(key.export_public_key().decode())
    # PKCS#8: encrypted OpenSSH-format keys need the optional bcrypt package to decrypt.
    encrypted = key.export_private_key("pkcs8-pem", passphrase="open sesame").decode()
    target = SshTarget(
        sshd_host.host,
        sshd_host.port,
        sshd_host.username,
        private_key=encrypted,
        passphrase="open sesame",
    )

    outcome = run(target, "whoami")

    assert (outcome.status, outcome.stdout) == ("completed", "orcatest\n")


def test_a_wrong_passphrase_fails_with_a_message_about_the_key(sshd_host: SshdHost) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    encrypted = key.export_private_key("pkcs8-pem", passphrase="right").decode()
    target = SshTarget(
        sshd_host.host,
        sshd_host.port,
        sshd_host.username,
        private_key=encrypted,
        passphrase="wrong-passphrase",
    )

    outcome = run(target, "whoami")

    assert outcome.status == "failed"
    assert outcome.error_message is not None
    assert "private key" in outcome.error_message
    assert "wrong-passphrase" not in outcome.error_message


def test_a_pinned_host_key_that_matches_lets_the_command_run(sshd_host: SshdHost) -> None:
    outcome = run(password_target(sshd_host, host_key=sshd_host.public_host_key), "true")

    assert outcome.status == "completed"
    assert outcome.host_key == sshd_host.public_host_key


def test_non_zero_exit_fails_and_keeps_stderr_apart_from_stdout(sshd_host: SshdHost) -> None:
    outcome = run(password_target(sshd_host), "echo out; echo err >&2; exit 3")

    assert (outcome.status, outcome.exit_code) == ("failed", 3)
    assert (outcome.stdout, outcome.stderr) == ("out\n", "err\n")


def test_a_wrong_password_fails_without_revealing_it(sshd_host: SshdHost) -> None:
    outcome = run(password_target(sshd_host, password="hunter2-wrong"), "whoami")

    assert (outcome.status, outcome.exit_code) == ("failed", None)
    assert outcome.error_message == (
        f"authentication failed for user 'orcatest' on {sshd_host.host}:{sshd_host.port}"
    )
    assert "hunter2-wrong" not in repr(outcome)


def test_a_closed_port_fails_quickly_with_a_connection_message(sshd_host: SshdHost) -> None:
    port = closed_port()
    started = time.monotonic()

    outcome = run(SshTarget("127.0.0.1", port, "orcatest", password="x"), "whoami")

    assert time.monotonic() - started < 2
    assert outcome.status == "failed"
    assert outcome.error_message == f"cannot connect to 127.0.0.1:{port}: Connection refused"


def test_a_changed_host_key_fails_before_the_command_runs(sshd_host: SshdHost) -> None:
    other_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    marker = Path(f"/tmp/orca-must-not-exist-{uuid.uuid4().hex}")

    outcome = run(password_target(sshd_host, host_key=other_key), f"touch {marker}")

    assert outcome.status == "failed"
    assert outcome.error_message == (
        f"host key for {sshd_host.host}:{sshd_host.port} changed "
        f"(pinned {fingerprint(other_key)}, offered {fingerprint(sshd_host.public_host_key)}); "
        "re-pin it with POST /api/systems/<id>/host-key if the change is expected"
    )
    assert not marker.exists()


def test_fingerprint_matches_ssh_keygen(sshd_host: SshdHost) -> None:
    assert sshd_host.dir is not None
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(sshd_host.dir / "host_key.pub")],
        capture_output=True,
        text=True,
        check=True,
    )

    assert fingerprint(sshd_host.public_host_key) == listed.stdout.split()[1]


def test_invalid_utf8_output_is_replaced_not_fatal(sshd_host: SshdHost) -> None:
    outcome = run(password_target(sshd_host), r"printf '\377\376abc'")

    assert outcome.status == "completed"
    assert outcome.stdout == "\ufffd\ufffdabc"


def test_output_beyond_the_cap_is_discarded_and_flagged(sshd_host: SshdHost) -> None:
    limits = SshLimits(max_output_bytes=1_000_000)

    outcome = run(
        password_target(sshd_host), r"head -c 3000000 /dev/zero | tr '\0' a", limits=limits
    )

    assert outcome.status == "completed"
    assert len(outcome.stdout) == 1_000_000
    assert outcome.stdout_truncated
    assert not outcome.stderr_truncated


def test_a_timed_out_command_is_killed_on_the_host(sshd_host: SshdHost) -> None:
    started = time.monotonic()

    outcome = run(password_target(sshd_host), "echo started; sleep 301", timeout=1)

    assert time.monotonic() - started < 5
    assert (outcome.status, outcome.exit_code) == ("timeout", None)
    assert outcome.error_message == "timed out after 1 s"
    assert outcome.stdout == "started\n"
    assert wait_until_gone(sshd_host.username, "sleep 301") == []


def test_a_command_ignoring_term_is_killed_after_the_grace_period(sshd_host: SshdHost) -> None:
    outcome = run(password_target(sshd_host), 'trap "" TERM; sleep 302', timeout=1)

    assert outcome.status == "timeout"
    assert wait_until_gone(sshd_host.username, "sleep 302") == []


def test_cancelling_the_task_kills_the_remote_command(sshd_host: SshdHost) -> None:
    async def start_then_cancel() -> None:
        async with SshPool() as pool:
            task = asyncio.create_task(
                run_command(pool, password_target(sshd_host), "sleep 303", timeout=60)
            )
            deadline = time.monotonic() + 5
            while not remote_processes(sshd_host.username, "sleep 303"):
                assert time.monotonic() < deadline, "the remote command never started"
                await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(start_then_cancel())

    assert wait_until_gone(sshd_host.username, "sleep 303") == []


@contextlib.asynccontextmanager
async def silent_listener() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never says a word."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def test_a_host_that_never_speaks_ssh_fails_with_a_timeout() -> None:
    async def connect_to_silence() -> tuple[RunOutcome, float, int]:
        async with silent_listener() as port, SshPool(SshLimits(connect_timeout=1)) as pool:
            started = time.monotonic()
            outcome = await run_command(
                pool, SshTarget("127.0.0.1", port, "orcatest", password="x"), "whoami", timeout=10
            )
            return outcome, time.monotonic() - started, port

    outcome, elapsed, port = asyncio.run(connect_to_silence())

    assert elapsed < 3
    assert outcome.status == "failed"
    assert outcome.error_message == (
        f"cannot connect to 127.0.0.1:{port}: no SSH login within 1 s (connect timeout)"
    )
