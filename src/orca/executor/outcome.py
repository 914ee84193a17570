"""What running one command produced, whatever the protocol: the adapters' common result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class RunOutcome:
    # completed = exit 0; failed = non-zero exit or any connection/auth/host-key error
    status: Literal["completed", "failed", "timeout"]
    exit_code: int | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    error_message: str | None
    host_key: str | None  # SSH only: the key required of the server; pin it on first use

    @classmethod
    def failure(cls, message: str, host_key: str | None = None) -> RunOutcome:
        """The command could not run (or its fate is unknown): no exit code, no output."""
        return cls(
            status="failed",
            exit_code=None,
            stdout="",
            stderr="",
            stdout_truncated=False,
            stderr_truncated=False,
            error_message=message,
            host_key=host_key,
        )


class CappedBuffer:
    """Keeps the first `limit` bytes of a stream; the rest is dropped and flagged as truncated."""

    __slots__ = ("data", "limit", "truncated")

    def __init__(self, limit: int) -> None:
        self.data = bytearray()
        self.limit = limit
        self.truncated = False

    def append(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if len(chunk) > room:
            self.truncated = True
        if room > 0:
            self.data += chunk[:room]

    def text(self) -> str:
        # Remote systems may send any encoding (Windows code pages): replace, never fail.
        return self.data.decode("utf-8", errors="replace")
