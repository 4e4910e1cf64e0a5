"""Rollouts shared by the online algorithms (PPO, RAFT, GRPO, RLOO, online ranked lists).

Stable API (other plugins build on these signatures):

``generate(model, tokenizer, prompt_input_ids, prompt_attention_mask, *, max_new_tokens=64,
temperature=1.0, top_k=0, top_p=1.0, num_samples=1, prompts=None, references=None) -> Rollout``
    Sample ``num_samples`` responses per left-padded prompt (stop at EOS). The
    :class:`Rollout` holds prompt+response ids re-packed left-aligned with ``labels``
    (-100 off the response) and ``mask`` aligned with ``alignkit.modeling.token_logprobs``,
    the decoded ``completions``, ``has_eos`` and ``response_lengths``; samples of one prompt
    are consecutive rows (``group_size``).

``generate_from_prompts(model, tokenizer, prompts, data_cfg, **generate_kwargs) -> Rollout``
    The same from raw prompt strings / chat messages, tokenised like the data pipeline.

``RewardScorer.from_config(reward_cfg, run)(prompts, completions, references=None) -> Tensor[N]``
    Scores from a registered reward function (``reward.function``) or a reward model
    trained with ``algo=rm`` (``reward.model_path``).

``OnlineAlgorithm``: base class for ``data_kind = "prompt"`` algorithms: builds the scorer,
rolls out and scores a step's prompt batches (:meth:`OnlineAlgorithm.rollout`), computes
per-token log-probs in chunks, times phases and writes sampled responses to
``<run>/samples.jsonl``.

Rollout engines (:mod:`alignkit.rollout.engine`): ``rollout.engine=hf`` (Hugging Face ``generate`` on the
policy) or ``vllm`` (:mod:`alignkit.rollout.vllm_engine`), or a plugin's engine registered through
``alignkit_register_rollout_engines``.

Configs: :class:`SamplingConfig` (``algo.generation``) and :class:`RewardConfig` (``algo.reward``).
"""
from alignkit.rollout.config import RewardConfig, SamplingConfig
from alignkit.rollout.generation import (
    Rollout,
    concat_prompt_batches,
    generate,
    generate_from_prompts,
    stop_token_ids,
    tokenize_prompts,
)
from alignkit.rollout.online import OnlineAlgorithm
from alignkit.rollout.rewards import RewardScorer, load_reward_model

__all__ = [
    "Rollout", "generate", "generate_from_prompts", "tokenize_prompts", "stop_token_ids", "concat_prompt_batches",
    "RewardScorer", "load_reward_model", "SamplingConfig", "RewardConfig", "OnlineAlgorithm",
]
