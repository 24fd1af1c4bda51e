"""The built-in family records (importing this module registers them) and lookups by HF config.

Qwen2-VL / Qwen2.5-VL load with the image-only processors of `halluc.modeling.qwen2_vl`: the
stock processors minus the video processor, which transformers 5.23 builds only with torchvision.
A real Qwen checkpoint names the stock class, so `AutoProcessor.from_pretrained` fails on it
without torchvision; `load_processor` does not.
"""
from __future__ import annotations

from typing import Any

import transformers

# each module registers its family; listed in the order `halluc models` shows them
from halluc.modeling import llava  # noqa: F401  (isort: skip)
from halluc.modeling import llava_next  # noqa: F401  (isort: skip)
from halluc.modeling import qwen2_vl  # noqa: F401  (isort: skip)
from halluc.modeling import instructblip  # noqa: F401  (isort: skip)
from halluc.modeling import qwen3_vl  # noqa: F401  (isort: skip)
from halluc.modeling import internvl  # noqa: F401  (isort: skip)
from halluc.modeling import llava_onevision  # noqa: F401  (isort: skip)
from halluc.modeling import gemma3  # noqa: F401  (isort: skip)
from halluc.modeling import idefics3  # noqa: F401  (isort: skip)
from halluc.modeling import mistral3  # noqa: F401  (isort: skip)
from halluc.modeling.base import Adapter
from halluc.modeling.generic import GenericAdapter
from halluc.modeling.registry import FAMILIES, family_for, knows
from halluc.modeling.tiny import register_tiny_model

for _record in FAMILIES.peek().values():
    register_tiny_model(_record)


def adapter_for(model: Any) -> Adapter:
    return family_for(model.config).adapter


def adapter_or_generic(model: Any) -> Adapter:
    """The family record's adapter (which may refuse the config), or the generic adapter when no record
    knows the model type (a HallucError when the model lacks what the generic adapter needs)."""
    if knows(model.config.model_type):
        return adapter_for(model)
    return GenericAdapter.for_model(model)


def model_class_for(config: Any) -> type[transformers.PreTrainedModel]:
    """The `*ForConditionalGeneration` class to call `from_pretrained` / `_from_config` on."""
    return getattr(transformers, family_for(config).model_class)


def processor_class_for(config: Any) -> type[transformers.ProcessorMixin]:
    cls = family_for(config).processor_class
    return getattr(transformers, cls) if isinstance(cls, str) else cls


def load_processor(path: str, config: Any, **kwargs: Any) -> Any:
    """The family's processor from a local directory or hub id (what `AutoProcessor` would give,
    except that Qwen checkpoints load image-only, without torchvision)."""
    return processor_class_for(config).from_pretrained(path, **kwargs)
