"""Convert the CCA-trained LLaVA-1.5 (`xing0047/cca-llava-1.5-7b`, LLaVA-codebase format) to llava-hf.

The CCA checkpoint is a `LlavaLlamaForCausalLM` state dict: the Vicuna LM at `model.*` and
`lm_head`, the 2-layer projector at `model.mm_projector.{0,2}`, usually no vision tower (LLaVA
loads the frozen `openai/clip-vit-large-patch14-336` separately; when present it sits at
`model.vision_tower.vision_tower.vision_model.*`), a 32000-token vocabulary (the image is the -200
placeholder, not a token). `llava-hf/llava-1.5-7b-hf` has the same architecture, the same CLIP
weights and a tokenizer with `<image>` (32000) and `<pad>` (32001) added, vocabulary padded to 32064.

So: load a local copy of `llava-hf/llava-1.5-7b-hf` (the base), overwrite its LM, projector (and
vision tower if the checkpoint has one) with the CCA weights, keeping the base's embedding and
lm_head rows >= 32000, and save it with the base's processor:

    from halluc.modeling.cca_checkpoint import convert
    convert("cca-llava-1.5-7b", "llava-1.5-7b-hf", "cca-llava-hf")   # local folders (hf download ...)
    # then: halluc generate --model cca-llava-hf --method cca ...   or   halluc.load("cca-llava-hf")

Renames (LLaVA codebase -> transformers 5 `LlavaForConditionalGeneration`):
    model.mm_projector.0.*                      -> model.multi_modal_projector.linear_1.*
    model.mm_projector.2.*                      -> model.multi_modal_projector.linear_2.*
    model.vision_tower.vision_tower.vision_model.* -> model.vision_tower.*
    model.*  (embed_tokens, layers, norm)       -> model.language_model.*
    lm_head.weight                              -> lm_head.weight
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from halluc.errors import HallucError
from halluc.modeling.base import HFModel

RENAMES = (  # first match wins
    ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
    ("model.vision_tower.vision_tower.vision_model.", "model.vision_tower."),
    ("model.", "model.language_model."),
    ("lm_head.", "lm_head."),
)
VOCAB_ROWS = ("model.language_model.embed_tokens.weight", "lm_head.weight")


def hf_name(key: str) -> str | None:
    """The llava-hf name of a LLaVA-codebase key (None for keys with no counterpart, e.g. rotary buffers)."""
    if "rotary_emb" in key:
        return None
    return next((new + key[len(old):] for old, new in RENAMES if key.startswith(old)), None)


def load_into(model: HFModel, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy a LLaVA-codebase state dict into an llava-hf model in place; returns the names it set."""
    target = model.state_dict()
    done = []
    for key, value in state.items():
        name = hf_name(key)
        if name is None:
            continue
        if name not in target:
            raise HallucError(f"CCA checkpoint key '{key}' has no llava-hf counterpart ('{name}')")
        dest = target[name]
        if name in VOCAB_ROWS and value.shape[0] <= dest.shape[0] and value.shape[1:] == dest.shape[1:]:
            dest = dest[: value.shape[0]]  # the base's extra rows (<image>, <pad>, padding) are kept
        if dest.shape != value.shape:
            raise HallucError(f"CCA checkpoint '{key}' has shape {tuple(value.shape)}, llava-hf '{name}' "
                              f"{tuple(dest.shape)}: not a LLaVA-1.5 of the base's size")
        with torch.no_grad():
            dest.copy_(value.to(dest.dtype))
        done.append(name)
    missing = [n for n in target if n.startswith("model.language_model.") and n not in done]
    if missing:
        raise HallucError(f"CCA checkpoint lacks {len(missing)} language-model weights, e.g. '{missing[0]}'")
    return done


def read_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder (*.safetensors, else *.bin shards)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if files:
        from safetensors.torch import load_file
        return {k: v for f in files for k, v in load_file(f).items()}
    files = sorted(folder.glob("*.bin"))
    if not files:
        raise HallucError(f"no *.safetensors or *.bin weights in {folder}")
    return {k: v for f in files for k, v in torch.load(f, map_location="cpu", weights_only=True).items()}


def convert(cca_dir: str | Path, base_dir: str | Path, out_dir: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write an llava-hf directory with the CCA weights (fp16, as released); `halluc.load(out_dir)` loads it."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(base_dir, dtype=dtype)
    load_into(model, read_state(cca_dir))
    model.save_pretrained(out_dir)
    AutoProcessor.from_pretrained(base_dir).save_pretrained(out_dir)
    return Path(out_dir)
