"""``alignkit eval <run folder | model path> [overrides]``: held-out preference accuracy and generation
metrics of a trained model, against its reference, written to an output folder.

The config is composed by Hydra exactly as for ``alignkit train`` (same groups, same overrides, the
``eval.*`` node of :class:`alignkit.config.schema.EvalConfig`). For a run folder the composition
starts from the run's saved ``config.yaml`` (its algorithm, model, data and seed, hence its held-out
split), command-line overrides on top; for a model folder it is ``model=hf model.path=<folder>``.
Metric definitions: ``docs/evaluation.md``.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from alignkit.errors import UserError

log = logging.getLogger("alignkit")

USAGE = """\
usage: alignkit eval <run folder | model folder> [key=value ...]

  alignkit eval outputs/2025-01-01_12-00-00_dpo                 # writes <run>/eval/
  alignkit eval runs/dpo eval.reward_model=runs/rm/final eval.generation.num_prompts=64
  alignkit eval runs/ppo eval.reward_function=char_frequency eval.output_dir=evals/ppo
  alignkit eval path/to/model eval.reference=path/to/base       # a bare model folder
  alignkit eval runs/dpo eval.judge.model_path=path/to/instruct-model eval.lm_eval.tasks=[arc_easy]

Held-out preference accuracy (implicit reward against the reference, policy mean / summed log-prob,
reward model), generations on held-out prompts (reward win rate, mean reward, length, EOS rate,
distinct-1/2, sequence KL to the reference), optional LLM judge and lm-eval tasks. Outputs: eval.json,
eval.md, eval.png. Every eval.* key: alignkit train --cfg job | grep -A40 '^eval'; docs/evaluation.md.
"""

#: the temporary name a finished output folder is renamed from
PARTIAL_SUFFIX = ".partial"
_OVERLAY = "_alignkit_eval_run"  # the saved run config, stored as an experiment overlay


@dataclass
class Target:
    """What ``alignkit eval`` was pointed at."""

    kind: str  #: ``run`` (a run folder with config.yaml and final/) or ``model`` (a Hugging Face model folder)
    path: Path  #: the folder given
    model_dir: Path  #: the model evaluated: ``<run>/final`` or the model folder
    saved: DictConfig | None = None  #: the run's config.yaml


# -- what was given ---------------------------------------------------------------------------------
def resolve_target(arg: str) -> Target:
    """A run folder (``config.yaml`` and ``final/``) or a model folder (``config.json``); anything else
    is a one-line :class:`UserError`."""
    path = Path(os.path.expanduser(arg))
    if not path.exists():
        raise UserError(f"no such folder: {arg}", "give a run folder (with config.yaml and final/) or a model "
                        "folder (with config.json)")
    if (path / "pipeline.json").is_file() and not (path / "config.yaml").is_file():
        stages = sorted(p.name for p in path.iterdir() if (p / "config.yaml").is_file())
        raise UserError(f"{arg} is a pipeline folder, not a run folder", "evaluate one of its stages: "
                        + ", ".join(str(path / s) for s in stages))
    if (path / "config.yaml").is_file():
        final = path / "final"
        if not (final / "config.json").is_file():
            raise UserError(f"run folder {arg} has no final/ model (the run did not finish)",
                            f"finish it with alignkit train trainer.run_dir={arg} trainer.resume=auto, or evaluate "
                            "a checkpoint's model folder (checkpoints/step-N/model)")
        return Target("run", path, final, OmegaConf.load(path / "config.yaml"))
    if (path / "config.json").is_file():
        return Target("model", path, path)
    raise UserError(f"{arg} is neither a run folder (config.yaml + final/) nor a model folder (config.json)",
                    "give the folder alignkit train printed, or a saved Hugging Face model folder")


# -- composition ------------------------------------------------------------------------------------
def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _quote(value: str) -> str:
    """A Hydra override value quoted (paths may hold characters Hydra's grammar reads)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def compose_eval_config(target: Target, overrides: list[str], registry=None) -> tuple[DictConfig, Any]:
    """``(config, registry)`` for evaluating ``target`` with command-line ``overrides``."""
    from alignkit.config.compose import (GROUPS, _compose, _composition_error, _reject_added_keys, compose_config,
                                         register_configs, validate, validate_algorithm, yaml_options)
    from alignkit.registry import disabled_in, registry_for

    groups = {_key(o) for o in overrides if _key(o) in GROUPS}
    fixed = {"algo", "model", "experiment"} if target.kind == "run" else {"model", "experiment"}
    if groups & fixed:
        what = "the run's own" if target.kind == "run" else f"the model folder {target.path}"
        raise UserError(f"alignkit eval takes {', '.join(sorted(groups & fixed))} from {what}",
                        "drop " + ", ".join(f"{g}=" for g in sorted(groups & fixed)) + " (keys such as "
                        "model.dtype=... still apply)")
    if target.kind == "model":
        registry = registry or registry_for(overrides)
        cfg = compose_config(["model=hf", f"model.path={_quote(str(target.model_dir))}", *overrides], registry)
        _check_eval_config(cfg, registry)
        return cfg, registry

    saved = target.saved
    disabled = disabled_in(overrides) or list(OmegaConf.select(saved, "plugins.disable", default=[]) or [])
    registry = registry or registry_for(disabled=disabled)
    register_configs(registry)
    overlay = OmegaConf.to_container(saved, resolve=True)
    # the evaluation's own settings, and nodes whose group the command line picks again, are not the run's
    for node in ("eval", "logger", "stages", "hydra", *(g for g in groups if "/" not in g)):
        overlay.pop(node, None)
    if "trainer/distributed" in groups:
        overlay.get("trainer", {}).pop("distributed", None)
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="experiment", name=_OVERLAY, node=overlay, package="_global_")
    selection = [f"algo={saved.algo.name}"]
    name = OmegaConf.select(saved, "model.name")
    selection.append(f"model={name if name in yaml_options('model') else 'tiny'}")  # the typed base; values: the run's
    data_name = OmegaConf.select(saved, "data.name")
    if "data" not in groups and (data_name in yaml_options("data") or data_name in registry.datasets):
        selection.append(f"data={data_name}")
    args = [*selection, f"experiment={_OVERLAY}", *overrides]
    _reject_added_keys(args)
    try:
        cfg = _compose(args)
    except Exception as exc:  # noqa: BLE001 - one line naming the key
        raise _composition_error(exc, list(overrides)) from exc
    validate(cfg)
    validate_algorithm(cfg, registry)
    _check_eval_config(cfg, registry)
    return cfg, registry


def _check_eval_config(cfg: DictConfig, registry) -> None:
    """Checks of ``eval.*`` that need the plugins or the file system, before any model is loaded."""
    from alignkit.models.build import check_model_path
    from alignkit.registry import UnknownNameError
    from alignkit.rollout.rewards import check_reward_function

    ecfg = cfg.eval
    for key in ("reference", "reward_model"):
        if ecfg[key]:
            check_model_path(str(ecfg[key]), f"eval.{key}")
    if ecfg.judge.model_path:
        check_model_path(str(ecfg.judge.model_path), "eval.judge.model_path")
    if ecfg.reward_model and ecfg.reward_function:
        raise UserError("eval.reward_model and eval.reward_function are both set", "keep one of them")
    if ecfg.reward_function:
        try:
            fn = registry.reward_function(str(ecfg.reward_function))
        except UnknownNameError as exc:
            raise UserError(f"eval.reward_function={ecfg.reward_function}: {exc}", "pick one of the listed names") \
                from None
        check_reward_function(fn, str(ecfg.reward_function), dict(ecfg.reward_kwargs or {}))


# -- models -----------------------------------------------------------------------------------------
def _model_cfg(cfg: DictConfig, **changes) -> DictConfig:
    """The run's model config with ``changes`` (a plain model: no LoRA wrapping, no checkpointing)."""
    return OmegaConf.merge(cfg.model, {"lora": {"enabled": False}, "gradient_checkpointing": False, **changes})


def _model_kind(target: Target, cfg: DictConfig, registry) -> str:
    if target.kind == "run":
        return registry.algorithm(cfg.algo.name).algorithm_class.model_kind
    import json

    archs = json.loads((target.model_dir / "config.json").read_text()).get("architectures") or []
    return "reward" if any(a.endswith("ForSequenceClassification") for a in archs) else "causal_lm"


def load_policy(target: Target, cfg: DictConfig, kind: str, tokenizer):
    """The evaluated model, from ``final/`` (or the model folder), in eval mode."""
    from alignkit.models import build_model

    model = build_model(_model_cfg(cfg, source="hf", path=str(target.model_dir)), kind=kind, tokenizer=tokenizer)
    return model.eval().requires_grad_(False)


def starting_model(cfg: DictConfig, kind: str, tokenizer):
    """The model a run started from, rebuilt as the trainer builds it: ``transformers.set_seed``
    with ``trainer.seed``, then :func:`alignkit.models.build_model` on the run's model config (the
    random init of ``model=tiny`` is therefore the run's own). Under LoRA, the base model without
    adapters (what the trainer's reference computes with the adapters disabled)."""
    from transformers import set_seed

    from alignkit.models import build_model

    set_seed(int(cfg.trainer.seed), deterministic=False)
    return build_model(_model_cfg(cfg), kind=kind, tokenizer=tokenizer).eval().requires_grad_(False)


def _device(cfg: DictConfig) -> torch.device:
    want = cfg.trainer.device
    if want == "cuda" and not torch.cuda.is_available():
        raise UserError("trainer.device=cuda but no CUDA device is available", "use trainer.device=cpu or auto")
    return torch.device("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu")


# -- data -------------------------------------------------------------------------------------------
def heldout_pairs(cfg: DictConfig, registry) -> list[dict]:
    """The held-out preference pairs of the run's data config (the trainer's split), capped by
    ``eval.max_examples`` (default: the run's ``trainer.max_eval_examples``)."""
    from alignkit.data.formats import FormatError
    from alignkit.data.load import DataError, load_data

    formats = {name: spec for name, (spec, _) in registry.data_formats.items()}
    try:
        data = load_data(cfg.data, formats, "preference")
    except DataError as exc:
        if isinstance(exc.__cause__, FormatError):
            raise UserError(f"data {cfg.data.name!r} has no preference pairs to evaluate on ({exc.what})",
                            "evaluate with preference data: data=<preset> or data.sources=[...] with chosen and "
                            "rejected responses") from None
        raise
    cap = cfg.eval.max_examples or cfg.trainer.max_eval_examples
    pairs = data.eval[:cap] if cap else data.eval
    if not pairs:
        raise UserError(f"data {cfg.data.name!r} holds out no pairs", "set data.sources.0.eval_size to a count "
                        "(>= 1) or a fraction")
    return pairs


# -- the evaluation ---------------------------------------------------------------------------------
def _reward_setup(cfg: DictConfig, target: Target) -> dict | None:
    """Where rewards come from: ``eval.reward_model`` / ``eval.reward_function``, else the run's own
    ``algo.reward`` (online methods). ``None``: no reward."""
    ecfg = cfg.eval
    if ecfg.reward_model:
        return {"model_path": str(ecfg.reward_model), "source": f"eval.reward_model={ecfg.reward_model}"}
    if ecfg.reward_function:
        return {"function": str(ecfg.reward_function), "kwargs": dict(ecfg.reward_kwargs or {}),
                "source": f"eval.reward_function={ecfg.reward_function}"}
    reward = OmegaConf.select(cfg, "algo.reward") if target.kind == "run" else None
    if reward is not None and reward.get("function"):
        return {"function": str(reward.function), "kwargs": dict(reward.kwargs or {}),
                "source": f"algo.reward.function={reward.function} (the run's)"}
    if reward is not None and reward.get("model_path"):
        return {"model_path": str(reward.model_path),
                "source": f"algo.reward.model_path={reward.model_path} (the run's)"}
    return None


def _scorer(setup: dict, registry, tokenizer, data_cfg, batch_size: int, device):
    from alignkit.rollout.rewards import RewardScorer, load_reward_model

    if "function" in setup:
        return RewardScorer(function=registry.reward_function(setup["function"]), kwargs=setup["kwargs"],
                            name=setup["function"])
    model, tok = load_reward_model(setup["model_path"], device)
    return RewardScorer(model=model, tokenizer=tok, data_cfg=data_cfg, batch_size=batch_size,
                        name=setup["model_path"], policy_tokenizer=tokenizer)


def _score_texts(scorer, prompts: list, texts: list[str], batch_size: int, desc: str, progress: bool,
                 ids: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
    """Reward ``[N]`` of each (prompt, text), in chunks with a progress bar; ``ids``: per chunk
    ``(input_ids [b, T], attention_mask [b, T])`` of the same rows (used by a reward model that shares
    the policy's vocabulary)."""
    from tqdm.auto import tqdm

    out = []
    starts = list(range(0, len(texts), batch_size))
    for k, i in enumerate(tqdm(starts, desc=desc, disable=not progress, dynamic_ncols=True)):
        extra = {"input_ids": ids[k][0], "attention_mask": ids[k][1]} if ids is not None else {}
        out.append(scorer(prompts[i:i + batch_size], texts[i:i + batch_size], **extra).double())  # [b]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def _generate(model, tokenizer, prompts: list, cfg: DictConfig, seed: int, desc: str, progress: bool, device) -> list:
    """Rollouts (one per chunk of ``eval.generation.batch_size`` prompts) from
    :func:`alignkit.rollout.generation.generate_from_prompts`; prompt ``i``'s sampling noise is keyed by
    ``(seed, "eval", i)``, so policy and reference draw the same noise and no result depends on batching."""
    from tqdm.auto import tqdm

    from alignkit.rollout.generation import generate_from_prompts, row_seeds

    g = cfg.eval.generation
    rollouts = []
    starts = range(0, len(prompts), g.batch_size)
    for i in tqdm(starts, desc=desc, disable=not progress, dynamic_ncols=True):
        chunk = prompts[i:i + g.batch_size]
        seeds = row_seeds(seed, "eval", index=range(i, i + len(chunk)), num_samples=1)
        rollouts.append(generate_from_prompts(model, tokenizer, chunk, cfg.data, max_new_tokens=g.max_new_tokens,
                                              temperature=g.temperature, top_k=g.top_k, top_p=g.top_p, seeds=seeds))
    return rollouts


@torch.no_grad()
def _sequence_logps(model, rollouts: list, fused: bool, desc: str, progress: bool, device) -> torch.Tensor:
    """Summed response-token log-probs ``[N]`` of every rollout row under ``model`` (temperature 1)."""
    from tqdm.auto import tqdm

    from alignkit.modeling import sequence_logprobs

    out = []
    for r in tqdm(rollouts, desc=desc, disable=not progress, dynamic_ncols=True):
        lp = sequence_logprobs(model, r.input_ids.to(device), r.attention_mask.to(device), r.labels.to(device),
                               fused=fused)["sum"]  # [b]
        out.append(lp.double().cpu())
    return torch.cat(out)


def evaluate(cfg: DictConfig, target: Target, registry) -> dict:
    """Every metric of ``alignkit eval`` as one JSON-ready dict (see docs/evaluation.md)."""
    from alignkit import ops
    from alignkit.algorithm import RunContext
    from alignkit.datagen.io import as_text
    from alignkit.evaluation import generation_metrics as gm
    from alignkit.evaluation.preference import accuracies, compare, score_pairs, tokenize_pairs
    from alignkit.models import build_tokenizer

    t0 = time.time()
    ecfg = cfg.eval
    progress = bool(ecfg.progress)
    device = _device(cfg)
    ops.set_backend(cfg.ops.backend)
    if cfg.trainer.num_threads:
        torch.set_num_threads(int(cfg.trainer.num_threads))
    kind = _model_kind(target, cfg, registry)
    notes: list[str] = []
    if kind == "reward" and (ecfg.judge.model_path or list(ecfg.lm_eval.tasks)):
        raise UserError(f"{target.model_dir} is a reward model: it generates nothing for a judge or lm-eval tasks",
                        "evaluate a causal LM, or drop eval.judge.model_path / eval.lm_eval.tasks")
    if kind == "reward" and (ecfg.reward_model or ecfg.reward_function or ecfg.reference):
        raise UserError(f"{target.model_dir} is a reward model and is scored by its own rewards",
                        "drop eval.reward_model / eval.reward_function / eval.reference for a reward model")

    examples = heldout_pairs(cfg, registry)  # data errors before any model is loaded
    tokenizer = build_tokenizer(cfg.model)
    policy = load_policy(target, cfg, kind, tokenizer).to(device)
    reference, ref_desc = None, None
    if kind == "causal_lm":
        if ecfg.reference:
            from alignkit.models import build_model

            reference = build_model(_model_cfg(cfg, source="hf", path=str(ecfg.reference)), tokenizer=tokenizer)
            reference = reference.eval().requires_grad_(False)
            ref_desc = {"kind": "path", "path": str(ecfg.reference)}
        elif target.kind == "run":
            reference = starting_model(cfg, "causal_lm", tokenizer)
            ref_desc = {"kind": "run start", "path": None, "seed": int(cfg.trainer.seed),
                        "model": OmegaConf.to_container(cfg.model, resolve=True)}
        else:
            notes.append("no reference model (a bare model folder without eval.reference): only reference-free "
                         "accuracies, no implicit reward, win rate against a reference or KL")
        if reference is not None:
            reference.to(device)
    reward_setup = _reward_setup(cfg, target) if kind == "causal_lm" else None
    if ecfg.judge.model_path and reference is None:
        raise UserError("eval.judge.model_path compares policy and reference responses, and there is no reference",
                        "give eval.reference=<model folder>")

    # 1. held-out pairs
    feats, kept = tokenize_pairs(examples, tokenizer, cfg.data)
    if not feats:
        raise UserError(f"all {len(examples)} held-out pairs were dropped when tokenised",
                        "raise data.max_length, or use data.truncation=truncate")
    if len(feats) < len(examples):
        notes.append(f"{len(examples) - len(feats)} of {len(examples)} held-out pairs dropped by tokenisation")
    run = RunContext(cfg=cfg, output_dir=target.path, tokenizer=tokenizer, policy=policy,
                     accelerator=SimpleNamespace(device=device, is_main_process=True, num_processes=1))
    bs = int(ecfg.batch_size or cfg.trainer.eval_batch_size)

    def collate(chunk):
        from alignkit.data.collate import collate as _collate

        return _collate(chunk, "preference", tokenizer)

    scorer = _scorer(reward_setup, registry, tokenizer, cfg.data, bs, device) if reward_setup else None
    if kind == "reward":
        scorers = {"policy": lambda b: {"reward": run.pair_rewards(policy, b)}}
    else:
        scorers = {"policy": lambda b: run.pair_logprobs(policy, b)}
        if reference is not None:
            scorers["reference"] = lambda b: run.pair_logprobs(reference, b)
    if scorer is not None and scorer.shares_tokenizer:  # the pairs' own token ids, as algo=rm evaluates them
        scorers["reward"] = lambda b: {"reward": run.pair_rewards(scorer.model, b)}
    table = score_pairs(feats, collate, scorers, bs, device, progress, by_length=bool(ecfg.by_length))
    if kind == "reward":
        acc = accuracies(table["policy"], [("reward", "reward")])
    else:
        pol = table["policy"]
        acc = {}
        if reference is not None:
            ref = table["reference"]
            acc["implicit_reward"] = compare(pol["sum"][0] - ref["sum"][0], pol["sum"][1] - ref["sum"][1])
        acc |= accuracies(pol, [("policy_mean_logprob", "mean"), ("policy_sum_logprob", "sum")])
        if reference is not None:  # the same accuracies before training: the "before" of a before/after
            acc |= accuracies(table["reference"], [("reference_mean_logprob", "mean"),
                                                   ("reference_sum_logprob", "sum")])
    if "reward" in table:
        acc |= accuracies(table["reward"], [("reward", "reward")])
    elif scorer is not None:  # a reward function, or a reward model with a tokenizer of its own: the texts
        prompts_p = [ex["prompt"] for ex in kept]
        r_c = _score_texts(scorer, prompts_p, [ex["chosen"] for ex in kept], bs, "reward: chosen", progress)
        r_r = _score_texts(scorer, prompts_p, [ex["rejected"] for ex in kept], bs, "reward: rejected", progress)
        acc["reward"] = compare(r_c, r_r)
    preference = {"n": len(feats), "held_out": len(examples), "accuracies": acc,
                  "batch_size": bs}

    # 2. generations
    generation = None
    n_prompts = min(int(ecfg.generation.num_prompts), len(kept))
    if kind == "causal_lm" and n_prompts > 0:
        g = ecfg.generation
        seed = int(g.seed if g.seed is not None else cfg.trainer.seed)
        prompts = [ex["prompt"] for ex in kept[:n_prompts]]
        fused = bool(cfg.model.fused_logprobs)
        pol_roll = _generate(policy, tokenizer, prompts, cfg, seed, "generating: policy", progress, device)
        pol_texts = [c for r in pol_roll for c in r.completions]
        generation = {"n": n_prompts, "seed": seed, "settings": OmegaConf.to_container(g, resolve=True),
                      "policy": gm.response_stats(torch.cat([r.response_lengths.cpu() for r in pol_roll]),
                                                  torch.cat([r.has_eos.cpu() for r in pol_roll]))}
        ref_roll, ref_texts = None, None
        if reference is not None:
            ref_roll = _generate(reference, tokenizer, prompts, cfg, seed, "generating: reference", progress, device)
            ref_texts = [c for r in ref_roll for c in r.completions]
            generation["reference"] = gm.response_stats(torch.cat([r.response_lengths.cpu() for r in ref_roll]),
                                                        torch.cat([r.has_eos.cpu() for r in ref_roll]))
            lp_pol = _sequence_logps(policy, pol_roll, fused, "log-probs: policy samples (policy)", progress, device)
            lp_ref = _sequence_logps(reference, pol_roll, fused, "log-probs: policy samples (reference)", progress,
                                     device)
            generation["kl"] = {"value": gm.sequence_kl(lp_pol, lp_ref), "n": n_prompts,
                                "estimator": "k1: mean over policy samples of sum_t [log pi(y_t) - log pi_ref(y_t)]"}
            if g.temperature != 1 or g.top_k or g.top_p < 1:
                notes.append("sequence KL: samples were not drawn from the policy itself (temperature/top-k/top-p), "
                             "so the k1 average is not an unbiased KL estimate")
        pol_scores = ref_scores = None
        if scorer is not None:
            pol_scores = _score_texts(scorer, prompts, pol_texts, g.batch_size, "reward: policy samples", progress,
                                      ids=[(r.input_ids, r.attention_mask) for r in pol_roll])
            generation["policy"]["mean_reward"] = float(pol_scores.mean())
            if ref_roll is not None:
                ref_scores = _score_texts(scorer, prompts, ref_texts, g.batch_size, "reward: reference samples",
                                          progress, ids=[(r.input_ids, r.attention_mask) for r in ref_roll])
                generation["reference"]["mean_reward"] = float(ref_scores.mean())
                generation["reward_win_rate"] = gm.win_rate(pol_scores, ref_scores)
        generation["metrics"] = plugin_metrics(registry, prompts, pol_texts, ref_texts)
        generation["samples"] = [
            {"prompt": as_text(p), "policy": pt, "reference": None if ref_texts is None else ref_texts[i],
             "policy_reward": None if pol_scores is None else float(pol_scores[i]),
             "reference_reward": None if ref_scores is None else float(ref_scores[i])}
            for i, (p, pt) in enumerate(zip(prompts, pol_texts))]
    elif kind == "reward":
        notes.append("a reward model: accuracy by its reward only; it generates nothing")

    # 3. judge and benchmarks (alignkit.evaluation.judge / .harness)
    judge = None
    if ecfg.judge.model_path and generation is not None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from alignkit.evaluation.judge import judge_pairs

        path = str(ecfg.judge.model_path)
        judge_model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
        judge_tok = AutoTokenizer.from_pretrained(path)
        judge = judge_pairs(judge_model, judge_tok, prompts, pol_texts, ref_texts,
                            batch_size=int(ecfg.judge.batch_size), progress=progress, template=ecfg.judge.template)
        judge = {**judge, "model_path": path}
        del judge_model
    lm_eval = None
    if list(ecfg.lm_eval.tasks):
        from alignkit.evaluation.harness import run_lm_eval

        le = ecfg.lm_eval
        lm_eval = run_lm_eval(str(target.model_dir), [str(t) for t in le.tasks], include_path=le.include_path,
                              limit=le.limit, batch_size=int(le.batch_size), device=device.type)

    return {
        "target": {"kind": target.kind, "path": str(target.path), "model": str(target.model_dir),
                   "model_kind": kind, "algo": cfg.algo.name if target.kind == "run" else None},
        "reference": ref_desc,
        "reward": None if reward_setup is None else {k: v for k, v in reward_setup.items()},
        "preference": preference,
        "generation": generation,
        "judge": judge,
        "lm_eval": lm_eval,
        "notes": notes,
        "interval": "95% Wilson score interval; ties count 0.5",
        "config": OmegaConf.to_container(cfg, resolve=True),
        "time_seconds": time.time() - t0,
    }


def plugin_metrics(registry, prompts: list, policy: list[str], reference: list[str] | None) -> dict[str, float]:
    """Every metric registered through ``alignkit_register_eval_metrics`` (built-ins included), as
    ``<name>/<key>``; a metric that raises or returns a non-number names its plugin."""
    from alignkit.registry import PluginError

    out: dict[str, float] = {}
    for name, (spec, plugin) in sorted(registry.eval_metrics.items()):
        try:
            values = spec.fn(list(prompts), list(policy), None if reference is None else list(reference))
            out |= {f"{name}/{k}": float(v) for k, v in dict(values).items()}
        except Exception as exc:  # noqa: BLE001 - re-raised with the plugin's name
            raise PluginError(f"eval metric {name!r} of plugin {plugin!r} failed: {exc!r}",
                              f"fix it or disable it with plugins.disable=[{plugin}]") from exc
    return out


# -- output folder ----------------------------------------------------------------------------------
def output_folder(cfg: DictConfig, target: Target) -> Path:
    """Where the results go; an existing folder is refused unless ``eval.overwrite=true``."""
    if cfg.eval.output_dir:
        out = Path(cfg.eval.output_dir)
    elif target.kind == "run":
        out = target.path / "eval"
    else:
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        out = Path(cfg.trainer.output_dir) / "eval" / f"{stamp}_{target.model_dir.resolve().name}"
    if out.exists() and not cfg.eval.overwrite:
        raise UserError(f"output folder {out} already exists",
                        "choose another with eval.output_dir=<folder>, or replace it with eval.overwrite=true")
    return out


def write_outputs(results: dict, out: Path, overwrite: bool = False) -> None:
    """eval.json, eval.md and eval.png into a temporary sibling folder, renamed to ``out`` when all
    are written (a failure removes it and leaves ``out`` as it was)."""
    from alignkit.evaluation import report

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}{PARTIAL_SUFFIX}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        report.write_json(results, tmp / "eval.json")
        report.write_markdown(results, tmp / "eval.md")
        report.write_plot(results, tmp / "eval.png")
        if out.exists():
            if not overwrite:
                raise UserError(f"output folder {out} already exists",
                                "choose another with eval.output_dir=<folder>, or replace it with eval.overwrite=true")
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_eval(path: str, overrides: list[str] = (), registry=None) -> tuple[dict, Path]:
    """``alignkit eval <path> <overrides>`` as a function: ``(results, output folder)``."""
    target = resolve_target(path)
    cfg, registry = compose_eval_config(target, list(overrides), registry)
    out = output_folder(cfg, target)
    results = evaluate(cfg, target, registry)
    write_outputs(results, out, bool(cfg.eval.overwrite))
    return results, out


def main(argv: list[str]) -> int:
    """The ``alignkit eval`` command."""
    from alignkit.evaluation import report

    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    positional = [a for a in argv if "=" not in a or os.path.exists(a)]
    if not positional:
        raise UserError("alignkit eval needs a run folder or a model folder",
                        "alignkit eval <run folder | model folder> [key=value ...] (alignkit eval --help)")
    path = positional[0]
    i = argv.index(path)
    overrides = argv[:i] + argv[i + 1:]
    results, out = run_eval(path, overrides)
    print("\n" + report.format_summary(results) + f"\n\neval folder: {out}", flush=True)
    return 0
