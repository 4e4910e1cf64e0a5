"""Annotation logic against hand-computed values: kappas, assignments, exports, blind-eval results."""
import json

import pytest

for _module in ("fastapi", "sqlalchemy", "argon2", "jinja2", "sklearn"):  # the studio extra
    pytest.importorskip(_module)

from sqlalchemy import select

from alignkit.metrics import wilson_interval
from alignkit.studio import annotate as ann
from alignkit.studio import humaneval
from alignkit.studio.db import Assignment, User

from .conftest import PROMPTS, XSS

# Fleiss (1971) as worked on Wikipedia: 10 items, 14 raters, 5 categories -> P̄ = 0.378, P̄e = 0.213, κ = 0.210
FLEISS_TABLE = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


def test_fleiss_kappa_hand_computed():
    assert ann.fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.20993, abs=1e-4)
    assert ann.fleiss_kappa([[2, 0], [0, 2]]) == pytest.approx(1.0)  # P̄ = 1, P̄e = 0.5
    assert ann.fleiss_kappa([[1, 1], [1, 1]]) == pytest.approx(-1.0)  # P̄ = 0, P̄e = 0.5
    with pytest.raises(ValueError):
        ann.fleiss_kappa([[2, 0], [1, 0]])


def test_cohen_kappa_hand_computed():
    # p_o = 3/4; p_e = 0.5*0.25 + 0.5*0.75 = 0.5 -> κ = 0.5
    assert ann.cohen_kappa(list("xxyy"), list("xyyy")) == pytest.approx(0.5)
    assert ann.cohen_kappa(list("xxxx"), list("xxxx")) is not None  # nan: one category only
    assert ann.cohen_kappa(list("xxxx"), list("xxxx")) != ann.cohen_kappa(list("xxxx"), list("xxxx"))


def _users(db, *names):
    return list(db.scalars(select(User).where(User.name.in_(names)).order_by(User.id)))


def _label_all(db, project, user, choose):
    """Label every assignment of ``user`` with ``choose(item, order) -> form``."""
    while (a := ann.next_assignment(db, project, user)) is not None:
        form = choose(a.item, a.order)
        ann.save_label(db, a, user, project, ann.parse_value(project, len(a.item.responses), form),
                       form.get("feedback", ""), 1.0)


def test_pairwise_project_assignment_agreement_and_exports(studio, pairs_file, tmp_path):
    app, _ = studio
    with app.state.sessions() as db:
        alice, bob = _users(db, "alice", "bob")
        items = ann.gather([str(pairs_file)])
        assert [p for p, _ in items] == PROMPTS and [s for s, _ in items[0][1]] == ["pairs.jsonl:chosen",
                                                                                   "pairs.jsonl:rejected"]
        project = ann.create_project(db, "p", "pairwise", "guide", 2, [alice, bob], items, [str(pairs_file)])
        assert ann.progress(db, project) == (0, 12)
        orders = [a.order for a in db.scalars(select(Assignment))]
        assert {tuple(o) for o in orders} == {(0, 1), (1, 0)}  # both orders are shown
        # alice: always the chosen one; bob: chosen except rejected on item 1 and a tie on item 2
        _label_all(db, project, alice, lambda item, order: {"choice": "0", "feedback": "be more concrete"})
        n = iter(range(100))
        _label_all(db, project, bob, lambda item, order: {"choice": {1: "1", 2: "tie"}.get(next(n), "0")})
        ag = ann.agreement(db, project)
        assert ag["labels"] == 12 and ag["units_with_overlap"] == 6 and ag["raw_agreement"] == 0.6667
        # Cohen: alice all "chosen" (one category) -> p_e = p_o(bob says chosen) = 4/6, p_o = 4/6 -> κ = 0
        assert ag["cohen_kappa"] == [{"a": "alice", "b": "bob", "n": 6, "kappa": 0.0, "raw": pytest.approx(4 / 6)}]

        rows, counts = ann.export_rows(db, project, "preference")
        assert counts == {"labels": 12, "rows": 11, "skipped": {"tie": 1}}
        flipped = [r for r in rows if r["chosen"].startswith("bad")]
        assert [(f["annotator"], f["chosen"], f["rejected"]) for f in flipped] == [("bob", "bad answer 1",
                                                                                  "good answer 1")]
        assert {r["order_shown"][0] for r in rows} <= {"pairs.jsonl:chosen", "pairs.jsonl:rejected"}
        assert all(r["guideline_version"] == 1 and r["labelled_at"] for r in rows)
        unpaired, _ = ann.export_rows(db, project, "unpaired")
        assert len(unpaired) == 22 and sum(r["label"] for r in unpaired) == 11
        hind, hc = ann.export_rows(db, project, "hindsight")
        assert len(hind) == 6 and all(r["feedback"] == "be more concrete" and r["annotator"] == "alice" for r in hind)
        ranked, _ = ann.export_rows(db, project, "ranked")
        assert len(ranked) == 11 and ranked[0]["scores"] in ([1.0, 0.0], [0.0, 1.0])
        path, _ = ann.write_export(db, project, "preference", tmp_path / "exports")
        prov = json.loads(path.with_name("p-preference.provenance.json").read_text())
        assert prov["guideline"] == "guide" and prov["annotators"] == ["alice", "bob"] and prov["counts"]["rows"] == 11

    # the exports load through alignkit's own loader: preference for dpo, unpaired for kto
    from alignkit.config.schema import DataSource
    from alignkit.data.load import load_source
    from alignkit.studio.data import formats

    train, held = load_source(DataSource(path=str(path), format="preference", eval_size=0), formats(), "preference", 0)
    assert len(train) == 11 and {"prompt", "chosen", "rejected"} <= set(train[0])
    up = tmp_path / "u.jsonl"
    up.write_text("".join(json.dumps(r) + "\n" for r in unpaired))
    train, _ = load_source(DataSource(path=str(up), format="unpaired", eval_size=0), formats(), "preference", 0)
    assert len(train) == 22 and sum(ex["label"] for ex in train) == 11


def test_rating_and_ranking_values(studio, pairs_file):
    app, _ = studio
    with app.state.sessions() as db:
        (alice,) = _users(db, "alice")
        items = ann.gather([str(pairs_file)])[:2]
        rating = ann.create_project(db, "r", "rating", "g", 1, [alice], items, [])
        _label_all(db, rating, alice, lambda item, order: {"rating_0": "A", "rating_1": "C"})
        rows, _ = ann.export_rows(db, rating, "ranked")
        assert [r["scores"] for r in rows] == [[3.0, 1.0], [3.0, 1.0]]
        up, _ = ann.export_rows(db, rating, "unpaired")
        assert [r["label"] for r in up] == [True, False, True, False]
        ranking = ann.create_project(db, "k", "ranking", "g", 1, [alice], items, [])
        _label_all(db, ranking, alice, lambda item, order: {"rank_0": "2", "rank_1": "1"})
        pref, _ = ann.export_rows(db, ranking, "preference")
        assert [r["chosen"] for r in pref] == [XSS, "bad answer 1"]
        with pytest.raises(Exception, match="not a ranking"):
            ann.parse_value(ranking, 2, {"rank_0": "1", "rank_1": "1"})
        with pytest.raises(Exception, match="needs a rating"):
            ann.parse_value(rating, 2, {"rating_0": "A", "rating_1": "E"})


def test_resubmitting_an_assignment_keeps_one_label(studio, pairs_file):
    app, _ = studio
    with app.state.sessions() as db:
        (alice,) = _users(db, "alice")
        project = ann.create_project(db, "p", "pairwise", "g", 1, [alice], ann.gather([str(pairs_file)]), [])
        a = ann.next_assignment(db, project, alice)
        first = ann.save_label(db, a, alice, project, {"choice": 0}, "", None)
        again = ann.save_label(db, a, alice, project, {"choice": 1}, "", None)
        assert again.id == first.id and again.value == {"choice": 0} and ann.progress(db, project) == (1, 6)


def test_blind_eval_results_against_hand_counts(studio):
    app, settings = studio
    run = settings.runs / "run-a"
    with app.state.sessions() as db:
        alice, bob = _users(db, "alice", "bob")
        project = humaneval.create_eval(db, "e", run, None, [alice, bob], 2)
        # alice prefers the policy everywhere; bob the reference on item 0, a tie on item 1
        _label_all(db, project, alice, lambda item, order: {"choice": "0"})
        k = iter(range(100))
        _label_all(db, project, bob, lambda item, order: {"choice": {0: "1", 1: "tie"}.get(next(k), "0")})
        res = humaneval.results(db, project)
    w = res["win_rate"]  # 12 judgements: 10 wins, 1 loss, 1 tie -> 10.5 / 12
    assert (w["wins"], w["losses"], w["ties"], w["n"]) == (10, 1, 1, 12)
    assert w["value"] == pytest.approx(10.5 / 12) and w["ci"] == pytest.approx(list(wilson_interval(10.5 / 12, 12)))
    assert res["per_annotator"]["alice"]["value"] == 1.0
    assert res["per_annotator"]["bob"]["value"] == pytest.approx(4.5 / 6)
    j = res["judge"]  # majorities: item 0 tie (a vs b), item 1 a (a, tie -> a wins 1:1? tie) ...
    # item 0: [a, b] -> tie; item 1: [a, tie] -> tie; items 2-5: a. Judge: item 0 "a", items 1-5 "tie"
    assert j["prompts"] == 6 and j["agreement"] == pytest.approx(1 / 6)  # only item 1 (tie = tie) agrees
    pb = j["position_bias"]  # 11 of 12 judgements pick the first-shown response; 5 pairs flip with the order
    assert pb["first_position_rate"] == pytest.approx(11 / 12) and pb["inconsistent_pairs"] == 5
    path = humaneval.write_results(res, run)
    assert path == run / "eval" / "human_eval.json" and json.loads(path.read_text())["win_rate"]["n"] == 12
    assert "| alice | 1.000 |" in (run / "eval" / "human_eval.md").read_text()


def test_create_user_checks_and_hashes(studio):
    from alignkit.errors import UserError
    from alignkit.studio.auth import authenticate, create_user

    with studio[0].state.sessions() as db:
        user = create_user(db, "carol", "long-enough-pw", "annotator")
        assert user.password_hash.startswith("$argon2id$")
        assert authenticate(db, "carol", "long-enough-pw").id == user.id
        assert authenticate(db, "carol", "wrong-password") is None and authenticate(db, "nobody", "x") is None
        for args, msg in [(("carol", "long-enough-pw"), "already exists"), (("dave", "short"), "too short"),
                          (("bad name", "long-enough-pw"), "not allowed"), (("erin", "long-enough-pw", "boss"),
                                                                             "unknown role")]:
            with pytest.raises(UserError, match=msg):
                create_user(db, *args)


def test_sources_join_by_prompt_and_keep_chat_prompts(studio, tmp_path):
    from .conftest import write_jsonl

    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Name a colour"}]
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": chat, "chosen": "red", "rejected": "no"},
                                           {"prompt": "alone", "chosen": "x", "rejected": "y"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": chat, "completion": "blue"}])
    items = ann.gather([str(a), str(b)])
    assert items[0] == (chat, [("a.jsonl:chosen", "red"), ("a.jsonl:rejected", "no"), ("b.jsonl:completion", "blue")])
    assert [len(r) for _, r in items] == [3, 2]
    app, _ = studio
    with app.state.sessions() as db:
        (alice,) = _users(db, "alice")
        project = ann.create_project(db, "chat", "ranking", "g", 1, [alice], [items[0]], [])
        _label_all(db, project, alice, lambda item, order: {"rank_0": "2", "rank_1": "3", "rank_2": "1"})
        rows, _ = ann.export_rows(db, project, "preference")
    assert rows[0]["prompt"] == chat and (rows[0]["chosen"], rows[0]["rejected"]) == ("blue", "no")
