"""orca serve | api | worker | projector | migrate | users | audit | rebuild | rotate-key"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import signal
import sys
import time
from collections.abc import Sequence

import msgspec
import uvicorn
import uvloop

from orca import __version__
from orca.application import users
from orca.application.audit import AuditEntry, acting, as_json_line, read_log
from orca.application.sealing import new_master_key
from orca.bootstrap import Services, build, migrate, rotate_secret_key
from orca.config import ConfigError, Settings
from orca.domain.errors import DomainError, Invalid
from orca.domain.user import ROLES
from orca.http.app import create_app
from orca.projections.projector import Projector
from orca.projections.rebuild import PROJECTIONS, rebuild
from orca.projections.views import READ_MODELS

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
    await services.remote.close()  # pooled SSH connections: workers' and connection tests'


def _run(settings: Settings, *, api: bool, executor: bool, projector: bool) -> None:
    services = build(settings)
    try:
        services.start_listener()
        if projector:
            services.start_projector()
        # uvicorn applies its loop choice only in Server.run(); we drive serve() ourselves,
        # so pick uvloop here (the asyncio loop loses TCP_NODELAY with several workers).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(services, api=api, executor=executor))
    finally:
        services.close()


def _users_parser(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="list users, their roles and whether they are active")
    add = actions.add_parser("add", help="add a user (the password is asked for)")
    add.add_argument("username")
    add.add_argument("--role", choices=ROLES, default="viewer")
    role = actions.add_parser("set-role", help="change a user's role (ends their sessions)")
    role.add_argument("username")
    role.add_argument("role", choices=ROLES)
    for name, text in (("disable", "stop a user (ends their sessions)"), ("enable", "let back in")):
        actions.add_parser(name, help=text).add_argument("username")
    passwd = actions.add_parser("passwd", help="set a user's password (ends their sessions)")
    passwd.add_argument("username")
    for sub in (add, passwd):
        sub.add_argument(
            "--password-stdin", action="store_true", help="read the password from standard input"
        )


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise Invalid("password", "the two passwords differ")
    return first


def _user_action(services: Services, args: argparse.Namespace, by: str) -> None:
    app = services.app
    if args.action == "list":
        Projector(app, services.store, services.events, services.views, READ_MODELS).catch_up()
        for user in services.queries.list_users():
            state = "active" if user.is_active else "disabled"
            print(f"{user.username:<24} {user.role:<9} {state}")
    elif args.action == "add":
        users.add_user(app, args.username, _password(args), args.role)
    elif args.action == "set-role":
        users.set_role(app, args.username, args.role, by=by)
    elif args.action in ("disable", "enable"):
        users.set_active(app, args.username, args.action == "enable", by=by)
    elif args.action == "passwd":
        users.change_password(app, args.username, _password(args), by=by)


def _audit(settings: Settings, args: argparse.Namespace) -> int:
    """Print the event log in order; with --follow, keep printing as events arrive."""
    services = build(settings)
    services.start_listener()
    position = args.after
    try:
        while True:
            news = services.events.changes
            entries, position = read_log(
                services.app, after=position, limit=500, aggregate_id=args.aggregate
            )
            for item in entries:
                print(as_json_line(item) if args.json else _audit_row(item), flush=True)
            if not entries and not args.follow:
                return 0
            if not entries:
                services.events.wait_change(news, timeout=1.0)
    except KeyboardInterrupt:
        return 0
    finally:
        services.close()


def _audit_row(item: AuditEntry) -> str:
    data = msgspec.json.encode(item.data).decode()
    return (
        f"{item.position:>8}  {item.timestamp[:23]}  {item.actor:<20.20}  "
        f"{item.aggregate_id[:8]}  {item.event_type:<28}  {data[:120]}"
    )


def _rebuild(settings: Settings, names: Sequence[str]) -> int:
    services = build(settings)

    def progress(done: int, total: int, seconds: float) -> None:
        rate = done / seconds if seconds > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        width = 30
        filled = int(width * done / total) if total else width
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} events"
            f"  {rate:,.0f} events/s  ETA {eta:,.0f} s "
        )
        sys.stderr.flush()

    started = time.monotonic()
    try:
        applied = rebuild(services.app, settings.postgres, settings.sqlite_path, progress, names)
    finally:
        services.close()
    seconds = time.monotonic() - started
    sys.stderr.write("\n")
    events = max(applied.values())
    print(
        f"rebuilt {' and '.join(applied)} from {events} events in {seconds:.1f} s"
        f" ({events / seconds if seconds else 0:,.0f} events/s); switched in."
    )
    return 0


def _rotate_key(settings: Settings, args: argparse.Namespace) -> int:
    new_key = sys.stdin.readline().strip() if args.new_key_stdin else new_master_key()
    try:
        count = rotate_secret_key(settings, new_key)
    except ValueError as error:
        print(f"orca rotate-key: {error}", file=sys.stderr)
        return 2
    print(f"rewrapped {count} data keys.")
    if settings.secret_key:
        shown = "(the key you gave)" if args.new_key_stdin else new_key
        print(
            f"Now set ORCA_SECRET_KEY={shown} for every Orca process and restart them."
            " API tokens signed with the old key stop working."
        )
    else:
        print(f"{settings.data_dir / 'secret.key'} holds the new key. Restart Orca.")
    return 0


def _users(settings: Settings, args: argparse.Namespace) -> int:
    _print_admin_password(migrate(settings))
    services = build(settings)
    by = f"cli:{getpass.getuser()}"
    try:
        with acting(by):
            _user_action(services, args, by)
    except DomainError as error:
        what = f"{error.field} {error}" if isinstance(error, Invalid) else str(error)
        print(f"orca users {args.action}: {what}", file=sys.stderr)
        return 1
    finally:
        services.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orca", description="Orca job orchestrator")
    parser.add_argument("--version", action="version", version=f"orca {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="API, projections and executor in one process")
    commands.add_parser("api", help="the HTTP API only (PostgreSQL; scale out behind a balancer)")
    commands.add_parser("worker", help="an executor only (PostgreSQL)")
    commands.add_parser("projector", help="keeps the read models up to date (PostgreSQL)")
    commands.add_parser("migrate", help="create tables and the first admin, then exit")
    _users_parser(commands.add_parser("users", help="manage who may use the API"))
    rotate = commands.add_parser(
        "rotate-key", help="move the sealed secrets to a new ORCA_SECRET_KEY"
    )
    rotate.add_argument(
        "--new-key-stdin", action="store_true", help="read the new key from standard input"
    )
    rebuild_ = commands.add_parser(
        "rebuild", help="rebuild the read models from the first event, then switch them in"
    )
    rebuild_.add_argument(
        "--projection",
        action="append",
        choices=list(PROJECTIONS),
        metavar="NAME",
        help=f"rebuild only this one: {' or '.join(PROJECTIONS)} (repeat for several;"
        " default: all)",
    )
    audit = commands.add_parser("audit", help="print the event log: who did what, when")
    audit.add_argument("--after", type=int, default=0, help="start after this log position")
    audit.add_argument("--follow", action="store_true", help="keep printing new events")
    audit.add_argument("--aggregate", help="only the events of this aggregate id")
    audit.add_argument("--json", action="store_true", help="JSON lines instead of a table")
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

    if args.command == "users":
        return _users(settings, args)
    if args.command == "audit":
        return _audit(settings, args)
    if args.command == "rebuild":
        return _rebuild(settings, list(dict.fromkeys(args.projection or PROJECTIONS)))
    if args.command == "rotate-key":
        return _rotate_key(settings, args)
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
