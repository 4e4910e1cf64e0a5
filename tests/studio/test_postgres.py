"""The studio on PostgreSQL (``db=postgresql+psycopg://...``): a throwaway server is started with the
machine's ``initdb`` / ``pg_ctl`` on 127.0.0.1 when they exist (as the ``postgres`` user when run as root);
skipped otherwise. The concurrent-annotator check runs against it (``-m slow``)."""
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

for _module in ("fastapi", "sqlalchemy", "argon2", "jinja2", "sklearn"):  # the studio extra
    pytest.importorskip(_module)

from .conftest import PASSWORD, Server, write_jsonl
from .test_load import _annotate

pytest.importorskip("psycopg")


def _tool(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for p in Path("/usr/lib/postgresql").glob(f"*/bin/{name}")), None)


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory):
    initdb, pg_ctl = _tool("initdb"), _tool("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed")
    as_user = []
    if os.geteuid() == 0:
        if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
            pytest.skip("running as root without a 'postgres' user to run the server")
        as_user = ["runuser", "-u", "postgres", "--"]
    folder = tmp_path_factory.mktemp("pg")
    data = folder / "data"
    if as_user:
        os.chmod(folder, 0o777)
        for p in folder.parents:
            if str(p).startswith("/tmp/") and p != Path("/tmp"):
                os.chmod(p, os.stat(p).st_mode | 0o005)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run(as_user + [initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"initdb failed: {r.stderr.strip()[-300:]}")
    opts = f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=on"
    r = subprocess.run(as_user + [pg_ctl, "-D", str(data), "-o", opts, "-l", str(folder / "log"), "-w", "start"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"pg_ctl start failed: {r.stderr.strip()[-300:]}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    subprocess.run(as_user + [pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)


@pytest.mark.slow
def test_concurrent_annotators_on_postgres(pg_url, tmp_path):
    from sqlalchemy import func, select

    from alignkit.studio.annotate import create_project, export_rows, gather
    from alignkit.studio.app import StudioSettings, create_app
    from alignkit.studio.auth import hash_password
    from alignkit.studio.db import Label, Project, User

    settings = StudioSettings(home=tmp_path / "studio", db=pg_url, runs=tmp_path)
    app = create_app(settings)
    annotators, per = 6, 10
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"p{i}", "chosen": f"a{i}", "rejected": f"b{i}"}
                                               for i in range(annotators * per // 2)])
    names = [f"pg{i}" for i in range(annotators)]
    with app.state.sessions() as db:
        hashed = hash_password(PASSWORD)
        users = [User(name=n, password_hash=hashed) for n in names]
        db.add_all(users)
        db.commit()
        pid = create_project(db, "pg", "pairwise", "g", 2, users, gather([str(pairs)]), [str(pairs)]).id
    latencies, errors = [], []
    with Server(app) as srv:
        threads = [threading.Thread(target=_annotate, args=(srv.url, n, pid, per, latencies, errors)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    assert not errors, errors[:3]
    app.state.engine.dispose()
    again = create_app(settings)  # a fresh engine and pool: what was committed is there
    with again.state.sessions() as db:
        n = db.scalar(select(func.count()).select_from(Label).where(Label.project_id == pid))
        distinct = db.scalar(select(func.count(func.distinct(Label.assignment_id))).where(Label.project_id == pid))
        rows, _ = export_rows(db, db.get(Project, pid), "preference")
    assert n == distinct == len(rows) == annotators * per
    again.state.engine.dispose()
