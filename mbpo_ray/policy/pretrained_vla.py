"""A VLA over a pretrained vision-language model loaded from a local folder (``policy.backbone_path``).

* backbone: a transformers VLM of the SmolVLM / Idefics3 family (``model_type`` ``smolvlm`` or
  ``idefics3``; a folder written by ``save_pretrained``, with its tokenizer), loaded with
  ``AutoModel`` (no language-model head). Both camera views go through its vision tower and
  connector; the instruction through its tokenizer and embeddings;
* sequence: ``[head image tokens, wrist image tokens, instruction tokens, H action queries]``; the
  instruction is padded to a fixed length and masked, with positions counted over real tokens only,
  so a row's output never depends on what else is in its batch;
* action head (OpenVLA-OFT style parallel decoding): one learned query per step of the chunk; the
  backbone's last hidden state at each query gives, through one linear layer, 7 x n_bins logits,
  i.e. one categorical per (step, dim), all from one forward pass;
* value head: an MLP on the mean of the query states, detached (as in ``binned_vla``), so critic
  gradients never move the actor;
* frames: held at ``policy.image_size`` (SFT resizes the demonstrations to it once), then resized to
  the backbone's own vision size and normalised with its image processor's mean and std;
* LoRA (peft) on the attention and MLP projections of the vision tower, the connector and the
  language model with ``policy.lora_rank`` > 0 (the rest of the backbone frozen); 0 = full finetune.
  Queries and heads are always trained.

The checkpoint holds the whole state dict (backbone, LoRA, heads); loading it rebuilds the backbone
from ``policy.backbone_path``, so that folder must still exist where the checkpoint is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from mbpo_ray.config import ConfigError, PolicyConfig
from mbpo_ray.policy.base import ActionBins, Observations, Policy, resize_views

FAMILIES = ("idefics3", "smolvlm")  # config.json model_type values this adapter reads
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "out_proj", "gate_proj", "up_proj", "down_proj",
                "fc1", "fc2", "proj"]
MAX_TEXT_TOKENS = 32


class BackboneError(ConfigError):
    """``policy.backbone_path`` does not name a loadable local VLM folder (the CLI prints it, exit 2)."""


def _bad(path: str, why: str) -> BackboneError:
    return BackboneError(
        f"policy.backbone_path={path!r} {why}: pass --policy.backbone_path=DIR, a local folder of a transformers "
        f"vision-language model ({' or '.join(FAMILIES)}, e.g. SmolVLM) with its tokenizer, as save_pretrained "
        "writes it; a checkpoint of this policy needs that folder wherever it is loaded")


def load_backbone(path: str):
    """(backbone model, tokenizer, image mean, image std) from the local folder ``path``."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = Path(path) if path else None
    if folder is None:
        raise _bad(path, "is empty")
    if not (folder / "config.json").is_file():
        raise _bad(path, "is not a model folder (no config.json)" if folder.is_dir() else "does not exist")
    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    if model_type not in FAMILIES:
        raise _bad(path, f"holds a {model_type!r} model, not a supported vision-language model")
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # a ...ForConditionalGeneration folder has an lm_head we do not load
    hf_logging.disable_progress_bar()  # loaded again by every replica and learner rank
    try:
        model = AutoModel.from_pretrained(str(folder), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as e:
        raise _bad(path, f"could not be loaded ({type(e).__name__}: {e})") from e
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    mean, std = [0.5] * 3, [0.5] * 3  # SigLIP's, unless the folder's image processor says otherwise
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        p = json.loads(pre.read_text())
        mean, std = p.get("image_mean", mean), p.get("image_std", std)
    return model, tokenizer, mean, std


def add_lora(model: nn.Module, rank: int) -> None:
    """LoRA adapters in place (module names kept); everything but the adapters frozen."""
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=LORA_TARGETS),
                            model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)


class PretrainedVLA(Policy):
    def __init__(self, cfg: PolicyConfig, bins: ActionBins):
        super().__init__(bins)
        if cfg.proprio:
            raise ConfigError("policy.proprio=True is not allowed: policy.arch=pretrained_vla reads the cameras "
                              "and the instruction only")
        self.cfg = cfg
        self.backbone, self.tokenizer, mean, std = load_backbone(cfg.backbone_path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if cfg.lora_rank > 0:
            add_lora(self.backbone, cfg.lora_rank)
        conf = self.backbone.config
        self.vision_size = conf.vision_config.image_size
        width = conf.text_config.hidden_size
        self.register_buffer("image_mean", torch.tensor(mean, dtype=torch.float32).view(1, 1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("image_std", torch.tensor(std, dtype=torch.float32).view(1, 1, 3, 1, 1),
                             persistent=False)
        self.action_queries = nn.Parameter(torch.randn(bins.chunk_size, width) * 0.02)
        self.action_head = nn.Linear(width, bins.action_dim * bins.n_bins)
        self.value_head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, 1))

    def fsdp_units(self) -> list[nn.Module]:
        """The backbone's transformer blocks (vision and language), one FSDP unit each."""
        return [*self.backbone.vision_model.encoder.layers, *self.backbone.text_model.layers]

    def _text(self, instructions) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer(list(instructions), padding="max_length", truncation=True,
                             max_length=MAX_TEXT_TOKENS, return_tensors="pt", add_special_tokens=True)
        return tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)

    def features(self, obs: Observations) -> torch.Tensor:
        """(B, H, width): the backbone's last hidden states at the action queries."""
        dev = self.device
        views = torch.stack([resize_views(obs.head, self.vision_size), resize_views(obs.wrist, self.vision_size)], 1)
        pixels = ((views.to(dev) - self.image_mean) / self.image_std).to(self.backbone.dtype)
        b = len(obs)
        # the vision tower and connector directly: get_image_features drops all-zero images as padding
        seen = self.backbone.vision_model(pixel_values=pixels.flatten(0, 1)).last_hidden_state
        img = self.backbone.connector(seen).reshape(b, -1, self.action_queries.shape[-1])  # (B, 2 L, width)
        ids, text_mask = self._text(obs.instruction)
        text = self.backbone.get_input_embeddings()(ids)
        queries = self.action_queries.to(text.dtype).expand(b, -1, -1)
        embeds = torch.cat([img, text, queries], dim=1)
        mask = torch.cat([torch.ones(b, img.shape[1], dtype=torch.long, device=dev), text_mask,
                          torch.ones(b, queries.shape[1], dtype=torch.long, device=dev)], dim=1)
        positions = (mask.cumsum(1) - 1).clamp_min(0)  # padding does not shift what follows it
        out = self.backbone.text_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                       use_cache=False)
        return out.last_hidden_state[:, -queries.shape[1]:].float()

    def logits_and_value(self, obs: Observations) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.features(obs)
        b = self.bins
        logits = self.action_head(z).reshape(len(z), b.chunk_size, b.action_dim, b.n_bins)
        return logits, self.value_head(self.value_input(z).detach()).squeeze(-1)

    def value_input(self, z: torch.Tensor) -> torch.Tensor:
        return z.mean(1)  # the action queries' hidden states, pooled
