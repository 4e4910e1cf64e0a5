"""Structured configs (dataclasses stored in Hydra's ConfigStore) and composition."""
from alignkit.config.schema import (  # noqa: F401
    check,
    DataConfig,
    DistributedConfig,
    DataSource,
    LoggerConfig,
    LoraConfig,
    ModelConfig,
    OpsConfig,
    PluginsConfig,
    RunConfig,
    TinyModelConfig,
    TrainerConfig,
)
