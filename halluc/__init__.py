"""halluc: training-free hallucination mitigation for vision-language models, with honest benchmarks.

    import halluc
    m = halluc.load("llava")                  # or halluc.wrap(model, processor) for a model you loaded
    halluc.generate(m, images, prompts, method="vcd")
    with halluc.apply(m, "vhr"):
        ...
    model.generate(**inputs, custom_generate=halluc.hf.custom_generate("vhr"))   # transformers' own generate

The API is imported on first use, so `halluc score` and other light commands start without torch.
"""
from halluc.errors import HallucError, MethodRefused
from halluc.version import __version__

__all__ = ["__version__", "Decoding", "Generation", "HallucError", "LVLM", "MethodRefused", "RunOptions", "apply",
           "available_methods", "calibrate", "fetch", "generate", "load", "methods", "models", "report", "run", "score",
           "support_matrix", "wrap"]
_API = set(__all__) - {"HallucError", "MethodRefused", "__version__"}


def __getattr__(name: str):
    if name in _API:
        from halluc import api

        return getattr(api, name)
    if name == "hf":  # halluc.hf.custom_generate: a method inside transformers' own model.generate
        import halluc.hf

        return halluc.hf
    raise AttributeError(f"module 'halluc' has no attribute '{name}'")
