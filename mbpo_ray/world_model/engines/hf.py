"""Reference engine: transformers ``generate`` with a KV cache and per-position token ranges."""

from __future__ import annotations

import torch

from mbpo_ray.world_model.engines.base import Imagined, WorldModelEngine
from mbpo_ray.world_model.layout import TokenLayout


class SegmentMask:
    """Logits processor: generated position i may only take the tokens its segment allows."""

    def __init__(self, layout: TokenLayout, prompt_len: int):
        k, v, sp = layout.codes_per_view, layout.vocab_size, layout.sp
        self.prompt_len = prompt_len
        codes = torch.full((v,), float("-inf"))
        codes[layout.view_ids] = 0
        self.masks = []
        for i in range(layout.target_len):
            if i == k or i == 2 * k + 1:
                m = torch.full((v,), float("-inf"))
                m[sp.wrist if i == k else sp.rew] = 0
            elif i == 2 * k + 2:
                m = torch.full((v,), float("-inf"))
                m[[sp.yes, sp.no]] = 0
            else:
                m = codes
            self.masks.append(m)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores + self.masks[input_ids.shape[1] - self.prompt_len].to(scores.dtype)


class HFEngine(WorldModelEngine):
    def __init__(self, checkpoint: str, layout: TokenLayout, dtype: str = "float32", device: str = "auto"):
        super().__init__(checkpoint, layout)
        import torch
        from transformers import AutoModelForCausalLM

        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, dtype))
        self.model.to(self.device).eval()

    @torch.no_grad()
    def imagine(self, prompts: list[list[int]], temperature: float = 0.0, seed: int | None = None) -> list[Imagined]:
        from transformers import LogitsProcessorList

        n, width, sp = len(prompts), max(map(len, prompts)), self.layout.sp
        ids = torch.full((n, width), sp.pad, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding: every prompt ends at the same position
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        if seed is not None:
            torch.manual_seed(seed)
        out = self.model.generate(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
            max_new_tokens=self.layout.target_len, min_new_tokens=self.layout.target_len,
            do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
            top_p=None, top_k=None, use_cache=True,
            logits_processor=LogitsProcessorList([SegmentMask(self.layout, width)]),
            pad_token_id=sp.pad, eos_token_id=None, return_dict_in_generate=True, output_logits=True,
        )
        seq = out.sequences[:, width:].cpu()
        gen = seq.tolist()
        last = out.logits[-1].float().cpu()  # raw logits at the reward position
        k = self.layout.codes_per_view
        views = [*range(k), *range(k + 1, 2 * k + 1)]  # generated head and wrist code positions
        logp = torch.stack([torch.log_softmax(out.logits[j].float().cpu(), -1) for j in views], 1)  # (n, 2K, V)
        surprisal = -logp.gather(-1, seq[:, views].unsqueeze(-1)).squeeze(-1).mean(1)
        return [self._imagined(prompts[i], gen[i], float(last[i, sp.yes]), float(last[i, sp.no]), float(surprisal[i]))
                for i in range(n)]

    def update_weights(self, state_dict: dict, version: int) -> None:
        self._check_version(version)
        self.model.load_state_dict(state_dict)
        self.version = version
