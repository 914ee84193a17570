"""The SSH adapter's connection pool, watched from the server: a real sshd's log and sockets."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import asyncssh
import pytest

from orca.executor.pool import SshLimits, SshPool, SshTarget
from orca.executor.ssh import RunOutcome, fingerprint, run_command
from support import sshd as sshd_support
from support.processes import remote_processes, wait_until_gone
from support.sshd import SshdHost

pytestmark = pytest.mark.sshd

T = TypeVar("T")


@pytest.fixture
def sshd() -> Iterator[SshdHost]:
    """A fresh sshd per test, so its log and sockets tell about this test's connections alone."""
    with SshdHost() as host:
        yield host


def pinned_target(sshd: SshdHost, **changes: str) -> SshTarget:
    fields = {"password": sshd.password, "host_key": sshd.public_host_key, **changes}
    return SshTarget(sshd.host, sshd.port, sshd.username, **fields)


def with_pool(body: Callable[[SshPool], Awaitable[T]], limits: SshLimits | None = None) -> T:
    """Run `body` with a new pool on a new event loop; close the pool before the loop ends."""

    async def run_then_close() -> T:
        async with SshPool(limits or SshLimits()) as pool:
            return await body(pool)

    return asyncio.run(run_then_close())


def logins(sshd: SshdHost) -> int:
    """How many SSH connections the server has let in (one log line per login)."""
    assert sshd.dir is not None
    return (sshd.dir / "sshd.log").read_text(errors="replace").count("Accepted password for")


def open_connections(sshd: SshdHost) -> int:
    """How many TCP connections the server holds open, as the kernel sees them."""
    listed = subprocess.run(
        ["ss", "-Htn", "state", "established", "src", f"{sshd.host}:{sshd.port}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return len(listed.stdout.splitlines())


def kill_server_side_connections(sshd: SshdHost) -> int:
    """SIGKILL the sshd processes serving connections (not the listener); return how many."""
    assert sshd.dir is not None
    listener = subprocess.run(
        # sshd retitles itself "sshd: <its command line> [listener] ...".
        ["pgrep", "-f", f"^sshd: .* -f {re.escape(str(sshd.dir / 'sshd_config'))} \\[listener\\]"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert len(listener) == 1, f"expected one listening sshd, found {listener}"
    doomed = descendants(int(listener[0]))
    for pid in doomed:
        os.kill(pid, signal.SIGKILL)
    return len(doomed)


def descendants(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    found = [int(child) for child in children.stdout.split()]
    return found + [grandchild for child in found for grandchild in descendants(child)]


def assert_completed(outcome: RunOutcome, stdout: str = "orcatest\n") -> None:
    assert (outcome.status, outcome.error_message, outcome.stdout) == ("completed", None, stdout)


def test_two_commands_in_a_row_share_one_connection(sshd: SshdHost) -> None:
    async def twice(pool: SshPool) -> tuple[RunOutcome, RunOutcome, int]:
        first = await run_command(pool, pinned_target(sshd), "whoami", timeout=10)
        second = await run_command(pool, pinned_target(sshd), "whoami", timeout=10)
        return first, second, open_connections(sshd)

    first, second, held_open = with_pool(twice)

    assert_completed(first)
    assert_completed(second)
    assert logins(sshd) == 1
    assert held_open == 1


def test_a_first_use_connection_is_reused_by_the_next_first_use(sshd: SshdHost) -> None:
    target = SshTarget(sshd.host, sshd.port, sshd.username, password=sshd.password)

    async def twice(pool: SshPool) -> list[RunOutcome]:
        return [await run_command(pool, target, "whoami", timeout=10) for _ in range(2)]

    outcomes = with_pool(twice)

    assert [o.host_key for o in outcomes] == [sshd.public_host_key] * 2
    assert logins(sshd) == 1


def test_closing_the_pool_closes_its_connections(sshd: SshdHost) -> None:
    async def run_close_then_count(pool: SshPool) -> int:
        await run_command(pool, pinned_target(sshd), "true", timeout=10)
        await pool.close()
        return open_connections(sshd)

    assert with_pool(run_close_then_count) == 0


def test_thirty_concurrent_commands_on_a_host_with_openssh_defaults_all_complete() -> None:
    # MaxSessions 10 and MaxStartups 10:30:100, as on production hosts.
    with SshdHost(openssh_defaults=True) as sshd:

        async def thirty(pool: SshPool) -> list[RunOutcome]:
            return await asyncio.gather(
                *(
                    run_command(pool, pinned_target(sshd), "sleep 1; whoami", timeout=30)
                    for _ in range(30)
                )
            )

        started = time.monotonic()
        outcomes = with_pool(thirty)
        elapsed = time.monotonic() - started

        for outcome in outcomes:
            assert_completed(outcome)
        assert elapsed < 10
        assert logins(sshd) <= SshLimits().max_connections_per_host


def test_new_connections_dropped_past_max_startups_are_retried() -> None:
    # One channel per connection: forty connections at once, far past MaxStartups 10:30:100.
    limits = SshLimits(max_channels_per_connection=1, max_connections_per_host=40)
    with SshdHost(openssh_defaults=True) as sshd:

        async def burst(pool: SshPool) -> list[RunOutcome]:
            return await asyncio.gather(
                *(run_command(pool, pinned_target(sshd), "whoami", timeout=30) for _ in range(40))
            )

        outcomes = with_pool(burst, limits)

        for outcome in outcomes:
            assert_completed(outcome)
        assert sshd.dir is not None
        assert "MaxStartups" in (sshd.dir / "sshd.log").read_text(errors="replace")


def test_cancelled_commands_sharing_a_connection_are_each_killed_and_the_rest_carry_on(
    sshd: SshdHost,
) -> None:
    marker = f"orca-shared-{uuid.uuid4().hex}"
    doomed = ["sleep 300", "sleep 300 | cat", 'trap "" TERM; sleep 300']

    async def start_cancel_then_run(pool: SshPool) -> tuple[RunOutcome, RunOutcome, int]:
        def run(command: str) -> asyncio.Task[RunOutcome]:
            task = run_command(pool, pinned_target(sshd), f"{command}; : {marker}", timeout=60)
            return asyncio.create_task(task)

        survivor = run("sleep 1; whoami")
        cancelled = [run(command) for command in doomed]
        deadline = time.monotonic() + 10
        while len(remote_processes(sshd.username, f": {marker}")) < len(doomed) + 1:
            assert time.monotonic() < deadline, "the commands never started"
            await asyncio.sleep(0.05)
        for task in cancelled:
            task.cancel()
        for task in cancelled:
            with pytest.raises(asyncio.CancelledError):
                await task
        after = await run_command(pool, pinned_target(sshd), "whoami", timeout=10)
        return await survivor, after, open_connections(sshd)

    survivor, after, held_open = with_pool(start_cancel_then_run)

    assert_completed(survivor)
    assert_completed(after)
    assert wait_until_gone(sshd.username, marker) == []
    assert logins(sshd) == 1
    assert held_open == 1


def test_a_command_cancelled_while_it_starts_is_killed_all_the_same(sshd: SshdHost) -> None:
    marker = f"orca-starting-{uuid.uuid4().hex}"

    async def cancel_at_every_moment_of_the_start(pool: SshPool) -> None:
        loop = asyncio.get_running_loop()
        await run_command(pool, pinned_target(sshd), "true", timeout=10)  # connected already
        for step in range(40):
            task = asyncio.create_task(
                run_command(pool, pinned_target(sshd), f"sleep 300; : {marker}", timeout=60)
            )
            # From before the channel opens to after the command runs, 0.25 ms apart.
            cancel_at = loop.time() + step * 0.00025
            while loop.time() < cancel_at:
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    with_pool(cancel_at_every_moment_of_the_start)

    assert wait_until_gone(sshd.username, marker) == []


def test_an_idle_connection_is_closed_after_idle_seconds(sshd: SshdHost) -> None:
    limits = SshLimits(idle_seconds=1)

    async def run_then_idle(pool: SshPool) -> tuple[int, float]:
        await run_command(pool, pinned_target(sshd), "true", timeout=10)
        idle_since = time.monotonic()
        await asyncio.sleep(0.5)
        assert open_connections(sshd) == 1, "closed before idle_seconds"
        while open_connections(sshd) and time.monotonic() - idle_since < 5:
            await asyncio.sleep(0.05)
        return open_connections(sshd), time.monotonic() - idle_since

    still_open, idle_for = with_pool(run_then_idle, limits)

    assert still_open == 0
    assert 1 <= idle_for < 3


def test_a_connection_killed_under_the_pool_is_replaced_for_the_next_command(
    sshd: SshdHost,
) -> None:
    async def run_kill_run(pool: SshPool) -> tuple[RunOutcome, RunOutcome]:
        first = await run_command(pool, pinned_target(sshd), "whoami", timeout=10)
        # The pool learns of it only when it next uses the connection: no await in between.
        assert kill_server_side_connections(sshd) > 0
        second = await run_command(pool, pinned_target(sshd), "whoami", timeout=10)
        return first, second

    first, second = with_pool(run_kill_run)

    assert_completed(first)
    assert_completed(second)
    assert logins(sshd) == 2


def test_a_connection_lost_while_idle_is_replaced_for_the_next_command(sshd: SshdHost) -> None:
    async def run_kill_wait_run(pool: SshPool) -> RunOutcome:
        await run_command(pool, pinned_target(sshd), "true", timeout=10)
        kill_server_side_connections(sshd)
        await asyncio.sleep(0.2)
        return await run_command(pool, pinned_target(sshd), "whoami", timeout=10)

    assert_completed(with_pool(run_kill_wait_run))
    assert logins(sshd) == 2


def test_another_server_on_a_port_the_pool_knew_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = Path(f"/tmp/orca-must-not-exist-{uuid.uuid4().hex}")
    first = SshdHost().start()
    try:
        target = pinned_target(first)

        async def run_swap_run(pool: SshPool) -> tuple[RunOutcome, RunOutcome, str]:
            before = await run_command(pool, target, "whoami", timeout=10)
            first.stop()
            # A second sshd, with a host key of its own, takes over the same address and port.
            monkeypatch.setattr(sshd_support, "_free_port", lambda host: target.port)
            with SshdHost() as second:
                after = await run_command(pool, target, f"touch {marker}", timeout=10)
                return before, after, second.public_host_key

        before, after, second_key = with_pool(run_swap_run)
    finally:
        first.stop()

    assert_completed(before)
    assert after.status == "failed"
    assert after.error_message == (
        f"host key for {target.host}:{target.port} changed "
        f"(pinned {fingerprint(first.public_host_key)}, offered {fingerprint(second_key)}); "
        "re-pin it with POST /api/systems/<id>/host-key if the change is expected"
    )
    assert after.host_key is None
    assert not marker.exists()


def test_a_pooled_connection_is_never_lent_to_another_pinned_key(sshd: SshdHost) -> None:
    other_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()

    async def right_then_wrong_key(pool: SshPool) -> tuple[RunOutcome, RunOutcome]:
        right = await run_command(pool, pinned_target(sshd), "true", timeout=10)
        wrong = await run_command(pool, pinned_target(sshd, host_key=other_key), "true", timeout=10)
        return right, wrong

    right, wrong = with_pool(right_then_wrong_key)

    assert right.status == "completed"
    assert wrong.status == "failed"
    assert wrong.error_message is not None
    assert wrong.error_message.startswith(f"host key for {sshd.host}:{sshd.port} changed")


def test_a_pooled_connection_is_never_lent_to_other_credentials(sshd: SshdHost) -> None:
    async def right_then_wrong_password(pool: SshPool) -> tuple[RunOutcome, RunOutcome]:
        right = await run_command(pool, pinned_target(sshd), "true", timeout=10)
        wrong = await run_command(
            pool, pinned_target(sshd, password="wrong-pw"), "true", timeout=10
        )
        return right, wrong

    right, wrong = with_pool(right_then_wrong_password)

    assert right.status == "completed"
    assert (wrong.status, wrong.error_message) == (
        "failed",
        f"authentication failed for user 'orcatest' on {sshd.host}:{sshd.port}",
    )


def test_commands_queued_for_a_silent_host_fail_within_one_connect_timeout() -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    async def twenty_at_once() -> tuple[list[RunOutcome], float]:
        server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        target = SshTarget("127.0.0.1", port, "orcatest", password="x")
        started = time.monotonic()
        try:
            async with SshPool(SshLimits(connect_timeout=1)) as pool:
                outcomes = await asyncio.gather(
                    *(run_command(pool, target, "true", timeout=10) for _ in range(20))
                )
            return outcomes, time.monotonic() - started
        finally:
            server.close()
            await server.wait_closed()

    outcomes, elapsed = asyncio.run(twenty_at_once())

    assert {o.status for o in outcomes} == {"failed"}
    assert all("connect timeout" in (o.error_message or "") for o in outcomes)
    assert elapsed < 2.5
