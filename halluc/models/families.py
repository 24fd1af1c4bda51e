"""Which adapter, model class and processor class serve each HF `config.model_type`.

Qwen2-VL / Qwen2.5-VL load with the image-only processors of `halluc.models.qwen2_vl`: the
stock processors minus the video processor, which transformers 5.23 builds only with torchvision.
A real Qwen checkpoint names the stock class, so `AutoProcessor.from_pretrained` fails on it
without torchvision; `load_processor` does not. (Directories saved from the image-only classes,
e.g. tiny models, load with either: importing this module registers them with AutoProcessor.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import transformers

from halluc.errors import HallucError
from halluc.models.base import Adapter
from halluc.models.instructblip import INSTRUCTBLIP
from halluc.models.llava import LLAVA
from halluc.models.llava_next import LLAVA_NEXT
from halluc.models.qwen2_vl import QWEN2_5_VL, QWEN2_VL, Qwen2_5_VLImageOnlyProcessor, Qwen2VLImageOnlyProcessor


@dataclass(frozen=True)
class Family:
    adapter: Adapter
    model_class: str  # a transformers class name, resolved lazily
    processor_class: str | type


FAMILIES: dict[str, Family] = {
    "llava": Family(LLAVA, "LlavaForConditionalGeneration", "LlavaProcessor"),
    "llava_next": Family(LLAVA_NEXT, "LlavaNextForConditionalGeneration", "LlavaNextProcessor"),
    "qwen2_vl": Family(QWEN2_VL, "Qwen2VLForConditionalGeneration", Qwen2VLImageOnlyProcessor),
    "qwen2_5_vl": Family(QWEN2_5_VL, "Qwen2_5_VLForConditionalGeneration", Qwen2_5_VLImageOnlyProcessor),
    "instructblip": Family(INSTRUCTBLIP, "InstructBlipForConditionalGeneration", "InstructBlipProcessor"),
}


def supported_model_types() -> list[str]:
    return sorted(FAMILIES)


def family_for(config_or_type: Any) -> Family:
    """The family of a config (or a model_type string); HallucError naming the supported ones."""
    model_type = config_or_type if isinstance(config_or_type, str) else config_or_type.model_type
    if model_type not in FAMILIES:
        raise HallucError(f"model type '{model_type}' is not supported; supported model types: "
                          f"{', '.join(supported_model_types())}")
    if not getattr(config_or_type, "use_decoder_only_language_model", True):
        # InstructBLIP-Flan-T5 shares the model type, but its LM has no decoder-only layer stack
        raise HallucError(f"{model_type} with an encoder-decoder language model is not supported; "
                          "use a decoder-only (Vicuna) checkpoint")
    return FAMILIES[model_type]


def adapter_for(model: Any) -> Adapter:
    return family_for(model.config).adapter


def model_class_for(config: Any) -> type:
    """The `*ForConditionalGeneration` class to call `from_pretrained` / `_from_config` on."""
    return getattr(transformers, family_for(config).model_class)


def processor_class_for(config: Any) -> type:
    cls = family_for(config).processor_class
    return getattr(transformers, cls) if isinstance(cls, str) else cls


def load_processor(path: str, config: Any, **kwargs: Any) -> Any:
    """The family's processor from a local directory or hub id (what `AutoProcessor` would give,
    except that Qwen checkpoints load image-only, without torchvision)."""
    return processor_class_for(config).from_pretrained(path, **kwargs)
