"""Shared test setup: never reach a model hub; small, fast configs."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

#: overrides for a quick CPU run on the small data slice
QUICK = ["model=tiny", "data=hh-rlhf-small", "logger=none", "trainer.progress=false", "trainer.eval_steps=0"]


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~30 s; run with -m slow")


@pytest.fixture
def quick_overrides(tmp_path):
    return QUICK + [f"trainer.output_dir={tmp_path}"]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from alignkit.models.tiny import load_tiny_tokenizer

    return load_tiny_tokenizer()
