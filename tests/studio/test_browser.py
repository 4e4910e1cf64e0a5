"""The studio in a real browser: Playwright driving Debian's Chromium (`apt-get install chromium`; no browser
download). Skipped when /usr/bin/chromium (or $ALIGNKIT_CHROMIUM) is absent.

ALIGNKIT_STUDIO_SCREENSHOTS=<folder> saves the screenshots of docs/studio.md there."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

for _module in ("fastapi", "sqlalchemy", "argon2", "jinja2", "sklearn"):  # the studio extra
    pytest.importorskip(_module)

from .conftest import PASSWORD, PROMPTS, XSS, Server, write_jsonl

CHROMIUM = os.environ.get("ALIGNKIT_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]
SHOTS = os.environ.get("ALIGNKIT_STUDIO_SCREENSHOTS")

if not Path(CHROMIUM).exists():
    pytest.skip(f"browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def served(studio):
    with Server(studio[0]) as srv:
        yield srv.url, studio[1]


def shot(page, name: str):
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"studio-{name}.png"))


def new_page(browser, url: str, name: str, password: str = PASSWORD):
    """A fresh browser context signed in as ``name`` through the login form."""
    ctx = browser.new_context(viewport={"width": 1200, "height": 760}, base_url=url)
    page = ctx.new_page()
    page.goto("/")
    assert "/login" in page.url
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")
    return page


def test_login(browser, served):
    url, _ = served
    ctx = browser.new_context(viewport={"width": 1200, "height": 760}, base_url=url)
    page = ctx.new_page()
    page.goto("/runs")
    assert "/login" in page.url
    shot(page, "login")
    page.fill("input[name=name]", "alice")
    page.fill("input[name=password]", "wrong-password")
    page.click("button[type=submit]")
    assert page.locator("#error").inner_text() == "wrong name or password"
    page = new_page(browser, url, "alice")
    assert "alice (annotator)" in page.content()
    page.goto("/runs")
    assert page.locator("#error").inner_text() == "admins only"
    page.goto("/")
    page.click("text=Sign out")
    page.goto("/")
    assert "/login" in page.url
    ctx.close()


def test_browse_and_filter_a_data_set(browser, served):
    url, _ = served
    page = new_page(browser, url, "admin")
    page.click("nav >> text=Data")
    page.select_option("select[name=name]", "hh-rlhf-small")
    page.click("text=Apply")
    assert page.locator("#count-0").inner_text() == "300" and page.locator("#matched").inner_text() == "300"
    assert page.locator("#examples tr").count() == 21  # header + one page of 20
    shot(page, "data")
    page.fill("input[name=q]", "gun")
    page.click("text=Apply")
    matched = int(page.locator("#matched").inner_text())
    assert 0 < matched < 300
    rows = page.locator("#examples tr").count() - 1
    assert rows == min(matched, 20)
    page.locator("#examples tr").nth(1).locator("a").click()  # the table shows texts cut; the sample view in full
    assert "example" in page.locator("h1").inner_text() and page.locator("pre").count() >= 3
    assert "gun" in page.locator("main").inner_text().lower()


def _label_as(browser, url: str, name: str, pid: int, pick, shot_name: str | None = None):
    """Label every item of project ``pid`` as ``name``; ``pick(prompt, page)`` returns the button id to press."""
    page = new_page(browser, url, name)
    page.click(f"a[href='/annotate/{pid}']")
    n = 0
    while page.locator("#finished").count() == 0:
        prompt = page.locator("#prompt").inner_text()
        if n == 0 and shot_name:
            shot(page, shot_name)
        page.click("#" + pick(prompt, page))
        page.wait_for_load_state()
        n += 1
    return n


def _create_project(page, name: str, sources: str, mode: str = "pairwise", overlap: int = 2) -> int:
    page.click("nav >> text=Projects")
    page.fill("input[name=name]", name)
    page.select_option("select[name=mode]", mode)
    page.fill("input[name=overlap]", str(overlap))
    page.fill("textarea[name=sources]", sources)
    page.click("text=Create project")
    return int(re.search(r"/projects/(\d+)$", page.url).group(1))


def _pick_chosen(prompt, page):
    """The button of the response that is the file's 'chosen' one (responses shown in a random order)."""
    for k in (1, 2):
        if page.locator(".response").nth(k - 1).locator("pre").inner_text().startswith("good"):
            return f"pick-{k}"
    raise AssertionError("no good answer shown")


def annotation_export(browser, url: str, tmp: Path, pairs_file: Path) -> Path:
    admin = new_page(browser, url, "admin")
    pid = _create_project(admin, "kindness", str(pairs_file))
    # the <script> response shows as text to the annotator
    assert _label_as(browser, url, "alice", pid, _pick_chosen, "annotate") == len(PROMPTS)
    # bob prefers the chosen answer except on the first prompt, where he calls it a tie
    assert _label_as(browser, url, "bob", pid,
                     lambda prompt, page: "pick-tie" if prompt == PROMPTS[0] else _pick_chosen(prompt, page)) == 6
    admin.goto(f"/projects/{pid}")
    assert admin.locator("#total").inner_text() == "12"
    assert admin.locator("#raw").inner_text() == "0.8333"  # 5 of 6 prompts agree
    shot(admin, "project")
    with admin.expect_download() as dl:
        admin.click("#export-preference")
    path = tmp / "human-pairs.jsonl"
    dl.value.save_as(path)
    return path


def test_annotation_project_with_two_annotators(browser, served, pairs_file, tmp_path):
    url, _ = served
    path = annotation_export(browser, url, tmp_path, pairs_file)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 11 and all(r["chosen"].startswith("good") for r in rows)
    assert sum(r["rejected"] == XSS for r in rows) == 1  # alice's label of prompt 0; bob's tie is left out
    # it loads as DPO's data, through the loader `alignkit train algo=dpo` uses
    from alignkit.config.compose import compose_config
    from alignkit.data.load import load_data
    from alignkit.studio.data import formats

    cfg = compose_config(["algo=dpo", "data.name=human", f"data.sources=[{{path: {path}, eval_size: 2}}]"])
    loaded = load_data(cfg.data, formats(), "preference")
    assert len(loaded.train) == 9 and len(loaded.eval) == 2


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cmd = [sys.executable, "-m", "alignkit", "train", "model=tiny", "logger=none", "trainer.progress=false",
           "trainer.eval_steps=0", "trainer.max_steps=2", "trainer.batch_size=2", *args]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.mark.slow
def test_annotation_export_trains_dpo(browser, served, pairs_file, tmp_path):
    url, _ = served
    path = annotation_export(browser, url, tmp_path, pairs_file)
    _train(["algo=dpo", "data.name=human", f"data.sources=[{{path: {path}, eval_size: 2}}]",
            f"trainer.run_dir={tmp_path / 'dpo'}"], tmp_path)
    assert (tmp_path / "dpo" / "final" / "config.json").is_file()
    assert json.loads((tmp_path / "dpo" / "data_stats.json").read_text())


def _save_template(browser, url: str, tmp: Path) -> str:
    raw = write_jsonl(tmp / "tasks.jsonl", [{"instruction": f"Repeat the word {w}", "word": w} for w in
                                            ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "peach"]])
    page = new_page(browser, url, "admin")
    page.click("nav >> text=Templates")
    page.fill("input[name=path]", str(raw))
    page.select_option("select[name=kind]", "sft")
    page.click("text=Load")
    page.fill("textarea[name=slot_prompt]", "{{ instruction }}, please.")
    page.fill("textarea[name=slot_completion]", "{{ word }} {{ word }}")
    page.fill("input[name=name]", "repeat")
    page.fill("input[name=max_length]", "64")
    page.click("text=Preview")
    assert page.locator(".preview").count() == 5
    assert "Repeat the word apple, please." in page.locator(".preview").first.inner_text()
    shot(page, "templates")
    page.click("text=Save as data config")
    command = page.locator("#command").inner_text()
    assert "data=repeat" in command
    return command


def test_save_a_template(browser, served, tmp_path):
    url, settings = served
    command = _save_template(browser, url, tmp_path)
    saved = (settings.home / "conf" / "data" / "repeat.yaml").read_text()
    assert "format: sft" in saved and "max_length: 64" in saved
    rendered = (settings.home / "conf" / "data" / "repeat.jsonl").read_text().splitlines()
    assert json.loads(rendered[0]) == {"prompt": "Repeat the word apple, please.", "completion": "apple apple"}
    assert command.startswith("alignkit train 'hydra.searchpath=[file://")


@pytest.mark.slow
def test_save_a_template_and_train_from_it(browser, served, tmp_path):
    import shlex

    url, _ = served
    command = _save_template(browser, url, tmp_path)
    args = shlex.split(command)[2:-1]  # the searchpath and data=repeat (the page adds algo=sft)
    _train(args + ["algo=sft", f"trainer.run_dir={tmp_path / 'sft'}"], tmp_path)
    stats = json.loads((tmp_path / "sft" / "data_stats.json").read_text())
    assert (tmp_path / "sft" / "final" / "config.json").is_file() and stats


def _blind_eval(browser, url: str, run: Path, annotators=("alice", "bob")) -> str:
    admin = new_page(browser, url, "admin")
    admin.click("nav >> text=Evaluations")
    admin.fill("input[name=name]", "blind")
    admin.select_option("select[name=run]", str(run))
    admin.fill("input[name=overlap]", "2")
    admin.click("text=Create evaluation")
    pid = int(re.search(r"/evals/(\d+)$", admin.url).group(1))
    counts = {}
    for name in annotators:  # each picks the first-shown response: a position-biased "annotator"
        counts[name] = _label_as(browser, url, name, pid, lambda prompt, page: "pick-1", f"blind-{name}")
    admin.goto(f"/evals/{pid}")
    shot(admin, "eval")
    admin.click("#save")
    assert "human_eval.json" in admin.locator("#written").inner_text()
    return admin.locator("#winrate").inner_text()


def test_blind_evaluation_of_a_run(browser, served):
    url, settings = served
    rate = _blind_eval(browser, url, settings.runs / "run-a")
    saved = json.loads((settings.runs / "run-a" / "eval" / "human_eval.json").read_text())
    w = saved["win_rate"]
    assert w["n"] == 12 and f"{w['value']:.3f}" == rate and w["wins"] + w["losses"] == 12
    assert saved["judge"]["position_bias"]["first_position_rate"] == pytest.approx(11 / 12)
    assert saved["judge"]["prompts"] == 6


@pytest.mark.slow
def test_blind_evaluation_of_a_tiny_run(browser, studio, tmp_path):
    app, settings = studio
    run = settings.runs / "tiny"
    _train(["algo=dpo", "data=hh-rlhf-small", "data.sources.0.max_examples=40", "data.sources.0.eval_size=8",
            f"trainer.run_dir={run}"], tmp_path)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "alignkit", "eval", str(run), "eval.generation.num_prompts=4",
                        "eval.generation.max_new_tokens=12"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    with Server(app) as srv:
        rate = _blind_eval(browser, srv.url, run)
    saved = json.loads((run / "eval" / "human_eval.json").read_text())
    assert saved["win_rate"]["n"] == 8 and f"{saved['win_rate']['value']:.3f}" == rate


def test_runs_table(browser, served):
    url, settings = served
    page = new_page(browser, url, "admin")
    page.click("nav >> text=Runs")
    table = page.locator("#runs")
    header = table.locator("tr").first.inner_text()
    assert "trainer.lr" in header and "eval/loss" in header and "algo.beta" not in header  # same in every run
    assert table.locator("tr").count() == 4  # run-a, run-b, the sweep's job 0
    assert "alignkit: out of memory" in page.locator(".sweep").inner_text()
    shot(page, "runs")
    page.check("input[value='run-a']")
    page.check("input[value='run-b']")
    page.click("text=Compare generations side by side")
    assert page.locator("tr").count() == 7 and "policy answer 3" in page.content()
    assert XSS in page.locator("table").inner_text()  # shown as text
    page.goto("/runs/view?path=run-a")
    assert page.locator("svg polyline").count() == 2
    shot(page, "run")


def test_four_level_rating_with_feedback(browser, served, pairs_file):
    url, _ = served
    admin = new_page(browser, url, "admin")
    pid = _create_project(admin, "ratings", str(pairs_file), mode="rating", overlap=1)
    page = new_page(browser, url, "alice")
    page.goto(f"/annotate/{pid}")
    assert "irrelevant or invalid" in page.locator("details").inner_text()  # the scale with the guideline
    shot(page, "rating")
    done = 0
    while page.locator("#finished").count() == 0:
        page.locator(".response").nth(0).locator("input[value=A]").check()  # the first shown: A
        page.locator(".response").nth(1).locator("input[value=C]").check()  # the second shown: C
        page.fill("textarea[name=feedback]", "cite a source")
        page.click("#submit")
        page.wait_for_load_state()
        done += 1
    assert done == 3  # overlap 1 over alice and bob: every other item is alice's
    # the exports, fetched with the admin's browser session
    rows = [json.loads(x) for x in admin.request.get(f"{url}/projects/{pid}/export/ranked").text().splitlines()]
    assert len(rows) == 3
    for r in rows:  # A (3.0) went to the response shown first
        best = r["responses"][r["scores"].index(3.0)]
        assert sorted(r["scores"]) == [1.0, 3.0] and r["sources"][r["responses"].index(best)] == r["order_shown"][0]
    hind = admin.request.get(f"{url}/projects/{pid}/export/hindsight").text().splitlines()
    assert len(hind) == 3 and all(json.loads(x)["feedback"] == "cite a source" for x in hind)
