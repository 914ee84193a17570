"""The WinRM adapter against a WS-Management server of our own on a real loopback socket.

Every behaviour is checked with NTLM over http (message encryption on) and basic over https.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import pytest

from orca.executor.outcome import RunOutcome
from orca.executor.winrm import WinrmLimits, WinrmTarget, run_command
from support.wsman import WsmanServer

FAST = WinrmLimits(connect_timeout=3, operation_timeout=1)
KINDS: dict[str, tuple[Literal["ntlm", "basic"], bool]] = {
    "ntlm-http": ("ntlm", False),
    "basic-https": ("basic", True),
}


@pytest.fixture(scope="module", params=list(KINDS))
def server(request: pytest.FixtureRequest) -> Iterator[WsmanServer]:
    auth, tls = KINDS[request.param]
    with WsmanServer(auth=auth, tls=tls) as started:
        yield started


def target_of(server: WsmanServer, **changes: object) -> WinrmTarget:
    fields: dict[str, object] = {
        "host": server.host,
        "port": server.port,
        "username": server.username,
        "password": server.password,
        "transport": server.auth,
        "https": server.tls,
        "verify_tls": False,  # the test server's certificate is self-signed
        **changes,
    }
    return WinrmTarget(**fields)  # type: ignore[arg-type]


def run(
    target: WinrmTarget, command: str, *, timeout: float = 10, limits: WinrmLimits = FAST
) -> RunOutcome:
    return asyncio.run(run_command(target, command, timeout=timeout, limits=limits))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_echo_completes_with_its_output(server: WsmanServer) -> None:
    outcome = run(target_of(server), "echo hello")

    assert (outcome.status, outcome.exit_code, outcome.stdout) == ("completed", 0, "hello\n")
    assert (outcome.stderr, outcome.error_message, outcome.host_key) == ("", None, None)


def test_ntlm_over_http_seals_every_message() -> None:
    with WsmanServer(auth="ntlm") as server:
        outcome = run(target_of(server), "echo sealed")

        assert outcome.stdout == "sealed\n"
        assert server.sealed == len(server.requests) > 0


def test_ntlm_over_https_works_too() -> None:
    with WsmanServer(auth="ntlm", tls=True) as server:
        outcome = run(target_of(server), "echo over tls")

        assert (outcome.status, outcome.stdout) == ("completed", "over tls\n")
        assert server.sealed == 0  # TLS already protects the messages


def test_stdout_and_stderr_stay_apart_and_a_non_zero_exit_fails(server: WsmanServer) -> None:
    outcome = run(target_of(server), "echo out; echo err >&2; exit 3")

    assert (outcome.status, outcome.exit_code) == ("failed", 3)
    assert (outcome.stdout, outcome.stderr) == ("out\n", "err\n")


def test_a_megabyte_arrives_intact_over_many_receive_rounds(server: WsmanServer) -> None:
    receives_before = server.requests.count("Receive")

    outcome = run(target_of(server), "yes 0123456789abcdef | head -c 1000000")

    assert outcome.status == "completed"
    assert outcome.stdout == ("0123456789abcdef\n" * 60000)[:1000000]
    assert not outcome.stdout_truncated
    assert server.requests.count("Receive") - receives_before >= 16  # 64 KiB a round at most


def test_output_beyond_the_cap_is_cut_and_flagged(server: WsmanServer) -> None:
    limits = WinrmLimits(connect_timeout=3, operation_timeout=1, max_output_bytes=1000)

    outcome = run(target_of(server), "yes x | head -c 300000; echo short >&2", limits=limits)

    assert outcome.status == "completed"
    assert (len(outcome.stdout), outcome.stdout_truncated) == (1000, True)
    assert (outcome.stderr, outcome.stderr_truncated) == ("short\n", False)


def test_bytes_that_are_not_utf8_are_replaced(server: WsmanServer) -> None:
    outcome = run(target_of(server), r"printf 'caf\351 ok'")

    assert (outcome.status, outcome.stdout) == ("completed", "caf\ufffd ok")


def test_a_command_silent_past_the_operation_timeout_still_completes(
    server: WsmanServer,
) -> None:
    receives_before = server.requests.count("Receive")

    outcome = run(target_of(server), "sleep 2.2; echo done")

    assert (outcome.status, outcome.stdout) == ("completed", "done\n")
    # The server answered w:TimedOut at least twice; the adapter asked again each time.
    assert server.requests.count("Receive") - receives_before >= 3


def test_a_wrong_password_fails_without_revealing_it(server: WsmanServer) -> None:
    outcome = run(target_of(server, password="not-the-password-1234"), "echo never")

    assert outcome.status == "failed"
    assert outcome.error_message == (
        f"authentication failed for user 'orcatest' on 127.0.0.1:{server.port}"
    )
    assert "not-the-password-1234" not in repr(outcome)


def test_a_closed_port_cannot_connect(server: WsmanServer) -> None:
    port = closed_port()

    outcome = run(target_of(server, port=port), "echo never")

    assert outcome.status == "failed"
    assert outcome.error_message == f"cannot connect to 127.0.0.1:{port}: Connection refused"


def test_environment_proxies_are_ignored(
    server: WsmanServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = f"http://127.0.0.1:{closed_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, nowhere)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)

    outcome = run(target_of(server), "echo direct")

    assert (outcome.status, outcome.stdout) == ("completed", "direct\n")


def test_the_deadline_terminates_the_command_on_the_host(server: WsmanServer) -> None:
    started = time.monotonic()

    outcome = run(target_of(server), "echo begun; sleep 300", timeout=1)

    assert (outcome.status, outcome.exit_code) == ("timeout", None)
    assert outcome.error_message == "timed out after 1 s"
    assert outcome.stdout == "begun\n"  # the output so far is kept
    assert time.monotonic() - started < 4
    assert server.wait_until_none_running() == []


def test_the_deadline_is_kept_while_a_receive_long_polls(server: WsmanServer) -> None:
    # The Receive blocks for 20 s on the host; Signal terminate comes from a second Protocol.
    limits = WinrmLimits(connect_timeout=3, operation_timeout=20)
    started = time.monotonic()

    outcome = run(target_of(server), "sleep 300", timeout=1, limits=limits)

    assert outcome.status == "timeout"
    assert time.monotonic() - started < 4
    assert server.wait_until_none_running() == []


def test_cancelling_the_task_terminates_the_command_on_the_host(server: WsmanServer) -> None:
    limits = WinrmLimits(connect_timeout=3, operation_timeout=20)

    async def cancel_midway() -> None:
        receives_before = server.requests.count("Receive")
        task = asyncio.create_task(
            run_command(target_of(server), "sleep 300", timeout=60, limits=limits)
        )
        # Cancel once the adapter's thread is blocked in a 20 s long-polling Receive.
        while server.requests.count("Receive") == receives_before:
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    started = time.monotonic()
    asyncio.run(cancel_midway())

    assert time.monotonic() - started < 4
    assert server.wait_until_none_running(within=0.5) == []


def test_basic_over_plain_http_is_refused_before_any_request() -> None:
    with WsmanServer(auth="basic") as server:
        outcome = run(target_of(server), "echo never")

        assert outcome.status == "failed"
        assert outcome.error_message == (
            "basic authentication is only allowed over HTTPS; use ntlm or https"
        )
        assert server.connections == 0


def test_an_untrusted_certificate_is_refused_when_verifying() -> None:
    with WsmanServer(auth="basic", tls=True) as server:
        outcome = run(target_of(server, verify_tls=True), "echo never")

        assert outcome.status == "failed"
        assert outcome.error_message is not None
        assert outcome.error_message.startswith(
            f"cannot connect to 127.0.0.1:{server.port}: TLS certificate not trusted"
        )
        assert server.requests == []


class _NotWinrm(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_web_server_that_is_not_winrm_is_named_as_such() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), _NotWinrm) as web:
        serving = threading.Thread(target=web.serve_forever)
        serving.start()
        try:
            target = WinrmTarget("127.0.0.1", web.server_address[1], "orcatest", "pw-1234")
            outcome = run(target, "echo never")
        finally:
            web.shutdown()
            serving.join()

    assert outcome.status == "failed"
    assert outcome.error_message == (
        f"127.0.0.1:{web.server_address[1]} answered HTTP 404; is WinRM listening there on /wsman?"
    )
