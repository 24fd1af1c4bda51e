"""halluc: training-free hallucination mitigation for vision-language models, with honest benchmarks.

    import halluc
    m = halluc.load("llava")
    halluc.generate(m, images, prompts, method="vcd")
    with halluc.apply(m, "vhr"):
        ...
"""
from halluc.api import Decoding, Generation, LVLM, RunOptions, apply, generate, load, methods, models, run
from halluc.errors import HallucError

__version__ = "0.1.0"
__all__ = ["Decoding", "Generation", "HallucError", "LVLM", "RunOptions", "apply", "generate", "load", "methods",
           "models", "run"]
