"""The generic adapter: any image-text-to-text model that no family record knows.

It needs two things of the model, both standard in transformers' LVLMs:
  - its image tokens are marked by an id in its config (`image_token_id` or `image_token_index`);
  - its language model is a decoder with `layers` (each with `self_attn.o_proj` and `mlp`) and a
    final `norm`, found through `get_decoder()`, and the LM head through `get_output_embeddings()`.
From them it gives image positions per row (one span per run of consecutive image tokens), the
decoder layers with their attention, `o_proj` and MLP, the final norm, the LM head and text-only
prompts (the processor's chat template, or the raw text when it has none). It provides no 2-D grid
and no vision CLS attention: methods that need them refuse with a clear message until a family
record supplies them. Its family name is "generic:<model_type>".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from halluc.errors import HallucError
from halluc.modeling.base import Adapter, HFModel, ImageSpan, ModulePaths, contiguous_runs

GENERIC = "generic"
VISION_TOWERS = ("model.vision_tower", "model.vision_model", "model.visual", "vision_tower", "vision_model")


@dataclass(frozen=True)
class GenericAdapter(Adapter):
    provides: frozenset[str] = frozenset()

    @classmethod
    def for_model(cls, model: HFModel) -> GenericAdapter:
        """The generic adapter of `model`, or a HallucError naming what the model lacks."""
        config = model.config
        model_type = getattr(config, "model_type", type(model).__name__)
        family = f"{GENERIC}:{model_type}"
        if getattr(config, "image_token_id", None) is None and getattr(config, "image_token_index", None) is None:
            raise HallucError(f"{type(model).__name__} ({model_type}) has no image_token_id or image_token_index in "
                              "its config: the generic adapter cannot find its image tokens")
        if getattr(config, "text_config", None) is None:
            raise HallucError(f"{type(model).__name__} ({model_type}) has no text_config: the generic adapter needs "
                              "the language model's own config")
        names = {id(module): name for name, module in model.named_modules()}
        decoder: HFModel = _call(model, "get_decoder", model_type)
        head = _call(model, "get_output_embeddings", model_type)
        if id(decoder) not in names or id(head) not in names:
            raise HallucError(f"{model_type}: the decoder or the LM head is not a submodule of the model")
        decoder_path, head_path = names[id(decoder)], names[id(head)]
        tower = next((path for path in VISION_TOWERS if _has(model, path)), None)
        paths = ModulePaths(layers=f"{decoder_path}.layers", final_norm=f"{decoder_path}.norm", lm_head=head_path,
                            vision_tower=tower)
        layer = decoder.layers[0]
        sequential = hasattr(layer, "post_attention_layernorm") and not hasattr(layer, "pre_feedforward_layernorm")
        adapter = cls(family, paths, provides=frozenset({"pre_norm_block"} if sequential else ()))
        adapter.check(model)
        return adapter

    def check(self, model: HFModel) -> None:
        """Resolve every point methods use on layer 0 (a HallucError names the first one missing)."""
        for point in ("layers.0", "layers.0.attn", "layers.0.attn.o_proj", "layers.0.mlp", "norm", "lm_head"):
            self.resolve(model, point)
        attn = self.attention(model, 0)
        if not hasattr(attn, "head_dim"):
            raise HallucError(f"{self.family}: layer 0's attention ({type(attn).__name__}) has no head_dim")

    def image_spans(self, model: HFModel, inputs: dict) -> list[list[ImageSpan]]:
        """One span per run of consecutive image tokens, kind "tokens", with a (1, n) grid (no 2-D layout)."""
        return [[ImageSpan(run, (1, len(run)), "tokens") for run in contiguous_runs(row.nonzero().flatten())]
                for row in self.image_mask(model, inputs["input_ids"])]

    def prompt(self, processor: Any, text: str, with_image: bool = True, system: str | None = None) -> str:
        """The chat template's prompt; without a template, the raw text (the processor adds the image tokens)."""
        if getattr(processor, "chat_template", None):
            return super().prompt(processor, text, with_image=with_image, system=system)
        return text if system is None else f"{system}\n{text}"


# what every generic adapter declares (its family name and what it provides), for checks and tables made
# before any model is loaded; it resolves no module
GENERIC_DECLARATION = GenericAdapter(GENERIC, ModulePaths(layers="", final_norm="", lm_head="", vision_tower=None))


def _call(model: HFModel, method: str, model_type: str) -> nn.Module:
    try:
        module = getattr(model, method)()
    except (AttributeError, NotImplementedError):  # transformers' own "not implemented"
        module = None
    if not isinstance(module, nn.Module):
        raise HallucError(f"{model_type}: {type(model).__name__}.{method}() gives no module; the generic adapter "
                          "needs the language model's decoder and LM head")
    return module


def _has(model: HFModel, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True
