"""Security of the studio: every route but /login needs a session, annotators stay in their lane,
model text renders escaped, and every form needs the CSRF token."""
import re

import pytest

for _module in ("fastapi", "sqlalchemy", "argon2", "jinja2", "sklearn"):  # the studio extra
    pytest.importorskip(_module)

from .conftest import PASSWORD, XSS, csrf_of, login

pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from alignkit.studio.app import all_routes  # noqa: E402
from alignkit.studio.annotate import create_project, gather  # noqa: E402
from alignkit.studio.db import User  # noqa: E402

PUBLIC = {("GET", "/login"), ("POST", "/login")}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def _routes(app):
    return [(m, r.path) for r in all_routes(app) for m in sorted(r.methods or []) if m in ("GET", "POST")]


def _make_project(app, pairs_file, names=("alice", "bob"), overlap=2):
    from sqlalchemy import select

    with app.state.sessions() as db:
        users = list(db.scalars(select(User).where(User.name.in_(names)).order_by(User.id)))
        return create_project(db, "p1", "pairwise", "be kind", overlap, users, gather([str(pairs_file)]),
                              [str(pairs_file)]).id


def test_every_route_but_login_refuses_anonymous(studio, pairs_file):
    app, _ = studio
    _make_project(app, pairs_file)
    routes = _routes(app)
    assert len(routes) >= 25 and PUBLIC <= set(routes)
    client = TestClient(app)
    for method, path in routes:
        if (method, path) in PUBLIC:
            continue
        r = client.request(method, _concrete(path), follow_redirects=False)
        if method == "GET":
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), (method, path, r.status_code)
        else:
            assert r.status_code == 401, (method, path, r.status_code)


def test_wrong_password_is_refused(studio):
    client = TestClient(studio[0])
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"name": "alice", "password": "nope-nope", "csrf": token})
    assert r.status_code == 401 and "wrong name or password" in r.text
    assert client.get("/", follow_redirects=False).status_code == 303


def test_annotator_cannot_reach_admin_routes(studio, pairs_file):
    app, _ = studio
    _make_project(app, pairs_file)
    client = login(TestClient(app), "alice")
    allowed = {"/", "/labels", "/logout", "/annotate/{pid}", "/annotate/{pid}/{aid}"}
    token = csrf_of(client.get("/").text)
    checked = 0
    for method, path in _routes(app):
        if (method, path) in PUBLIC or path in allowed:
            continue
        r = client.request(method, _concrete(path), data={"csrf": token} if method == "POST" else None,
                           follow_redirects=False)
        assert r.status_code == 403, (method, path, r.status_code)
        checked += 1
    assert checked >= 20


def test_annotator_cannot_read_or_write_anothers_labels(studio, pairs_file):
    from sqlalchemy import select

    from alignkit.studio.db import Assignment, Label

    app, _ = studio
    pid = _make_project(app, pairs_file, names=("alice",), overlap=1)  # bob has no assignment in p1
    alice, bob = login(TestClient(app), "alice"), login(TestClient(app), "bob")
    page = alice.get(f"/annotate/{pid}")
    aid = int(re.search(rf'action="/annotate/{pid}/(\d+)"', page.text).group(1))
    assert alice.post(f"/annotate/{pid}/{aid}", data={"csrf": csrf_of(page.text), "choice": "0"},
                      follow_redirects=False).status_code == 303
    # bob cannot see alice's project, nor post a label to her assignment, nor see her labels
    assert bob.get(f"/annotate/{pid}").status_code == 404
    token = csrf_of(bob.get("/").text)
    assert bob.post(f"/annotate/{pid}/{aid}", data={"csrf": token, "choice": "1"}).status_code == 404
    nxt = alice.get(f"/annotate/{pid}")
    aid2 = int(re.search(rf'action="/annotate/{pid}/(\d+)"', nxt.text).group(1))
    assert bob.post(f"/annotate/{pid}/{aid2}", data={"csrf": token, "choice": "1"}).status_code == 404
    assert "good answer" not in bob.get("/labels").text and "Question 0" in alice.get("/labels").text
    with app.state.sessions() as db:
        labels = db.scalars(select(Label)).all()
        assert [(lab.assignment_id, lab.value) for lab in labels] == [(aid, {"choice": 0})]
        assert db.get(Assignment, aid2) is not None


def test_script_in_a_response_renders_as_text(studio, pairs_file):
    app, settings = studio
    pid = _make_project(app, pairs_file, names=("alice",), overlap=1)
    alice = login(TestClient(app), "alice")
    page = alice.get(f"/annotate/{pid}")  # item 0 holds the <script> response
    assert "Question 0" in page.text
    assert XSS not in page.text and "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in page.text
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none': no script runs
    admin = login(TestClient(app), "admin")
    for url in ("/runs/view?path=run-a", "/runs/compare?path=run-a&path=run-b"):
        html = admin.get(url).text
        assert XSS not in html and "&lt;script&gt;" in html, url
    # user input echoed in an error message is escaped too
    bad = admin.get("/data", params={"name": XSS})
    assert bad.status_code == 400 and XSS not in bad.text and "&lt;script&gt;" in bad.text


def test_csrf_is_required_on_every_form(studio, pairs_file):
    app, _ = studio
    pid = _make_project(app, pairs_file)
    admin = login(TestClient(app), "admin")
    for method, path in _routes(app):
        if method != "POST" or path == "/logout":
            continue
        for data in ({}, {"csrf": "forged"}):
            r = admin.post(_concrete(path), data=data, follow_redirects=False)
            assert r.status_code == 403 and "CSRF" in r.text, (path, data, r.status_code)
    # a user creation with the token works, without it nothing is created
    token = csrf_of(admin.get("/users").text)
    assert admin.post("/users", data={"name": "carol", "password": PASSWORD, "role": "annotator"}).status_code == 403
    assert admin.post("/users", data={"name": "carol", "password": PASSWORD, "role": "annotator", "csrf": token},
                      follow_redirects=False).status_code == 303
    assert "carol" in admin.get("/users").text
    # a login form posted from another session's token is refused
    other = TestClient(app)
    r = other.post("/login", data={"name": "admin", "password": PASSWORD, "csrf": token})
    assert r.status_code == 403
    alice = login(TestClient(app), "alice")
    page = alice.get(f"/annotate/{pid}")
    aid = re.search(rf'action="/annotate/{pid}/(\d+)"', page.text).group(1)
    assert alice.post(f"/annotate/{pid}/{aid}", data={"choice": "0"}).status_code == 403


def test_passwords_are_argon2_hashes(studio):
    from sqlalchemy import select

    with studio[0].state.sessions() as db:
        stored = db.scalars(select(User.password_hash)).all()
    assert all(h.startswith("$argon2id$") and PASSWORD not in h for h in stored)
