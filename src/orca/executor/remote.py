"""One way to run a command on any system: the protocol follows the system's type."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Literal, cast

from orca.application.app import OrcaApplication
from orca.application.executions import Connection, pin_host_key
from orca.executor import ssh, winrm
from orca.executor.outcome import RunOutcome
from orca.executor.pool import SshPool, SshTarget


@dataclass(frozen=True, slots=True)
class Remote:
    app: OrcaApplication
    ssh: SshPool
    winrm: winrm.WinrmLimits

    async def close(self) -> None:
        """Close the pooled SSH connections (at shutdown, once the commands have ended)."""
        await self.ssh.close()

    async def run(self, c: Connection, command: str, *, timeout: float) -> RunOutcome:
        """Run ``command``; pin the host key seen on first use; say which system in errors."""
        if c.system_type == "windows":
            return await winrm.run_command(
                winrm.WinrmTarget(
                    host=c.hostname,
                    port=c.port,
                    username=c.username,
                    password=c.credentials.password or "",
                    transport=cast(Literal["ntlm", "basic"], c.winrm_transport),
                    https=c.use_https,
                    verify_tls=c.verify_tls,
                ),
                command,
                timeout=timeout,
                limits=self.winrm,
            )
        target = SshTarget(
            host=c.hostname,
            port=c.port,
            username=c.username,
            password=c.credentials.password,
            private_key=c.credentials.private_key,
            passphrase=c.credentials.passphrase,
            host_key=c.host_key,
        )
        outcome = await ssh.run_command(self.ssh, target, command, timeout=timeout)
        if c.host_key is None and outcome.host_key is not None:
            await asyncio.to_thread(pin_host_key, self.app, c.system_id, outcome.host_key)
        if outcome.error_message and "<id>" in outcome.error_message:
            message = outcome.error_message.replace("<id>", str(c.system_id))
            outcome = replace(outcome, error_message=message)
        return outcome
