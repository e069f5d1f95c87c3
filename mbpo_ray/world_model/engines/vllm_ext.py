"""vLLM worker extension: in-place weight refresh of a running engine.

Loaded inside vLLM's worker by name (``worker_extension_cls``) and called through
``LLM.collective_rpc``. Only plain data crosses the call: safetensors bytes and a version number.
"""

from __future__ import annotations


class WeightSyncExtension:
    """Mixed into vLLM's worker class; ``self`` is the worker."""

    def load_safetensors(self, payload: bytes, version: int) -> int:
        from safetensors.torch import load

        state = load(payload)
        self.reload_weights(weights_iterator=iter(state.items()))
        self.mbpo_weights_version = version
        return version

    def weights_version(self) -> int:
        return getattr(self, "mbpo_weights_version", 0)
