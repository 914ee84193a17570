"""A WS-Management server on 127.0.0.1 that speaks the protocol pywinrm speaks, for tests.

It stands in for a Windows host: SOAP 1.2 Create (shell), Command, Receive, Signal and Delete on
`/wsman`, basic or NTLM authentication (NTLM over http with MS-WSMV message encryption), optional
TLS. Commands run for real, as local `/bin/sh -c` processes in their own sessions; their output is
streamed over as many Receive rounds as it takes, and a Receive with nothing to say answers the
`w:TimedOut` fault after OperationTimeout, as Windows does.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self
from xml.sax.saxutils import escape

import spnego

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}
SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
TERMINATE = f"{SHELL_URI}/signal/terminate"
TIMED_OUT_CODE = 2150858793  # WSManFault code for "OperationTimeout expired", retried by clients
ENCRYPTED_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
BOUNDARY = b"--Encrypted Boundary"
_OCTET_HEADER = b"\tContent-Type: application/octet-stream\r\n"
_STREAM_CAP = 64 * 1024  # per stream per Receive, so large outputs take many rounds


@dataclass
class Command:
    """One command started by a Command request: its process and the output not yet received."""

    process: subprocess.Popen[bytes]
    shell_id: str
    pending: dict[str, bytearray] = field(
        default_factory=lambda: {"stdout": bytearray(), "stderr": bytearray()}
    )
    open_streams: int = 2
    changed: threading.Condition = field(default_factory=threading.Condition)
    readers: list[threading.Thread] = field(default_factory=list)

    def finished(self) -> bool:
        return self.open_streams == 0 and self.process.poll() is not None


class WsmanServer:
    """A WinRM endpoint at `https?://127.0.0.1:port/wsman` accepting one user."""

    def __init__(
        self,
        *,
        auth: Literal["basic", "ntlm"] = "ntlm",
        username: str = "orcatest",
        password: str = "orcatest-pw-5d2c",
        tls: bool = False,
    ) -> None:
        self.auth = auth
        self.username = username
        self.password = password
        self.tls = tls
        self.host = "127.0.0.1"
        self.port = 0
        self.commands: dict[str, Command] = {}  # command id -> its process, for tests to inspect
        self.shells: set[str] = set()
        self.connections = 0  # TCP connections accepted
        self.requests: list[str] = []  # the SOAP action of every authenticated request
        self.sealed = 0  # requests that came with MS-WSMV message encryption
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._dir: Path | None = None
        self._tls_context: ssl.SSLContext | None = None
        self._httpd: _HttpServer | None = None
        self._serving: threading.Thread | None = None
        self._previous_user_file: str | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        self._dir = Path(tempfile.mkdtemp(prefix="orca-wsman-"))
        if self.tls:
            self._tls_context = _self_signed_context(self._dir, self.host)
        if self.auth == "ntlm":
            # pyspnego's NTLM acceptor reads its users from this file: DOMAIN:USER:PASSWORD lines.
            users = self._dir / "ntlm-users"
            users.write_text(f":{self.username}:{self.password}\n")
            self._previous_user_file = os.environ.get("NTLM_USER_FILE")
            os.environ["NTLM_USER_FILE"] = str(users)
        self._httpd = _HttpServer(self)
        self.port = self._httpd.server_address[1]
        self._serving = threading.Thread(target=self._httpd.serve_forever, name="wsman-server")
        self._serving.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            for command in list(self.commands.values()):
                _kill(command.process)
                with command.changed:
                    command.changed.notify_all()
            self._httpd.close_connections()
            self._httpd.server_close()  # joins the connection threads
            self._httpd = None
        if self._serving is not None:
            self._serving.join()
        for command in self.commands.values():
            command.process.wait()
            for reader in command.readers:
                reader.join()
        if self.auth == "ntlm":
            if self._previous_user_file is None:
                os.environ.pop("NTLM_USER_FILE", None)
            else:
                os.environ["NTLM_USER_FILE"] = self._previous_user_file
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what tests look at ---------------------------------------------------------------------

    def running(self) -> list[str]:
        """Ids of the commands whose process is still alive."""
        return [cid for cid, command in list(self.commands.items()) if not command.finished()]

    def wait_until_none_running(self, within: float = 5.0) -> list[str]:
        deadline = time.monotonic() + within
        while (left := self.running()) and time.monotonic() < deadline:
            time.sleep(0.02)
        return left

    # --- the WS-Management operations ----------------------------------------------------------

    def handle(self, envelope: ET.Element) -> tuple[int, str]:
        """Answer one SOAP request: (HTTP status, response envelope)."""
        action = _text(envelope, "s:Header/a:Action")
        message_id = _text(envelope, "s:Header/a:MessageID")
        shell_id = _text(envelope, "s:Header/w:SelectorSet/w:Selector[@Name='ShellId']")
        self.requests.append(action.rsplit("/", 1)[-1])
        body = envelope.find("s:Body", NS)
        assert body is not None, "a SOAP request without a body"
        if action.endswith("/transfer/Create"):
            return 200, self._create(message_id)
        if shell_id not in self.shells:
            return 500, _fault(message_id, "w:InvalidSelectors", 2150858843, "unknown shell")
        if action.endswith("/shell/Command"):
            return 200, self._command(
                message_id, shell_id, _text(body, "rsp:CommandLine/rsp:Command")
            )
        if action.endswith("/transfer/Delete"):
            return 200, self._delete(message_id, shell_id)
        if action.endswith("/shell/Receive"):
            stream = body.find("rsp:Receive/rsp:DesiredStream", NS)
            assert stream is not None, "a Receive without DesiredStream"
            timeout = _seconds(_text(envelope, "s:Header/w:OperationTimeout") or "PT60S")
            return self._receive(message_id, stream.get("CommandId", ""), timeout)
        if action.endswith("/shell/Signal"):
            signal_node = body.find("rsp:Signal", NS)
            assert signal_node is not None, "a Signal without rsp:Signal"
            code = _text(signal_node, "rsp:Code")
            return self._signal(message_id, signal_node.get("CommandId", ""), code)
        return 500, _fault(message_id, "a:ActionNotSupported", 2150858757, f"no {action}")

    def _create(self, message_id: str) -> str:
        shell_id = str(uuid.uuid4()).upper()
        with self._lock:
            self.shells.add(shell_id)
        return _envelope(
            "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse",
            message_id,
            "<x:ResourceCreated><a:Address>http://127.0.0.1/wsman</a:Address>"
            "<a:ReferenceParameters>"
            f"<w:ResourceURI>{SHELL_URI}/cmd</w:ResourceURI>"
            f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
            "</a:ReferenceParameters></x:ResourceCreated>"
            f"<rsp:Shell><rsp:ShellId>{shell_id}</rsp:ShellId></rsp:Shell>",
        )

    def _command(self, message_id: str, shell_id: str, command_line: str) -> str:
        process = subprocess.Popen(
            ["/bin/sh", "-c", command_line],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # so Signal terminate can kill the whole process group
        )
        command = Command(process, shell_id)
        command_id = str(uuid.uuid4()).upper()
        assert process.stdout is not None and process.stderr is not None
        for name, pipe in (("stdout", process.stdout), ("stderr", process.stderr)):
            reader = threading.Thread(target=_pump, args=(pipe, command, name), daemon=True)
            command.readers.append(reader)
            reader.start()
        with self._lock:
            self.commands[command_id] = command
        return _envelope(
            f"{SHELL_URI}/CommandResponse",
            message_id,
            f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>",
        )

    def _receive(self, message_id: str, command_id: str, timeout: float) -> tuple[int, str]:
        command = self.commands.get(command_id)
        if command is None:
            return 500, _fault(message_id, "w:InvalidSelectors", 2150858843, "unknown command")
        deadline = time.monotonic() + timeout
        with command.changed:
            while not (any(command.pending.values()) or command.open_streams == 0):
                left = deadline - time.monotonic()
                if left <= 0 or self.stopping.is_set():
                    return 500, _fault(
                        message_id,
                        "w:TimedOut",
                        TIMED_OUT_CODE,
                        "The WS-Management service cannot complete the operation within the time"
                        " specified in OperationTimeout.",
                    )
                command.changed.wait(left)
            chunks = {}
            for name, pending in command.pending.items():
                chunks[name] = bytes(pending[:_STREAM_CAP])
                del pending[:_STREAM_CAP]
            drained = command.open_streams == 0 and not any(command.pending.values())
        streams = "".join(
            f'<rsp:Stream Name="{name}" CommandId="{command_id}">'
            f"{base64.b64encode(chunk).decode('ascii')}</rsp:Stream>"
            for name, chunk in chunks.items()
            if chunk
        )
        if drained:
            exit_code = command.process.wait()
            state = (
                f'<rsp:CommandState CommandId="{command_id}" State="{SHELL_URI}/CommandState/Done">'
                f"<rsp:ExitCode>{exit_code if exit_code >= 0 else 128 - exit_code}</rsp:ExitCode>"
                "</rsp:CommandState>"
            )
        else:
            state = (
                f'<rsp:CommandState CommandId="{command_id}" '
                f'State="{SHELL_URI}/CommandState/Running"/>'
            )
        return 200, _envelope(
            f"{SHELL_URI}/ReceiveResponse",
            message_id,
            f"<rsp:ReceiveResponse>{streams}{state}</rsp:ReceiveResponse>",
        )

    def _signal(self, message_id: str, command_id: str, code: str) -> tuple[int, str]:
        command = self.commands.get(command_id)
        if command is None:
            return 500, _fault(message_id, "w:InvalidSelectors", 2150858843, "unknown command")
        if code == TERMINATE:
            _kill(command.process)
        return 200, _envelope(f"{SHELL_URI}/SignalResponse", message_id, "<rsp:SignalResponse/>")

    def _delete(self, message_id: str, shell_id: str) -> str:
        with self._lock:
            self.shells.discard(shell_id)
        for command in list(self.commands.values()):
            if command.shell_id == shell_id:
                _kill(command.process)
        return _envelope(
            "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", message_id, ""
        )


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins every connection thread

    def __init__(self, wsman: WsmanServer) -> None:
        self.wsman = wsman
        self.open: set[socket.socket] = set()
        self.open_lock = threading.Lock()
        super().__init__((wsman.host, 0), _Handler)

    def close_connections(self) -> None:
        with self.open_lock:
            for connection in self.open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """One TCP connection: NTLM authenticates the connection, not each request."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _HttpServer

    def setup(self) -> None:
        self.wsman = self.server.wsman
        self.ntlm: spnego.ContextProxy | None = None
        self.tls_socket: ssl.SSLSocket | None = None
        self.handshake_failed = False
        with self.server.open_lock:
            self.wsman.connections += 1
        context = self.wsman._tls_context
        if context is not None:
            try:
                self.tls_socket = context.wrap_socket(self.request, server_side=True)
            except (OSError, ValueError):  # e.g. a client that rejects the self-signed cert
                self.handshake_failed = True
                return
            self.request = self.tls_socket
        with self.server.open_lock:
            self.server.open.add(self.request)
        super().setup()

    def handle(self) -> None:
        if not self.handshake_failed:
            super().handle()

    def finish(self) -> None:
        if self.handshake_failed:
            return
        try:
            super().finish()
        finally:
            with self.server.open_lock:
                self.server.open.discard(self.request)
            if self.tls_socket is not None:
                self.tls_socket.close()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/wsman":
            self._reply(404, b"", "text/plain")
            return
        if not self._authenticated():
            return
        content_type = self.headers.get("Content-Type", "")
        encrypted = content_type.startswith("multipart/encrypted")
        if not body:
            self._reply(200, b"", "application/soap+xml;charset=UTF-8")  # pywinrm's context probe
            return
        if encrypted:
            body = self._unseal(body)
            self.wsman.sealed += 1
        status, answer = self.wsman.handle(ET.fromstring(body))
        data = answer.encode("utf-8")
        if encrypted:
            self._reply(
                status,
                self._seal(data),
                f'multipart/encrypted;protocol="{ENCRYPTED_PROTOCOL}";'
                'boundary="Encrypted Boundary"',
            )
        else:
            self._reply(status, data, "application/soap+xml;charset=UTF-8")

    def _authenticated(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if self.wsman.auth == "basic":
            expected = f"{self.wsman.username}:{self.wsman.password}".encode()
            if scheme.lower() == "basic" and base64.b64decode(value) == expected:
                return True
            self._reply(401, b"", "text/plain", [("WWW-Authenticate", 'Basic realm="WSMAN"')])
            return False
        if self.ntlm is not None and self.ntlm.complete and not header:
            return True
        if scheme.lower() not in ("negotiate", "ntlm") or not value:
            self._reply(401, b"", "text/plain", [("WWW-Authenticate", "Negotiate")])
            return False
        token = base64.b64decode(value)
        if self.ntlm is None or token[8:12] == struct.pack("<I", 1):  # a NEGOTIATE message
            self.ntlm = spnego.server(protocol="ntlm")
        try:
            answer = self.ntlm.step(token)
        except Exception:  # wrong password, unknown user, garbled token: all just "no"
            self.ntlm = None
            self._reply(401, b"", "text/plain", [("WWW-Authenticate", "Negotiate")])
            return False
        if self.ntlm.complete:
            return True
        challenge = f"{scheme} {base64.b64encode(answer or b'').decode()}"
        self._reply(401, b"", "text/plain", [("WWW-Authenticate", challenge)])
        return False

    def _unseal(self, body: bytes) -> bytes:
        """Open an MS-WSMV 2.2.9.1.1 body: headers, then `<u32 sig length><sig><sealed>`."""
        assert self.ntlm is not None and self.ntlm.complete, "encryption before authentication"
        header, _, rest = body.partition(BOUNDARY + b"\r\n" + _OCTET_HEADER)
        length = int(re.findall(rb"Length=(\d+)", header)[0])
        payload = rest.removesuffix(BOUNDARY + b"--\r\n")
        (signature_length,) = struct.unpack("<I", payload[:4])
        plain = self.ntlm.unwrap(payload[4:]).data  # the NTLM signature leads the sealed bytes
        assert len(plain) == length and signature_length == 16, "tampered encrypted body"
        return plain

    def _seal(self, data: bytes) -> bytes:
        assert self.ntlm is not None
        sealed = self.ntlm.wrap(data, encrypt=True).data  # 16-byte signature + sealed message
        return (
            BOUNDARY + b"\r\n"
            b"\tContent-Type: " + ENCRYPTED_PROTOCOL.encode() + b"\r\n"
            b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length="
            + str(len(data)).encode()
            + b"\r\n"
            + BOUNDARY
            + b"\r\n"
            + _OCTET_HEADER
            + struct.pack("<I", 16)
            + sealed
            + BOUNDARY
            + b"--\r\n"
        )

    def _reply(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers or []:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _pump(pipe: IO[bytes], command: Command, name: str) -> None:
    """Move a process's output into the command's pending buffer until the pipe closes."""
    with pipe:
        while chunk := os.read(pipe.fileno(), _STREAM_CAP):
            with command.changed:
                command.pending[name] += chunk
                command.changed.notify_all()
    command.process.wait()  # reap it, so "finished" means gone, not a zombie
    with command.changed:
        command.open_streams -= 1
        command.changed.notify_all()


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(process.pid, signal.SIGKILL)


def _text(node: ET.Element, path: str) -> str:
    found = node.find(path, NS)
    return (found.text or "").strip() if found is not None else ""


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"PT([\d.]+)S", duration)
    return float(match.group(1)) if match else 60.0


def _envelope(action: str, relates_to: str, body: str) -> str:
    namespaces = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in NS.items())
    return (
        f'<s:Envelope xml:lang="en-US" {namespaces}><s:Header>'
        f"<a:Action>{action}</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>"
        f"</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    )


def _fault(relates_to: str, subcode: str, code: int, message: str) -> str:
    return _envelope(
        "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault",
        relates_to,
        "<s:Fault><s:Code><s:Value>s:Receiver</s:Value>"
        f"<s:Subcode><s:Value>{subcode}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{escape(message)}</s:Text></s:Reason>'
        f'<s:Detail><f:WSManFault Code="{code}" Machine="127.0.0.1">'
        f"<f:Message>{escape(message)}</f:Message></f:WSManFault></s:Detail></s:Fault>",
    )


def _self_signed_context(directory: Path, host: str) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context
