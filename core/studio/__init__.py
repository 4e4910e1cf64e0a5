"""``alignkit studio``: a web app for the human side of alignment (install with ``pip install -e ".[studio]"``).

Data browser and prompt templates, human preference collection, blind human evaluation of runs and a
runs dashboard, over SQLAlchemy (SQLite by default, PostgreSQL by URL). Nothing else in alignkit
imports this package. See ``docs/studio.md``.
"""
from __future__ import annotations

import getpass
import os
import secrets
import sys
from pathlib import Path

from alignkit.errors import UserError

USAGE = """\
usage: alignkit studio [data=<preset|yaml>[,...]] [runs=<folder>] [db=<url>] [home=<folder>]
                       [host=127.0.0.1] [port=8765] [model=<preset> | model.path=...]
       alignkit studio user name=<name> [role=annotator|admin] [home=...] [db=...]   (password: prompted, or
                                                                                     $ALIGNKIT_STUDIO_PASSWORD)

  home   the studio's folder (default ./studio): studio.db, secret.key, conf/data/ (saved templates), exports/
  db     database URL (default sqlite:///<home>/studio.db; a team: postgresql+psycopg://user:pw@host/db)
  runs   the folder the runs dashboard lists (default ./outputs)
  data   data configs the data browser offers first (conf/data presets and saved templates are always listed)
  model  the model whose tokenizer measures token lengths (default: the run config's, model=tiny)
"""
SERVER_KEYS = ("data", "runs", "db", "home", "host", "port", "model")
USER_KEYS = ("name", "role", "home", "db")


def parse_args(argv: list[str], keys: tuple = SERVER_KEYS, what: str = "alignkit studio") -> dict:
    """``key=value`` arguments (``model.*`` too for the server); anything else is a one-line UserError."""
    out: dict = {}
    for a in argv:
        key, eq, value = a.partition("=")
        if not eq or (key not in keys and not (keys is SERVER_KEYS and key.startswith("model."))):
            raise UserError(f"unknown argument {a!r} for {what}", f"use key=value with keys {', '.join(keys)}")
        out[key] = value
    return out


def settings_from(args: dict):
    from alignkit.studio.app import StudioSettings

    model = [f"model={args['model']}"] if args.get("model") else []
    model += [f"{k}={v}" for k, v in args.items() if k.startswith("model.")]
    return StudioSettings(home=Path(args.get("home", "studio")), db=args.get("db", ""),
                          runs=Path(args.get("runs", "outputs")).resolve(),
                          data=[d for d in args.get("data", "").split(",") if d], model=model)


def ensure_admin(settings) -> str | None:
    """Create the user ``admin`` with a random password when the database has no user; return the password."""
    from sqlalchemy import func, select

    from alignkit.studio.auth import create_user
    from alignkit.studio.db import User, make_engine, session_factory

    with session_factory(make_engine(settings.db_url))() as db:
        if db.scalar(select(func.count()).select_from(User)):
            return None
        password = secrets.token_urlsafe(12)
        create_user(db, "admin", password, "admin")
        return password


def add_user(args: dict) -> int:
    from alignkit.studio.auth import create_user
    from alignkit.studio.db import make_engine, session_factory

    settings = settings_from(args)
    settings.home.mkdir(parents=True, exist_ok=True)
    password = os.environ.get("ALIGNKIT_STUDIO_PASSWORD") or getpass.getpass(f"password for {args.get('name')}: ")
    with session_factory(make_engine(settings.db_url))() as db:
        user = create_user(db, args.get("name", ""), password, args.get("role", "annotator"))
    print(f"created {user.role} {user.name} in {settings.db_url}")
    return 0


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv and argv[0] == "user":
        return add_user(parse_args(argv[1:], USER_KEYS, "alignkit studio user"))
    args = parse_args(argv)
    import uvicorn

    from alignkit.studio.app import create_app

    settings = settings_from(args)
    app = create_app(settings)
    password = ensure_admin(settings)
    host, port = args.get("host", "127.0.0.1"), int(args.get("port", "8765"))
    if password:
        print(f"alignkit studio: created user 'admin' with password {password} (shown once; add users on /users)",
              flush=True)
    print(f"alignkit studio: http://{host}:{port}/  (database {settings.db_url})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
