"""The connection test: can Orca log in to a system, and what does it say it is?"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from uuid import UUID

from orca.application.executions import connection_of
from orca.application.sealing import Vault
from orca.application.systems import record_health
from orca.executor.remote import Remote

PROBE_TIMEOUT_SECONDS = 30
PROBES = {"linux": "whoami && hostname && uname -a", "windows": "whoami && hostname && ver"}


@dataclass(frozen=True, slots=True)
class ProbeResult:
    success: bool
    response_time_ms: float
    whoami: str = ""
    hostname: str = ""
    os_info: str = ""
    error: str | None = None
    position: int = 0


async def test_connection(remote: Remote, vault: Vault, system_id: UUID) -> ProbeResult:
    """Run the probe commands, record ``System.HealthChecked`` and return what was seen."""
    connection = await asyncio.to_thread(connection_of, remote.app, vault, system_id)
    started = time.perf_counter()
    outcome = await remote.run(
        connection, PROBES[connection.system_type], timeout=PROBE_TIMEOUT_SECONDS
    )
    elapsed = round((time.perf_counter() - started) * 1000, 1)
    lines = [line.strip() for line in outcome.stdout.splitlines() if line.strip()] + ["", ""]
    error = outcome.error_message
    if error is None and outcome.status != "completed":
        error = f"probe exited with code {outcome.exit_code}: {outcome.stderr.strip()[:500]}"
    position = await asyncio.to_thread(
        record_health,
        remote.app,
        system_id,
        healthy=outcome.status == "completed",
        response_time_ms=elapsed,
        error=error,
    )
    return ProbeResult(
        success=outcome.status == "completed",
        response_time_ms=elapsed,
        whoami=lines[0],
        hostname=lines[1],
        os_info=" ".join(lines[2:]).strip(),
        error=error,
        position=position,
    )
