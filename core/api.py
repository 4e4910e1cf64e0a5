"""alignkit's public API for plugin authors (version :data:`API_VERSION`).

Everything a plugin needs is importable from here; the built-in plugins import nothing else
from alignkit (a test checks it). Compatibility rules, semantic-versioned by ``API_VERSION``:

* a minor version may add names, optional arguments and optional hook arguments;
  a major version is needed to remove or rename anything or change a signature incompatibly;
* a hook implementation may accept fewer arguments than the hook offers (pluggy passes only
  those it names), so new hook arguments never break an existing plugin;
* batch layouts (:mod:`alignkit.algorithm`'s docstring) and metric names (``eval/loss``,
  ``eval/preference_accuracy``) are part of the API.
"""
from alignkit import hookimpl
from alignkit.algorithm import DATA_KINDS, Algorithm, AlgorithmSpec, RunContext, stacked_pairs
from alignkit.config.schema import check
from alignkit.data.collate import collate
from alignkit.data.collate import pad as pad_sequences
from alignkit.data.formats import (HH_ASSISTANT, HH_HUMAN, DataFormatSpec, DatasetPreset, FormatError, RecordError,
                                   SkipRecord, parse_hh_dialogue)
from alignkit.data.tokenize import IGNORE, STATS, tokenize_example
from alignkit.errors import UserError
from alignkit.evaluation.spec import EvalMetricSpec
from alignkit.metrics import preference_accuracy, preference_metrics
from alignkit.modeling import hidden_states, lm_head, reward_scores, sequence_logprobs, token_logprobs
from alignkit.modeling import unwrap as unwrap_model
from alignkit.rollout import (OnlineAlgorithm, RewardConfig, RewardScorer, Rollout, SamplingConfig, generate,
                              generate_from_prompts, load_reward_model)
from alignkit.rollout.engine import HFEngine, RolloutEngine, RolloutEngineSpec, pack_rollout
from alignkit.rollout.online import MetricMeans, minibatches

API_VERSION = "1.1"

__all__ = [
    "API_VERSION", "hookimpl",
    # algorithms
    "Algorithm", "AlgorithmSpec", "RunContext", "DATA_KINDS", "check", "UserError",
    # data: formats, tokenisation, batches
    "DataFormatSpec", "DatasetPreset", "FormatError", "SkipRecord", "RecordError", "parse_hh_dialogue", "HH_HUMAN",
    "HH_ASSISTANT",
    "IGNORE", "STATS", "tokenize_example", "collate", "pad_sequences", "stacked_pairs",
    # models and metrics
    "token_logprobs", "sequence_logprobs", "reward_scores", "hidden_states", "lm_head", "unwrap_model",
    "preference_accuracy", "preference_metrics",
    # online methods
    "OnlineAlgorithm", "RewardConfig", "SamplingConfig", "Rollout", "generate", "generate_from_prompts",
    "RewardScorer", "load_reward_model", "MetricMeans", "minibatches",
    # rollout engines (alignkit_register_rollout_engines)
    "RolloutEngine", "RolloutEngineSpec", "HFEngine", "pack_rollout",
    # alignkit eval
    "EvalMetricSpec",
]
