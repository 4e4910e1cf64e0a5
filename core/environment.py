"""The software a result was produced with: Python, platform and the installed version of every package
alignkit declares as a requirement (read from alignkit's own metadata, so the list follows ``setup.py``).

A run folder keeps it as ``environment.json`` next to ``config.yaml``; ``alignkit bench`` and
``alignkit data`` record it with their results.
"""
from __future__ import annotations

import platform
import re
from importlib import metadata


def _requirement_names() -> list[str]:
    """The distribution names alignkit requires, extras included (``name[extra]>=x; extra == "dev"``)."""
    try:
        reqs = metadata.requires("alignkit") or []
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return ["torch", "transformers", "accelerate", "datasets", "peft", "hydra-core"]
    names = {re.match(r"[A-Za-z0-9_.\-]+", r).group(0).lower() for r in reqs}
    return sorted(names)


def package_versions() -> dict[str, str]:
    """``{distribution: version}`` of alignkit and each installed requirement (absent extras are left out)."""
    out = {}
    for name in ["alignkit", *_requirement_names()]:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def environment() -> dict:
    """Python, platform and package versions, for a result's provenance."""
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": package_versions()}
