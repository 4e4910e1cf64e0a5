"""Fixtures of the studio tests: a studio folder, users, a run with an eval report, a sweep, data files."""
import json
from pathlib import Path

import pytest

PASSWORD = "correct-horse-1"
XSS = "<script>alert('pwned')</script>"
PROMPTS = [f"Question {i}: how do I fix bug {i}?" for i in range(6)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def fake_run(folder: Path, lr: float, n: int = 6, judge: bool = True, xss: bool = False) -> Path:
    """A run folder as `alignkit train` + `alignkit eval` leave it (config, metrics, eval report)."""
    (folder / "eval").mkdir(parents=True)
    (folder / "config.yaml").write_text(f"algo:\n  name: dpo\n  beta: 0.1\ntrainer:\n  lr: {lr}\n  max_steps: 4\n")
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "train/loss": 0.7 - 0.05 * s * lr * 1e3, "eval/loss": 0.69 - s * 0.01})
        + "\n" for s in range(1, 5)))
    samples = [{"prompt": PROMPTS[i], "policy": (XSS if xss and i == 0 else f"policy answer {i}"),
                "reference": f"reference answer {i}", "policy_reward": None, "reference_reward": None}
               for i in range(n)]
    report = {"target": {"kind": "run", "path": str(folder)}, "preference": {"n": 8, "accuracies": {}},
              "generation": {"n": n, "samples": samples}, "judge": None}
    if judge:  # verdicts: a first-position-loving judge on 6 pairs
        verdicts = [{"p_a_first_order": 0.7, "p_a_second_order": 0.3, "prefer_a_first_order": True,
                     "prefer_a_second_order": False, "outcome": "tie"} for _ in range(n)]
        verdicts[0] = {"p_a_first_order": 0.8, "p_a_second_order": 0.6, "prefer_a_first_order": True,
                       "prefer_a_second_order": True, "outcome": "a"}
        report["judge"] = {"win_rate": 7 / 12, "win_rate_ci": [0.3, 0.8], "wins": 1, "losses": 0, "ties": n - 1,
                           "agreement": 1 / n, "n": n, "template": "pairwise", "verdicts": verdicts,
                           "model_path": "judge-model"}
    (folder / "eval" / "eval.json").write_text(json.dumps(report))
    return folder


@pytest.fixture
def studio(tmp_path):
    """(app, settings, Sessions) with users admin, alice, bob (password PASSWORD), runs under tmp/runs."""
    from alignkit.studio.app import StudioSettings, create_app
    from alignkit.studio.db import User

    runs = tmp_path / "runs"
    fake_run(runs / "run-a", 1e-4, xss=True)
    fake_run(runs / "run-b", 5e-4, judge=False)
    sweep = runs / "multirun" / "2026-01-01_00-00-00_dpo"
    fake_run(sweep / "0", 1e-4, judge=False)
    (sweep / "sweep.csv").write_text("job,status,seconds,run_dir,error,algo.beta,eval/loss,eval/preference_accuracy\n"
                                     "0,ok,12.5,0,,0.1,0.65,0.55\n1,failed,3.0,1,alignkit: out of memory,0.5,,\n")
    settings = StudioSettings(home=tmp_path / "studio", runs=runs.resolve(), data=["hh-rlhf-small"])
    app = create_app(settings)
    with app.state.sessions() as db:  # one Argon2 hash for the three (create_user is tested on its own)
        db.add_all([User(name=name, password_hash=_password_hash(), role=role)
                    for name, role in (("admin", "admin"), ("alice", "annotator"), ("bob", "annotator"))])
        db.commit()
    return app, settings


_HASH = []


def _password_hash() -> str:
    from alignkit.studio.auth import hash_password

    if not _HASH:
        _HASH.append(hash_password(PASSWORD))
    return _HASH[0]


@pytest.fixture
def pairs_file(tmp_path):
    """A preference file over PROMPTS, one response containing a <script> tag."""
    rows = [{"prompt": p, "chosen": f"good answer {i}", "rejected": (XSS if i == 0 else f"bad answer {i}")}
            for i, p in enumerate(PROMPTS)]
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


def login(client, name: str, password: str = PASSWORD):
    """Sign in through the form (CSRF token read from the login page); returns the client."""
    page = client.get("/login")
    token = csrf_of(page.text)
    r = client.post("/login", data={"name": name, "password": password, "csrf": token}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return client


def csrf_of(html: str) -> str:
    import re

    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


class Server:
    """The app served by uvicorn on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, app):
        import threading

        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    limit_concurrency=200, backlog=256))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        import time

        self.thread.start()
        for _ in range(500):
            if self.server.started:
                break
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
