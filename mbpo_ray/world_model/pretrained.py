"""A world-model backbone from a pretrained causal LM in a local folder (``world_model.pretrained``).

The LM keeps its own vocabulary; the layout's tokens are appended after it (``TokenLayout.base_vocab``
= the LM's vocabulary size, so every layout id is shifted by it) and the embeddings are resized with
``resize_token_embeddings``: the pretrained rows stay as they were, the new rows start at the mean of
the old ones. Size and depth come from the LM's own config. The saved ``model/`` has a config whose
``vocab_size`` is the resized one, so it loads in transformers and vLLM alike (tied embeddings stay
tied: the output head is resized with them).
"""

from __future__ import annotations

from pathlib import Path

from mbpo_ray.config import ConfigError
from mbpo_ray.world_model.layout import TokenLayout


def pretrained_config(path: str | Path):
    """The transformers config of the causal LM in ``path``; ConfigError/FileNotFoundError (both printed as
    one line by the CLI) when it is not one."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"world_model.pretrained={str(path)!r}: no such folder")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"world_model.pretrained={str(path)!r} holds no config.json: save the LM there "
                                "with save_pretrained (or download a Hugging Face model folder)")
    try:
        conf = AutoConfig.from_pretrained(path)
    except (ValueError, KeyError, OSError) as exc:
        raise ConfigError(f"world_model.pretrained={str(path)!r}: transformers cannot read its config ({exc})") from None
    if type(conf) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ConfigError(f"world_model.pretrained={str(path)!r} is a {conf.model_type!r} model, not a causal LM "
                         "(AutoModelForCausalLM has no class for it)")
    return conf


def base_vocab_size(path: str | Path) -> int:
    """Rows of the LM's embedding table: where the layout's ids start."""
    return int(pretrained_config(path).get_text_config().vocab_size)


def load_pretrained_backbone(path: str | Path, layout: TokenLayout):
    """The LM in ``path`` (float32) with its vocabulary extended to ``layout.vocab_size``."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    conf = pretrained_config(path)
    text = conf.get_text_config()
    if layout.base_vocab != text.vocab_size:
        raise ConfigError(f"the layout's ids start at {layout.base_vocab}, but the LM in {str(path)!r} has "
                         f"{text.vocab_size} tokens: a layout fitted for another backbone")
    max_pos = getattr(text, "max_position_embeddings", None)
    if max_pos is not None and max_pos < layout.max_len():
        raise ConfigError(f"the LM in {str(path)!r} takes {max_pos} positions; a transition needs {layout.max_len()}")
    try:
        model, info = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
    except OSError as exc:
        raise FileNotFoundError(f"world_model.pretrained={str(path)!r}: no loadable weights ({exc})") from None
    if info["missing_keys"]:  # e.g. an Emu3/LLaVA folder: its LM weights sit under another prefix
        missing = sorted(info["missing_keys"])
        raise ConfigError(f"world_model.pretrained={str(path)!r}: {len(missing)} weights of {type(model).__name__} are "
                         f"not in the checkpoint (e.g. {missing[0]}); for a multimodal model save its language "
                         "model alone (save_pretrained) and point there")
    if model.get_input_embeddings().num_embeddings != layout.base_vocab:
        raise ConfigError(f"the LM in {str(path)!r} has {model.get_input_embeddings().num_embeddings} embedding "
                         f"rows, its config says {layout.base_vocab}")
    model.resize_token_embeddings(layout.vocab_size)
    model.config.get_text_config().vocab_size = layout.vocab_size
    sp = layout.sp
    for c in (model.config, model.config.get_text_config()):
        c.bos_token_id, c.eos_token_id, c.pad_token_id = sp.bos, sp.eos, sp.pad
    # the LM's own sampling defaults (top_p, repetition_penalty, ...) must not reach generate()
    model.generation_config = GenerationConfig(bos_token_id=sp.bos, eos_token_id=sp.eos, pad_token_id=sp.pad)
    return model
