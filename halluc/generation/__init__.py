"""Generation: one `generate` call with any stack of methods (orchestration over the engine)."""
from halluc.generation.generate import Generation, generate, pair_inputs

__all__ = ["Generation", "generate", "pair_inputs"]
