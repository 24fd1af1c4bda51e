"""The KV cache is found under either transformers keyword (renamed past_key_values -> cache in 5.2x)."""
from transformers import DynamicCache

from halluc.modeling.cache import cache_keyword, cache_of


def test_cache_is_found_under_either_name():
    cache = DynamicCache()
    assert cache_of({"cache": cache}) is cache
    assert cache_of({"past_key_values": cache}) is cache
    assert cache_of({"cache": None, "past_key_values": cache}) is cache
    assert cache_of({"input_ids": 1}) is None


def test_cache_keyword_matches_the_model_signature(tiny_llava):
    import inspect

    assert cache_keyword(tiny_llava.model) in inspect.signature(tiny_llava.model.forward).parameters
