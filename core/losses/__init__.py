"""Pure loss functions: tensors in, ``(loss, metrics)`` out. They know nothing
of models, data or the loop, so they can be reused outside alignkit's trainer."""
from alignkit.losses.dpo import dpo_loss  # noqa: F401
from alignkit.losses.reward import bradley_terry_loss, ranked_bradley_terry_loss  # noqa: F401
from alignkit.losses.sft import sft_loss  # noqa: F401
from alignkit.losses.pro import pro_loss  # noqa: F401
from alignkit.losses.rrhf import rrhf_loss  # noqa: F401
from alignkit.losses.coh import coh_loss  # noqa: F401
