"""alignkit: align language models with human preferences.

Public names for plugin authors::

    from alignkit import hookimpl, Algorithm, AlgorithmSpec

Everything heavy (torch, transformers) is imported lazily so ``alignkit --help``
answers at once.
"""
import pluggy

__version__ = "0.1.0"

#: Marker for plugin hook implementations (``@hookimpl def alignkit_register_algorithms(): ...``).
hookimpl = pluggy.HookimplMarker("alignkit")

_LAZY = {
    "Algorithm": "alignkit.algorithm",
    "AlgorithmSpec": "alignkit.algorithm",
    "RunContext": "alignkit.algorithm",
    "DataFormatSpec": "alignkit.data.formats",
    "DatasetPreset": "alignkit.data.formats",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'alignkit' has no attribute {name!r}")


__all__ = ["hookimpl", "__version__", *_LAZY]
