"""``alignkit rollout-server [overrides ...]``: a vLLM server that online runs sample from
(``rollout.mode=server rollout.server_url=http://<host>:<port>``).

It composes the same config a run does (``model=``, ``rollout.*``), writes the model preset's
weights and tokenizer once as a Hugging Face folder, and runs ``vllm serve`` on it with what a
run needs: weight updates through ``/collective_rpc`` (``VLLM_SERVER_DEV_MODE=1`` and alignkit's
worker extension), log-probs at the sampling temperature, no model generation defaults.
The server has no authentication of its own: keep it on a private network.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str]) -> int:
    from alignkit.config.compose import compose_config
    from alignkit.models import save_model
    from alignkit.models.build import build_model, build_tokenizer
    from alignkit.rollout.vllm_engine import import_vllm, max_model_len, server_command

    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cfg = compose_config(argv)
    import_vllm()
    r = cfg.rollout
    tokenizer = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tokenizer=tokenizer)
    folder = Path(tempfile.mkdtemp(prefix="alignkit-rollout-server-"))
    save_model(model, tokenizer, folder / "model")
    dtype = str(r.dtype) if str(r.dtype) != "auto" else str(cfg.model.dtype)
    cmd = server_command(str(folder / "model"), host=str(r.host), port=int(r.port), dtype=dtype,
                         max_model_len=max_model_len(r, cfg), enforce_eager=bool(r.enforce_eager),
                         max_num_seqs=int(r.max_num_seqs))
    env = dict(os.environ, VLLM_SERVER_DEV_MODE="1")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(round(float(r.kv_cache_gb))))))
    print(f"alignkit: serving {cfg.model.name} at http://{r.host}:{r.port} "
          f"(train with rollout.engine=vllm rollout.mode=server rollout.server_url=http://{r.host}:{r.port})",
          flush=True)
    server = subprocess.Popen(cmd, env=env)

    def stop(signum, frame):  # SIGTERM / SIGINT reach the server and its engine processes too
        server.send_signal(signum)

    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    try:
        return server.wait()
    finally:
        if server.poll() is None:
            server.kill()
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
