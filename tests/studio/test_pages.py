"""The studio's pages through FastAPI's TestClient: data browser, templates saved as data configs that
compose like `alignkit train data=...`, annotation round trip, blind evaluation and runs dashboard."""
import json
import re
from pathlib import Path

import pytest

for _module in ("fastapi", "sqlalchemy", "argon2", "jinja2", "sklearn"):  # the studio extra
    pytest.importorskip(_module)

from .conftest import csrf_of, login, write_jsonl

pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402


def test_data_browser_counts_filters_and_pages(studio):
    app, _ = studio
    admin = login(TestClient(app), "admin")
    page = admin.get("/data?name=hh-rlhf-small")
    assert page.status_code == 200
    # hh-rlhf-small: max_examples 300 -> 300 examples, 60 held out
    assert re.search(r'id="count-0">300</span> examples \(240 train, 60 held out\)', page.text)
    assert 'id="matched">300<' in page.text and "page 1 of 15" in page.text
    assert 'id="mixture">300 examples: 240 train, 60 held out<' in page.text
    found = admin.get("/data?name=hh-rlhf-small&q=gun")
    n = int(re.search(r'id="matched">(\d+)<', found.text).group(1))
    assert 0 < n < 300
    # the count agrees with a search over the examples alignkit's loader gives
    from alignkit.studio import data as dv

    cfg = dv.compose_run_config(app.state.settings.home, "hh-rlhf-small", [])
    view = dv.load_view(cfg, "hh-rlhf-small")
    assert sum(dv.matches(ex, "preference", "gun") for ex in view.sources[0].examples) == n
    over = admin.get("/data?name=hh-rlhf-small&truncated=true")
    stats_over = int(re.search(r"over max_length=256: <b>(\d+)</b>", page.text).group(1))
    assert int(re.search(r'id="matched">(\d+)<', over.text).group(1)) == stats_over
    ex = admin.get("/data/example?name=hh-rlhf-small&source=0&i=3")
    assert ex.status_code == 200 and "chosen" in ex.text and "rejected" in ex.text


def test_histogram_and_script_detection():
    from alignkit.studio.data import histogram, script_of

    assert histogram([1, 2, 2, 3, 10], bins=3) == [
        {"lo": 1, "hi": 4, "count": 4, "height": 100}, {"lo": 5, "hi": 8, "count": 0, "height": 0},
        {"lo": 9, "hi": 12, "count": 1, "height": 25}]
    texts = ("Hello there", "Привет мир", "你好世界", "123")
    assert [script_of(t) for t in texts] == ["latin", "cyrillic", "cjk", "none"]


def test_template_saved_as_a_data_config_that_composes(studio, tmp_path):
    app, settings = studio
    raw = write_jsonl(tmp_path / "tasks.jsonl", [{"instruction": f"Say {w}", "input": w, "output": w.upper()}
                                                 for w in ("hi", "yo", "hey", "hello", "howdy")])
    admin = login(TestClient(app), "admin")
    page = admin.get(f"/templates?path={raw}&kind=sft")
    assert "<code>instruction</code>" in page.text
    form = {"csrf": csrf_of(page.text), "path": str(raw), "kind": "sft", "name": "shout",
            "slot_prompt": "{{ instruction }}: '{{ input }}'", "slot_completion": "{{ output }}", "max_length": "64"}
    prev = admin.post("/templates/preview", data=form)
    assert "Say hi: &#39;hi&#39;" in prev.text and prev.text.count('class="card preview"') == 5
    bad = admin.post("/templates/preview", data={**form, "slot_prompt": "{{ nosuch }}"})
    assert "nosuch" in bad.text and 'id="error"' in bad.text
    saved = admin.post("/templates/save", data=form)
    assert saved.status_code == 200 and "data=shout" in saved.text
    # it composes as `alignkit train <searchpath> data=shout` does, and loads through alignkit's loader
    from alignkit.config.compose import compose_config
    from alignkit.data.load import load_data
    from alignkit.studio.data import formats, searchpath_override

    cfg = compose_config([searchpath_override(settings.home), "data=shout", "algo=sft"])
    assert cfg.data.max_length == 64 and cfg.data.sources[0].format == "sft"
    loaded = load_data(cfg.data, formats(), "sft")
    assert sorted(ex["prompt"] for ex in loaded.train + loaded.eval) == sorted(
        f"Say {w}: '{w}'" for w in ("hi", "yo", "hey", "hello", "howdy"))
    # a template of bare fields becomes a field mapping over the original file
    admin.post("/templates/save", data={**form, "name": "mapped", "slot_prompt": "{{ instruction }}",
                                        "slot_completion": "{{output}}"})
    mapped = compose_config([searchpath_override(settings.home), "data=mapped"]).data.sources[0]
    assert mapped.path == str(raw) and dict(mapped.fields) == {"prompt": "instruction", "completion": "output"}
    browse = admin.get("/data?name=shout")
    assert 'id="count-0">5</span>' in browse.text


def test_annotation_round_trip_over_http(studio, pairs_file):
    app, _ = studio
    admin = login(TestClient(app), "admin")
    page = admin.get("/projects")
    r = admin.post("/projects", data={"csrf": csrf_of(page.text), "name": "http", "mode": "pairwise", "overlap": "2",
                                      "sources": str(pairs_file), "guideline": "pick the kind one",
                                      "annotators": ["alice", "bob"]}, follow_redirects=False)
    assert r.status_code == 303
    pid = int(r.headers["location"].rsplit("/", 1)[1])
    for name in ("alice", "bob"):
        c = login(TestClient(app), name)
        for _ in range(6):
            p = c.get(f"/annotate/{pid}")
            assert "pick the kind one" in p.text
            aid = re.search(rf'action="/annotate/{pid}/(\d+)"', p.text).group(1)
            first = re.search(r'name="choice" value="(\d)" id="pick-1"', p.text).group(1)
            c.post(f"/annotate/{pid}/{aid}", data={"csrf": csrf_of(p.text), "choice": first, "feedback": ""})
        assert 'id="finished"' in c.get(f"/annotate/{pid}").text
    proj = admin.get(f"/projects/{pid}")
    assert 'id="total">12<' in proj.text
    body = admin.get(f"/projects/{pid}/export/preference").text
    rows = [json.loads(line) for line in body.splitlines()]
    assert len(rows) == 12 and {r["annotator"] for r in rows} == {"alice", "bob"}
    # "always the first shown": the pick follows the order shown
    assert all(r["chosen_source"] == r["order_shown"][0] for r in rows)
    w = admin.post(f"/projects/{pid}/export", data={"csrf": csrf_of(proj.text), "format": "unpaired"})
    assert "written:" in w.text


def test_blind_eval_and_runs_pages(studio):
    app, settings = studio
    admin = login(TestClient(app), "admin")
    page = admin.get("/evals")
    assert str(settings.runs / "run-a") in page.text
    r = admin.post("/evals", data={"csrf": csrf_of(page.text), "name": "blind", "run": str(settings.runs / "run-a"),
                                   "run_b": "", "overlap": "1", "annotators": ["alice"]}, follow_redirects=False)
    pid = int(r.headers["location"].rsplit("/", 1)[1])
    alice = login(TestClient(app), "alice")
    for _ in range(6):
        p = alice.get(f"/annotate/{pid}")
        aid = re.search(rf'action="/annotate/{pid}/(\d+)"', p.text).group(1)
        alice.post(f"/annotate/{pid}/{aid}", data={"csrf": csrf_of(p.text), "choice": "0"})  # the policy
    ev = admin.get(f"/evals/{pid}")
    assert 'id="winrate">1.000<' in ev.text
    # the judge's outcomes: "a" on prompt 0, ties elsewhere -> agrees with alice's "a" on 1 of 6; it picked the
    # first-shown response in 11 of its 12 judgements
    assert 'id="judge-agreement">0.167<' in ev.text and 'id="position-bias">0.917<' in ev.text
    admin.post(f"/evals/{pid}/save", data={"csrf": csrf_of(ev.text)})
    saved = json.loads((settings.runs / "run-a" / "eval" / "human_eval.json").read_text())
    assert saved["win_rate"]["n"] == 6 and saved["win_rate"]["value"] == 1.0
    runs = admin.get("/runs").text
    assert "trainer.lr" in runs and "run-a" in runs and "run-b" in runs and "0.0001" in runs and "0.0005" in runs
    assert "alignkit: out of memory" in runs and "algo.beta" in runs and "eval/preference_accuracy" in runs
    view = admin.get("/runs/view?path=run-a").text
    assert "<polyline" in view and "train/loss" in view and "policy answer 1" in view and "win rate 1.000" in view
    assert admin.get("/runs/view?path=../../etc").status_code == 400  # outside the runs folder


def test_rating_and_ranking_forms_over_http(studio, pairs_file, tmp_path):
    from alignkit.studio.db import Label

    app, _ = studio
    ranked = write_jsonl(tmp_path / "ranked.jsonl", [{"prompt": "Name a fruit", "responses": ["apple", "rock", "pear"],
                                                      "scores": [2, 0, 1]}])
    admin = login(TestClient(app), "admin")
    token = csrf_of(admin.get("/projects").text)
    ids = {}
    for name, mode, src in (("rate", "rating", pairs_file), ("rank", "ranking", ranked)):
        r = admin.post("/projects", data={"csrf": token, "name": name, "mode": mode, "overlap": "1", "k": "0",
                                          "sources": str(src), "guideline": "g", "annotators": ["alice"]},
                       follow_redirects=False)
        ids[mode] = int(r.headers["location"].rsplit("/", 1)[1])
    alice = login(TestClient(app), "alice")
    page = alice.get(f"/annotate/{ids['rating']}")
    assert "irrelevant or invalid" in page.text and page.text.count('type="radio"') == 8  # 4 levels x 2 responses
    bad = alice.post(f"/annotate/{ids['rating']}/" + re.search(r'/annotate/\d+/(\d+)"', page.text).group(1),
                     data={"csrf": csrf_of(page.text), "rating_0": "A"})
    assert bad.status_code == 400 and "every response needs a rating" in bad.text
    aid = re.search(r'/annotate/\d+/(\d+)"', page.text).group(1)
    assert alice.post(f"/annotate/{ids['rating']}/{aid}", data={"csrf": csrf_of(page.text), "rating_0": "B",
                                                                 "rating_1": "D", "feedback": "too terse"},
                      follow_redirects=False).status_code == 303
    page = alice.get(f"/annotate/{ids['ranking']}")
    assert page.text.count('name="rank_') == 3
    aid = re.search(r'/annotate/\d+/(\d+)"', page.text).group(1)
    assert alice.post(f"/annotate/{ids['ranking']}/{aid}", data={"csrf": csrf_of(page.text), "rank_0": "1",
                                                                  "rank_1": "3", "rank_2": "2"},
                      follow_redirects=False).status_code == 303
    with app.state.sessions() as db:
        values = [(lab.value, lab.feedback) for lab in db.query(Label).order_by(Label.id)]
    assert values == [({"ratings": ["B", "D"]}, "too terse"), ({"ranking": [0, 2, 1]}, "")]
    rows = [json.loads(x) for x in admin.get(f"/projects/{ids['ranking']}/export/ranked").text.splitlines()]
    assert rows[0]["responses"] == ["apple", "rock", "pear"] and rows[0]["scores"] == [2.0, 0.0, 1.0]


def test_two_source_mixture_from_a_yaml_path(studio, tmp_path):
    from alignkit.studio import data as dv

    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"p{i}", "completion": "x" * i} for i in range(10)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": f"p{i}", "completion": "y"} for i in range(8, 13)])
    (tmp_path / "mix.yaml").write_text(f"name: mix\nsources:\n  - {{path: {a}, weight: 2, eval_size: 2}}\n"
                                       f"  - {{path: {b}, weight: 1, eval_size: 1}}\nmax_length: 8\n")
    app, settings = studio
    cfg = dv.compose_run_config(settings.home, str(tmp_path / "mix.yaml"), [])
    view = dv.load_view(cfg, "mix")
    assert [(s.format, s.n_train, s.n_eval) for s in view.sources] == [("sft", 8, 2), ("sft", 4, 1)]
    m = dv.mixture_stats(view)  # 12 training examples drawn 2:1 -> 8 and 4; p8, p9 in both sources
    assert [r["mixed"] for r in m["sources"]] == [8, 4] and m["shared_prompts"] == 2 and m["examples"] == 15
    assert m["histogram"] == []  # token lengths are measured when the page first shows the data
    admin = login(TestClient(app), "admin")
    page = admin.get(f"/data?name={tmp_path / 'mix.yaml'}&source=1")
    assert 'id="count-1">5</span>' in page.text and 'id="matched">5<' in page.text


def test_launch_refuses_bad_overrides_with_one_line(studio):
    app, _ = studio
    admin = login(TestClient(app), "admin")
    page = admin.get("/launch")
    assert "<option>sft</option>" in page.text and "<option selected>tiny</option>" in page.text
    form = {"csrf": csrf_of(page.text), "algo": "sft", "model": "tiny", "data": "hh-rlhf-small", "max_steps": "1"}
    r = admin.post("/launch", data={**form, "extra": "trainer.lrr=1"})
    assert r.status_code == 400 and "alignkit: &#39;lrr&#39; is not a key of &#39;trainer&#39;; valid keys:" in r.text
    r = admin.post("/launch", data={**form, "extra": "--cfg job"})
    assert r.status_code == 400 and "is not a key=value override" in r.text
    assert app.state.launcher.launches == {}


@pytest.mark.slow
def test_launch_a_run_and_watch_its_log(studio):
    import time

    app, settings = studio
    admin = login(TestClient(app), "admin")
    form = {"csrf": csrf_of(admin.get("/launch").text), "algo": "sft", "model": "tiny", "data": "hh-rlhf-small",
            "max_steps": "2", "extra": "data.sources.0.max_examples=20\ndata.sources.0.eval_size=4\nlogger=none\n"
                                       "trainer.eval_steps=0\ntrainer.batch_size=2\ntrainer.progress=false"}
    r = admin.post("/launch", data=form, follow_redirects=False)
    assert r.headers["location"] == "/launch/1"
    for _ in range(600):
        page = admin.get("/launch/1").text
        if 'id="status">running<' not in page:
            break
        assert 'http-equiv="refresh"' in page
        time.sleep(0.5)
    assert 'id="status">finished<' in page, page[-3000:]
    folder = re.search(r'id="run-folder">([^<]+)<', page).group(1)
    assert folder.startswith(str(settings.runs)) and (Path(folder) / "final" / "config.json").is_file()
    assert Path(folder).name in admin.get("/runs").text
