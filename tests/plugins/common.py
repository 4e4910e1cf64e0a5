"""Shared pieces of the KTO / ORPO / SimPO plugin tests: the registry, a quick-run config and a
synthetic preference set whose preference a tiny random model can learn in a few steps."""
import json
import math
import random

import pytest

#: a quick run on the small HH slice: 40 held-out pairs, short sequences, constant LR
FAST = ["data.sources.0.max_examples=120", "data.sources.0.eval_size=40", "data.max_length=64",
        "data.max_prompt_length=32", "trainer.batch_size=8", "trainer.lr=3e-3", "trainer.lr_scheduler=constant",
        "trainer.max_steps=12"]

GOOD = ["Sure, I am glad to help you with that.", "Of course! Here is a careful and kind answer.",
        "Happy to help: let us work through it together.", "Thanks for asking, here is what I suggest."]
BAD = ["No. Figure it out yourself.", "That is a stupid question, go away.",
       "I will not help you with that, idiot.", "Whatever. I do not care about you."]
WORDS = "apple river stone cloud music paper garden window yellow simple quiet market little".split()


def write_pairs(path, n=160, seed=0):
    """Synthetic preference pairs with a learnable preference: a kind answer (chosen) vs a rude one
    (rejected), each from 4 templates plus random filler words, so a random model's scores do not
    order every pair the same way. The preference in a few dozen pairs of the HH slice is too
    subtle for a randomly initialised 1M-parameter model: after a dozen steps held-out accuracy
    there moves by chance, up or down, with the data split (checked on several seeds and splits)."""
    rng = random.Random(seed)

    def filler(k):
        return " ".join(rng.choice(WORDS) for _ in range(k))

    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"Question {i}: what about the {filler(3)}?",
                                "chosen": f"{rng.choice(GOOD)} {filler(5)}.",
                                "rejected": f"{rng.choice(BAD)} {filler(5)}."}) + "\n")
    return path


def sig(x):
    return 1 / (1 + math.exp(-x))


@pytest.fixture
def registry():
    """The registry with every installed plugin (KTO, ORPO and SimPO through their entry points)."""
    from alignkit.registry import build_registry

    return build_registry()
