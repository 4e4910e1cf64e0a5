"""alignkit's own non-algorithm registrations (record formats, data presets),
loaded through the ``alignkit.plugins`` entry-point group like any plugin."""
from alignkit import hookimpl
from alignkit.data.corpora import CORPUS_FORMATS
from alignkit.data.formats import BUILTIN_FORMATS


@hookimpl
def alignkit_register_data_formats():
    return list(BUILTIN_FORMATS) + list(CORPUS_FORMATS)


@hookimpl
def alignkit_register_eval_metrics():
    from alignkit.evaluation.generation_metrics import BUILTIN_METRICS

    return list(BUILTIN_METRICS)


@hookimpl
def alignkit_register_rollout_engines():
    from alignkit.rollout.engine import builtin_engines

    return builtin_engines()
