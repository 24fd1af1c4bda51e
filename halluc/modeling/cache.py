"""Where a layer or model call finds its KV cache across transformers 5.x.

transformers renamed the `past_key_values` keyword to `cache` (5.2x; the old name is deprecated until
5.40): a hook that reads only one name silently sees "no cache" on the other versions and takes every
decode step for a prefill.
"""
from __future__ import annotations

import inspect
from typing import Any

CACHE_KEYWORDS = ("cache", "past_key_values")


def cache_of(kwargs: dict) -> Any:
    """The KV cache in a call's keyword arguments (or model kwargs of `generate`), or None."""
    for key in CACHE_KEYWORDS:
        if kwargs.get(key) is not None:
            return kwargs[key]
    return None


def cache_keyword(model: Any) -> str:
    """The name `model.forward` takes its KV cache under on this transformers version."""
    parameters = inspect.signature(model.forward).parameters
    return next((key for key in CACHE_KEYWORDS if key in parameters), "past_key_values")
