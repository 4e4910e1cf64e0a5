"""Running data steps in-process on the tiny model, quickly."""
import pytest
import torch


@pytest.fixture(scope="session")
def registry():
    from alignkit.registry import build_registry

    return build_registry()


@pytest.fixture
def run_step(registry):
    """``run_step(name, *overrides)`` composes and runs a data step like ``alignkit data`` does
    (no progress bar; one torch thread: fastest for the tiny model on a busy CPU)."""
    from alignkit.datagen.compose import compose_step, data_step
    from alignkit.datagen.run import execute
    from alignkit.datagen.spec import ModelStepConfig

    threads = torch.get_num_threads()

    def _run(name, *overrides):
        spec = data_step(registry, name)
        quick = ["progress=false"] + (["num_threads=1"] if issubclass(spec.config_class, ModelStepConfig) else [])
        cfg = compose_step(spec, [*quick, *overrides])
        return execute(spec, cfg, registry, command=f"alignkit data {name}")

    yield _run
    torch.set_num_threads(threads)

