"""orca serve | api | worker | projector | migrate"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

import uvicorn

from orca import __version__
from orca.bootstrap import Services, build, migrate
from orca.config import ConfigError, Settings
from orca.http.app import create_app

log = logging.getLogger("orca")


def _print_admin_password(password: str | None) -> None:
    if password:
        print(
            "\n  Orca created the user 'admin' with this generated password (shown once):\n"
            f"\n      {password}\n\n"
            "  Set ORCA_ADMIN_PASSWORD before the first start to choose it yourself.\n",
            flush=True,
        )


def _server(services: Services) -> uvicorn.Server:
    s = services.settings
    config = uvicorn.Config(
        create_app(services),
        host=s.host,
        port=s.port,
        log_level=s.log_level,
        proxy_headers=False,
        access_log=False,
        server_header=False,
    )
    return uvicorn.Server(config)


async def _serve(services: Services, *, api: bool, executor: bool) -> None:
    stop = asyncio.Event()
    tasks = []
    if executor:
        tasks.append(asyncio.create_task(services.executor().run(stop)))
    if api:
        server = _server(services)
        await server.serve()  # returns on SIGINT/SIGTERM
    else:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    stop.set()
    await asyncio.gather(*tasks)


def _run(settings: Settings, *, api: bool, executor: bool, projector: bool) -> None:
    services = build(settings)
    try:
        services.start_listener()
        if projector:
            services.start_projector()
        asyncio.run(_serve(services, api=api, executor=executor))
    finally:
        services.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orca", description="Orca job orchestrator")
    parser.add_argument("--version", action="version", version=f"orca {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="API, projections and executor in one process")
    commands.add_parser("api", help="the HTTP API only (PostgreSQL; scale out behind a balancer)")
    commands.add_parser("worker", help="an executor only (PostgreSQL)")
    commands.add_parser("projector", help="keeps the read models up to date (PostgreSQL)")
    commands.add_parser("migrate", help="create tables and the first admin, then exit")
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"orca: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if args.command in ("api", "worker", "projector") and settings.postgres is None:
        print(f"orca {args.command}: needs ORCA_DATABASE_URL=postgresql://...", file=sys.stderr)
        return 2

    if args.command == "migrate":
        _print_admin_password(migrate(settings))
    elif args.command == "serve":
        _print_admin_password(migrate(settings))
        _run(settings, api=True, executor=True, projector=True)
    elif args.command == "api":
        _run(settings, api=True, executor=False, projector=False)
    elif args.command == "worker":
        _run(settings, api=False, executor=True, projector=False)
    elif args.command == "projector":
        _run(settings, api=False, executor=False, projector=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
