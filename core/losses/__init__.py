"""Pure loss functions: tensors in, ``(loss, metrics)`` out. They know nothing
of models, data or the loop, so they can be reused outside alignkit's trainer."""
from alignkit.losses.dpo import dpo_loss  # noqa: F401
from alignkit.losses.reward import bradley_terry_loss, ranked_bradley_terry_loss  # noqa: F401
from alignkit.losses.sft import sft_loss  # noqa: F401
from alignkit.losses.pro import pro_loss  # noqa: F401
from alignkit.losses.rrhf import rrhf_loss  # noqa: F401
from alignkit.losses.coh import coh_loss  # noqa: F401
from alignkit.losses.dpo import LOSS_TYPES as DPO_LOSS_TYPES  # noqa: F401
from alignkit.losses.ppo import (  # noqa: F401
    AdaptiveKLController,
    FixedKLController,
    apply_missing_eos_penalty,
    engine_gap_metrics,
    explained_variance,
    group_advantages,
    kl_per_token,
    masked_whiten_across,
    ScoreNormalizer,
    sequence_kl,
    shape_rewards,
    truncated_is_weights,
)
