"""The ``svp`` command line: database, keys, server, demo. Subcommands are added per module."""

from __future__ import annotations

import argparse
import sys

from app.config import Settings


def _db_upgrade(args: argparse.Namespace) -> int:
    from app.db.migrate import upgrade

    settings = Settings()
    upgrade(settings.resolved_database_url)
    print(f"database at head: {settings.resolved_database_url}")
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    from app.db.migrate import upgrade
    from app.db.session import session_scope
    from app.services.keys import create_api_key

    settings = Settings()
    upgrade(settings.resolved_database_url)
    with session_scope(settings.resolved_database_url) as session:
        key, secret = create_api_key(session, role=args.role, name=args.name, project_id=args.project)
        key_id = key.id
    print(secret)
    print(f"created {args.role} key {key_id} ({args.name}); the secret above is shown only once", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.db.migrate import upgrade

    settings = Settings()
    upgrade(settings.resolved_database_url)
    mode = "embedded worker" if settings.embedded else f"jobs sent to {settings.broker_url}"
    print(f"serving on http://{args.host}:{args.port} ({mode}); database at head", file=sys.stderr)
    # By import string: svp.asgi builds app.main's app and, with no broker, attaches the in-process
    # worker; naming it as a string keeps this module free of any worker import.
    uvicorn.run(
        "svp.asgi:app_factory",
        factory=True,
        host=args.host,
        port=args.port,
        log_level=args.log_level or settings.log_level.lower(),
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="svp", description="SVP labeling service")
    add_api_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def add_api_commands(sub) -> None:
    """The commands that need only the api (no torch): db, keys, serve. ``svp.cli`` adds the rest."""
    db = sub.add_parser("db", help="database migrations").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="migrate the database to the latest schema").set_defaults(func=_db_upgrade)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--role", choices=["admin", "annotator"], required=True)
    create.add_argument("--name", default="bootstrap")
    create.add_argument("--project", type=int, default=None, help="scope the key to one project")
    create.set_defaults(func=_keys_create)

    serve = sub.add_parser("serve", help="migrate the database, then run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default=None, choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(func=_serve)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
