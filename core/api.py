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
from alignkit.algorithm import DATA_KINDS, Algorithm, AlgorithmSpec, RunContext
from alignkit.config.schema import check
from alignkit.data.formats import DataFormatSpec, DatasetPreset, FormatError
from alignkit.data.tokenize import IGNORE
from alignkit.errors import UserError
from alignkit.metrics import preference_accuracy
from alignkit.modeling import reward_scores
from alignkit.rollout import OnlineAlgorithm, RewardConfig, Rollout, SamplingConfig, generate
from alignkit.rollout.online import MetricMeans, minibatches

API_VERSION = "1.0"

__all__ = [
    "API_VERSION", "hookimpl", "Algorithm", "AlgorithmSpec", "RunContext", "DATA_KINDS", "check",
    "DataFormatSpec", "DatasetPreset", "FormatError", "IGNORE", "UserError", "preference_accuracy", "reward_scores",
    "OnlineAlgorithm", "RewardConfig", "SamplingConfig", "Rollout", "generate", "MetricMeans", "minibatches",
]
