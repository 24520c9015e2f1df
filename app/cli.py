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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="svp", description="SVP labeling service")
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database migrations").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="migrate the database to the latest schema").set_defaults(func=_db_upgrade)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--role", choices=["admin", "annotator"], required=True)
    create.add_argument("--name", default="bootstrap")
    create.add_argument("--project", type=int, default=None, help="scope the key to one project")
    create.set_defaults(func=_keys_create)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
