"""A bounded load test on 127.0.0.1: 20 annotators label 50 items each at the same time over HTTP (``-m slow``;
the default suite runs 8 x 10); every label is in the database and in the export, none twice; the p95 latency
of a label's POST is printed. Clients and server share one Python process (and its GIL), so the figures are
an upper bound of the server's own latency."""
import re
import threading
import time

import pytest

for _module in ("fastapi", "sqlalchemy", "argon2", "jinja2", "sklearn"):  # the studio extra
    pytest.importorskip(_module)

from sqlalchemy import func, select

from .conftest import PASSWORD, Server, csrf_of, write_jsonl

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

OVERLAP = 2


def _annotate(url: str, name: str, pid: int, per_annotator: int, latencies: list, errors: list):
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            token = csrf_of(c.get("/login").text)
            assert c.post("/login", data={"name": name, "password": PASSWORD, "csrf": token}).status_code == 303
            for _ in range(per_annotator):
                page = c.get(f"/annotate/{pid}")
                aid = re.search(rf'action="/annotate/{pid}/(\d+)"', page.text).group(1)
                first = re.search(r'name="choice" value="(\d)" id="pick-1"', page.text).group(1)
                t0 = time.perf_counter()
                r = c.post(f"/annotate/{pid}/{aid}", data={"csrf": csrf_of(page.text), "choice": first},
                           follow_redirects=False)
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 303, r.text
            assert 'id="finished"' in c.get(f"/annotate/{pid}").text
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append(f"{name}: {exc!r}")


@pytest.mark.parametrize("annotators,per_annotator", [
    pytest.param(20, 50, marks=pytest.mark.slow, id="20x50"),
    pytest.param(8, 10, id="8x10"),
])
def test_concurrent_annotators(studio, tmp_path, annotators, per_annotator):
    from alignkit.studio.annotate import create_project, export_rows, gather
    from alignkit.studio.auth import hash_password
    from alignkit.studio.db import Label, Project, User

    app, _ = studio
    n_items = annotators * per_annotator // OVERLAP
    pairs = write_jsonl(tmp_path / "many.jsonl", [{"prompt": f"prompt {i}", "chosen": f"a{i}", "rejected": f"b{i}"}
                                                  for i in range(n_items)])
    names = [f"ann{i:02d}" for i in range(annotators)]
    with app.state.sessions() as db:
        hashed = hash_password(PASSWORD)  # one Argon2 hash for all: each login still verifies it
        users = [User(name=n, password_hash=hashed, role="annotator") for n in names]
        db.add_all(users)
        db.commit()
        pid = create_project(db, "load", "pairwise", "g", OVERLAP, users, gather([str(pairs)]), [str(pairs)]).id
    latencies, errors = [], []
    with Server(app) as srv:
        t0 = time.perf_counter()
        threads = [threading.Thread(target=_annotate, args=(srv.url, n, pid, per_annotator, latencies, errors))
                   for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        wall = time.perf_counter() - t0
    assert not errors, errors[:3]
    with app.state.sessions() as db:
        total = db.scalar(select(func.count()).select_from(Label).where(Label.project_id == pid))
        distinct = db.scalar(select(func.count(func.distinct(Label.assignment_id))).where(Label.project_id == pid))
        per_user = dict(db.execute(select(User.name, func.count()).join(Label, Label.user_id == User.id)
                                   .group_by(User.name)).all())
        rows, counts = export_rows(db, db.get(Project, pid), "preference")
    assert total == distinct == annotators * per_annotator
    assert per_user == {n: per_annotator for n in names}
    keys = [(r["annotator"], r["item"]) for r in rows]
    assert len(rows) == len(set(keys)) == annotators * per_annotator
    lat = sorted(latencies)
    p50, p95 = lat[len(lat) // 2], lat[int(0.95 * (len(lat) - 1))]
    print(f"\nstudio load test: {len(lat)} labels by {annotators} concurrent annotators in {wall:.1f} s; "
          f"label POST latency p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms")
