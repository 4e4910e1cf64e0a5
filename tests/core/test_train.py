"""Short end-to-end runs: each algorithm's loss falls, outputs exist, saved
models load back with transformers, runs are repeatable."""
import json

import pytest
import torch

from alignkit.config.compose import compose_config
from alignkit.trainer import train

# A few dozen pairs, short sequences: the tiny model can fit them in a few steps.
FAST = ["data.sources.0.max_examples=40", "data.sources.0.eval_size=8", "data.max_length=96",
        "data.max_prompt_length=48", "trainer.batch_size=4", "trainer.lr=3e-3", "trainer.lr_scheduler=constant",
        "trainer.max_steps=16"]


def _losses(result):
    rows = [json.loads(line) for line in open(result.output_dir / "metrics.jsonl")]
    return [r["train/loss"] for r in rows if "train/loss" in r]


def _falls(losses, k=4):
    return sum(losses[-k:]) / k < sum(losses[:k]) / k


@pytest.mark.parametrize("overrides", [["algo=sft"], ["algo=rm"], ["algo=dpo", "algo.beta=0.5"],
                                       ["algo=dpo", "algo.loss_type=ipo", "algo.beta=0.5"],
                                       ["algo=dpo", "algo.loss_type=hinge"], ["algo=dpo", "algo.loss_type=robust",
                                                                              "algo.label_smoothing=0.1"],
                                       ["algo=dpo", "algo.reference_free=true", "algo.beta=0.02", "trainer.lr=1e-3"]],
                         ids=lambda o: "-".join(x.split("=")[1] for x in o))
def test_loss_falls(overrides, quick_overrides):
    result = train(compose_config([*overrides, *FAST, *quick_overrides]))
    losses = _losses(result)
    assert len(losses) == 16
    assert _falls(losses), losses


def test_run_folder_contents_and_reload(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = compose_config(["algo=dpo", *FAST, "trainer.max_steps=4", "trainer.eval_steps=2", "data=hh-rlhf-small",
                          "trainer.progress=false", f"trainer.output_dir={tmp_path}"])
    result = train(cfg)
    d = result.output_dir
    for name in ("config.yaml", "metrics.jsonl", "curves.png", "data_stats.json", "final/model.safetensors",
                 "final/config.json", "final/tokenizer.json"):
        assert (d / name).exists(), name
    assert list((d / "tensorboard").glob("events.out.tfevents.*"))
    import transformers
    packages = json.loads((d / "environment.json").read_text())["packages"]
    assert packages["torch"] == torch.__version__ and packages["transformers"] == transformers.__version__
    rows = [json.loads(line) for line in open(d / "metrics.jsonl")]
    evals = [r for r in rows if "eval/preference_accuracy" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]
    assert evals[0]["eval/preference_accuracy"] == 0.5  # policy == reference: every pair ties
    assert all("step" in r for r in rows)
    model = AutoModelForCausalLM.from_pretrained(d / "final")
    tok = AutoTokenizer.from_pretrained(d / "final")
    ids = tok("\n\nHuman: hi\n\nAssistant:", return_tensors="pt").input_ids
    with torch.no_grad():
        assert model(ids).logits.shape[-1] == len(tok)


def test_reward_model_reloads_as_sequence_classifier(quick_overrides):
    from transformers import AutoModelForSequenceClassification

    result = train(compose_config(["algo=rm", *FAST, "trainer.max_steps=2", *quick_overrides]))
    rm = AutoModelForSequenceClassification.from_pretrained(result.output_dir / "final")
    assert rm.config.num_labels == 1
    assert "eval/accuracy" in result.metrics and "eval/preference_accuracy" in result.metrics


def test_runs_are_deterministic(quick_overrides, tmp_path):
    a = train(compose_config(["algo=dpo", *FAST, "trainer.max_steps=3", *quick_overrides]))
    b = train(compose_config(["algo=dpo", *FAST, "trainer.max_steps=3", *quick_overrides]))
    assert _losses(a) == _losses(b)


def test_lora_dpo_uses_base_as_reference(quick_overrides):
    result = train(compose_config(["algo=dpo", *FAST, "trainer.max_steps=3", "model.lora.enabled=true",
                                   "model.lora.r=4", *quick_overrides]))
    assert result.metrics["eval/preference_accuracy"] >= 0.0
    assert (result.output_dir / "final" / "adapter" / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(result.output_dir / "final")  # merged weights load without peft


def test_grad_accum_and_checkpoint(quick_overrides):
    result = train(compose_config(["algo=sft", *FAST, "trainer.max_steps=2", "trainer.grad_accum=2",
                                   "trainer.save_steps=1", *quick_overrides]))
    ck = result.output_dir / "checkpoints" / "step-1"
    state = torch.load(ck / "trainer_state.pt", weights_only=False)
    assert state["step"] == 1 and state["data"] == {"epoch": 0, "offset": 8}  # 2 micro-batches of 4
    assert {"optimizer", "scheduler", "rng", "algorithm"} <= set(state)
    assert (ck / "model" / "model.safetensors").exists()


def test_unfused_path_matches_fused(quick_overrides):
    from alignkit import modeling
    from alignkit.models import build_model, build_tokenizer

    cfg = compose_config(quick_overrides)
    torch.manual_seed(0)
    tok = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tokenizer=tok)
    ids = torch.randint(3, len(tok), (2, 9))
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :4] = -100
    a, ma = modeling.token_logprobs(model, ids, mask, labels, fused=True)
    b, mb = modeling.token_logprobs(model, ids, mask, labels, fused=False)
    assert torch.equal(ma, mb) and ma[:, :3].eq(False).all() and ma[:, 3:].all()
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert a[~ma].eq(0).all()


@pytest.mark.parametrize("algo", ["dpo", "rm"])
def test_lean_activations_train_like_the_eager_model(algo, quick_overrides):
    # the same run with model.lean_activations on and off: per-step losses and gradient norms agree to
    # float rounding (the forward is bitwise the same; gradients differ in rounding only)
    runs = [train(compose_config([f"algo={algo}", *FAST, *quick_overrides, "trainer.max_steps=6",
                                  f"model.lean_activations={on}"])) for on in ("true", "false")]
    rows = [[json.loads(line) for line in open(r.output_dir / "metrics.jsonl")] for r in runs]
    for key in ("train/loss", "train/grad_norm"):
        lean, eager = ([r[key] for r in rs if key in r] for rs in rows)
        assert len(lean) == 6
        assert lean == pytest.approx(eager, rel=1e-4, abs=1e-6), key


def test_default_run_learns_the_preference(tmp_path):
    """The README's main job (`alignkit train`, no overrides): on the 300 held-out pairs, preference
    accuracy ends at 0.57 or more (chance is 0.5; 0.57 is 2.4 standard errors above it) and the held-out
    DPO loss ends below its step-0 value (log 2)."""
    result = train(compose_config([f"trainer.output_dir={tmp_path}", "trainer.progress=false"]))
    stats = json.loads((result.output_dir / "data_stats.json").read_text())
    assert stats["eval"]["examples"] >= 300
    evals = result.history["eval/loss"]
    assert evals[0][0] == 0 and evals[-1][1] < evals[0][1]
    assert result.metrics["eval/preference_accuracy"] >= 0.57


@pytest.mark.slow
def test_smollm2_runs_and_reloads(tmp_path):
    from transformers import AutoModelForCausalLM

    for algo in ("dpo", "sft"):
        result = train(compose_config([f"algo={algo}", "model=smollm2-135m", "trainer.max_steps=2",
                                       "trainer.batch_size=2", "trainer.eval_steps=0", "trainer.eval_at_start=false",
                                       "trainer.max_eval_examples=4", "data=hh-rlhf-small", "trainer.lr=1e-6",
                                       "logger=none", f"trainer.output_dir={tmp_path}"]))
        AutoModelForCausalLM.from_pretrained(result.output_dir / "final")
