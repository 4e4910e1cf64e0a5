"""`alignkit studio` from the command line: users, the missing-extra error, isolation from the other
commands, and no committed label lost when the server process is killed."""
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

for _module in ("fastapi", "sqlalchemy", "argon2", "jinja2", "sklearn"):  # the studio extra
    pytest.importorskip(_module)

from .conftest import PASSWORD, csrf_of

httpx = pytest.importorskip("httpx")
ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", ALIGNKIT_STUDIO_PASSWORD=PASSWORD)


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "alignkit", *args], env=ENV, capture_output=True, text=True,
                          timeout=300, **kw)


def test_missing_extra_is_one_line(monkeypatch, capsys):
    import importlib.util

    from alignkit.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    assert main(["studio"]) == 2
    assert capsys.readouterr().err.strip() == ('alignkit: alignkit studio needs fastapi, which is not installed; '
                                               'pip install -e ".[studio]"')


def test_other_commands_never_import_the_studio():
    code = ("import sys, alignkit.cli, alignkit.trainer, alignkit.evaluation.run, alignkit.datagen.cli, alignkit.api; "
            "bad = [m for m in sys.modules if m.startswith(('alignkit.studio', 'fastapi', 'sqlalchemy', 'uvicorn'))]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(home, port):
    proc = subprocess.Popen([sys.executable, "-m", "alignkit", "studio", f"home={home}", f"port={port}",
                             f"runs={home}/runs"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(600):
        try:
            httpx.get(f"http://127.0.0.1:{port}/login", timeout=1)
            return proc
        except httpx.HTTPError:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read())
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the studio did not start")


def test_killed_server_loses_no_committed_label(tmp_path, pairs_file):
    home = tmp_path / "studio"
    r = _cli("studio", "user", "name=boss", "role=admin", f"home={home}")
    assert r.returncode == 0 and "created admin boss" in r.stdout, r.stderr
    bad = _cli("studio", "user", "name=boss", f"home={home}")
    assert bad.returncode == 2 and bad.stderr.strip() == "alignkit: user 'boss' already exists; pick another name"
    from alignkit.studio.app import StudioSettings
    from alignkit.studio.auth import create_user
    from alignkit.studio.db import make_engine, session_factory

    engine = make_engine(StudioSettings(home=home).db_url)
    with session_factory(engine)() as db:
        create_user(db, "ann", PASSWORD)
    engine.dispose()
    port = _free_port()
    proc = _start(home, port)
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=120) as admin:
            admin.post("/login", data={"name": "boss", "password": PASSWORD, "csrf": csrf_of(admin.get("/login").text)})
            page = admin.get("/projects")
            r = admin.post("/projects", data={"csrf": csrf_of(page.text), "name": "k", "mode": "pairwise",
                                              "overlap": "1", "sources": str(pairs_file), "annotators": ["ann"]})
            pid = int(r.headers["location"].rsplit("/", 1)[1])
        with httpx.Client(base_url=url, timeout=120) as ann:
            ann.post("/login", data={"name": "ann", "password": PASSWORD, "csrf": csrf_of(ann.get("/login").text)})
            for _ in range(3):
                p = ann.get(f"/annotate/{pid}")
                aid = re.search(rf'action="/annotate/{pid}/(\d+)"', p.text).group(1)
                r = ann.post(f"/annotate/{pid}/{aid}", data={"csrf": csrf_of(p.text), "choice": "tie"})
                assert r.status_code == 303
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # the database as the next server start opens it: every label the browser saw accepted is there
    from sqlalchemy import select

    from alignkit.studio.db import Label

    engine = make_engine(StudioSettings(home=home).db_url)
    with session_factory(engine)() as db:
        assert [lab.value for lab in db.scalars(select(Label))] == [{"choice": "tie"}] * 3
    engine.dispose()
