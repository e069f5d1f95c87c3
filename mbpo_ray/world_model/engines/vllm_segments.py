"""vLLM logits processor: each generated position of a transition may only take its segment's tokens.

With it a whole transition (head view, ``<wrist>``, wrist view, ``<rew>``, answer) is one request:
one prefill and ``2K + 3`` decode steps, no re-prefill between the views. A request opts in
through ``SamplingParams(extra_args={"segments": segment_spec(layout)})``; output position ``i``
gets row ``i`` of :func:`segment_masks` added to its logits. Imported only inside a vLLM engine.
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from mbpo_ray.world_model.layout import KEEP, NO, REW, WRIST, YES, TokenLayout


def segment_spec(layout: TokenLayout) -> tuple[int, ...]:
    """Compact description of a transition's segments: (vocab, K, first code id, end of codes, keep id)."""
    return (layout.vocab_size, layout.codes_per_view, layout.code_offset, layout.bin_offset,
            KEEP if layout.keep_codes else -1)


def segment_masks(spec, device=None) -> torch.Tensor:
    """(2K + 3, vocab) additive masks, one row per generated position."""
    vocab, k, lo, hi, keep = spec
    view = torch.full((vocab,), float("-inf"), device=device)
    view[lo:hi] = 0.0
    if keep >= 0:
        view[keep] = 0.0
    m = torch.full((2 * k + 3, vocab), float("-inf"), device=device)
    m[:k] = m[k + 1 : 2 * k + 1] = view
    m[k, WRIST] = m[2 * k + 1, REW] = m[2 * k + 2, YES] = m[2 * k + 2, NO] = 0.0
    return m


class SegmentLogitsProcessor(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.device = device
        self.requests: dict[int, tuple[torch.Tensor, list[int]]] = {}  # batch row -> (masks, output ids)
        self.masks: dict[tuple, torch.Tensor] = {}  # spec -> (positions, vocab) additive masks

    def is_argmax_invariant(self) -> bool:
        return False

    def _add(self, params, _prompt, output_ids):
        spec = (params.extra_args or {}).get("segments")
        if spec is None:
            return None
        spec = tuple(int(x) for x in spec)
        if spec not in self.masks:
            self.masks[spec] = segment_masks(spec, self.device)
        return self.masks[spec], output_ids

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.requests, batch_update, self._add)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        for row, (masks, output_ids) in self.requests.items():
            pos = min(len(output_ids), masks.shape[0] - 1)
            logits[row] += masks[pos].to(logits.dtype)
        return logits
