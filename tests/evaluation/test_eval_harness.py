"""lm-eval tasks through alignkit.evaluation.harness, offline: a local multiple-choice task on a saved tiny model."""
import json
import sys

import pytest
import torch

from alignkit.errors import UserError, format_user_error

pytest.importorskip("lm_eval")

QUESTIONS = ["What colour is the sky?", "Which animal says moo?", "What do bees make?", "Where do fish live?",
             "What is frozen water called?", "Which season is the coldest?"]
CHOICES = [["blue", "green", "red"], ["cow", "cat", "dog"], ["honey", "milk", "bread"],
           ["water", "trees", "sand"], ["ice", "steam", "rain"], ["winter", "summer", "spring"]]
LIMIT = 5


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from alignkit.config.compose import compose_config
    from alignkit.models import build_model, build_tokenizer, save_model

    cfg = compose_config(["model=tiny"])
    tok = build_tokenizer(cfg.model)
    torch.manual_seed(0)
    model = build_model(cfg.model, tokenizer=tok).eval()
    path = tmp_path_factory.mktemp("lm-eval") / "model"
    save_model(model, tok, path)
    return path, model, tok


def _predictions(model, tok):
    """The choice with the highest log-likelihood of ``" " + choice`` after the question, per row
    (lm-eval's multiple-choice scoring with its default target delimiter)."""
    preds = []
    with torch.no_grad():
        for q, choices in zip(QUESTIONS, CHOICES):
            ctx = tok(q, add_special_tokens=False)["input_ids"]
            scores = []
            for c in choices:
                cont = tok(" " + c, add_special_tokens=False)["input_ids"]
                ids = torch.tensor([ctx + cont])  # [1, T]
                logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)  # [T-1, V]
                scores.append(sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont)))
            preds.append(max(range(len(choices)), key=scores.__getitem__))
    return preds


def _write_task(folder, labels):
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "rows.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "label": lab}) + "\n"
                            for q, c, lab in zip(QUESTIONS, CHOICES, labels)))
    (folder / "tiny_mc.yaml").write_text(
        "task: tiny_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{label}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")


def test_local_multiple_choice_task(saved_model, tmp_path):
    from alignkit.evaluation.harness import run_lm_eval

    path, model, tok = saved_model
    preds = _predictions(model, tok)
    # labels: the model's own pick in rows 0, 2 and 3 and another choice elsewhere, so acc over the
    # first LIMIT rows is exactly 3/5 if lm-eval scored this model's log-likelihoods
    right = {0, 2, 3}
    labels = [p if i in right else (p + 1) % len(CHOICES[i]) for i, p in enumerate(preds)]
    _write_task(tmp_path / "tasks", labels)
    scores = run_lm_eval(str(path), ["tiny_mc"], include_path=str(tmp_path / "tasks"), limit=LIMIT, batch_size=4)
    assert set(scores) == {"tiny_mc"}
    row = scores["tiny_mc"]
    assert row["n"] == LIMIT
    assert 0.0 <= row["acc"] <= 1.0
    assert row["acc"] == pytest.approx(3 / 5)
    assert "acc_stderr" in row


def test_unknown_task_is_one_line_user_error(saved_model, tmp_path):
    from alignkit.evaluation.harness import run_lm_eval

    _write_task(tmp_path / "tasks", [0] * len(QUESTIONS))
    with pytest.raises(UserError) as err:
        run_lm_eval(str(saved_model[0]), ["tiny_mcq"], include_path=str(tmp_path / "tasks"))
    line = format_user_error(err.value)
    assert "\n" not in str(err.value)
    assert line.startswith("alignkit: unknown lm-eval task 'tiny_mcq'; did you mean tiny_mc")


def test_bad_model_folder_and_missing_package(tmp_path, monkeypatch):
    from alignkit.evaluation.harness import run_lm_eval

    with pytest.raises(UserError, match="not a model folder"):
        run_lm_eval(str(tmp_path), ["tiny_mc"])
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    with pytest.raises(UserError) as err:
        run_lm_eval(str(tmp_path), ["tiny_mc"])
    assert str(err.value) == "lm-eval is not installed; pip install 'alignkit[eval]'"
