"""`halluc.hf`: halluc's methods inside transformers' own `model.generate` (see `halluc.generation.hf`).

    import halluc
    out = model.generate(**inputs, custom_generate=halluc.hf.custom_generate("vhr"))
"""
from halluc.generation.hf import HallucGenerate, custom_generate

__all__ = ["HallucGenerate", "custom_generate"]
