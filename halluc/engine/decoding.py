"""Decoding settings: greedy, sampling or beam search, validated once."""
from __future__ import annotations

from dataclasses import dataclass

from transformers import GenerationConfig

from halluc.errors import HallucError
from halluc.limits import (
    MAX_BEAMS,
    MAX_NEW_TOKENS,
    MAX_TEMPERATURE,
    MAX_TOP_K,
    MIN_TEMPERATURE,
    check_number,
    check_seed,
)


@dataclass(frozen=True)
class Decoding:
    """How tokens are chosen. Greedy by default; `do_sample` for sampling; `num_beams > 1` for beams."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k cut
    num_beams: int = 1
    seed: int | None = None  # sampling seed; the global RNG is left untouched

    def __post_init__(self):
        for name in ("max_new_tokens", "top_k", "num_beams"):
            check_number(name, getattr(self, name), integer=True)
        for name in ("temperature", "top_p"):
            check_number(name, getattr(self, name))
        if not isinstance(self.do_sample, bool):
            raise HallucError(f"do_sample must be true or false, got {self.do_sample!r}")
        if self.seed is not None:
            check_seed("seed", self.seed)
        checks = [
            (self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"),
            (self.max_new_tokens <= MAX_NEW_TOKENS, f"max_new_tokens must be <= {MAX_NEW_TOKENS} (and within the "
                                                    f"model's context), got {self.max_new_tokens}"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
            (MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE,  # logits / 1e-300 overflow to inf, then NaN
             f"temperature must be in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}], got {self.temperature}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (0 <= self.top_k <= MAX_TOP_K, f"top_k must be in [0, {MAX_TOP_K}], got {self.top_k}"),
            (self.num_beams >= 1, f"num_beams must be >= 1, got {self.num_beams}"),
            (self.num_beams <= MAX_BEAMS, f"num_beams must be <= {MAX_BEAMS}, got {self.num_beams}"),
        ]
        for ok, message in checks:
            if not ok:
                raise HallucError(message)

    @property
    def mode(self) -> str:
        return "beam" if self.num_beams > 1 else "sample" if self.do_sample else "greedy"

    def generation_config(self, base: GenerationConfig | None, tokenizer) -> GenerationConfig:
        """A GenerationConfig with exactly these settings (the model's own sampling defaults are ignored)."""
        cfg = GenerationConfig(
            max_new_tokens=self.max_new_tokens, do_sample=self.do_sample, num_beams=self.num_beams,
            temperature=self.temperature if self.do_sample else None,
            top_p=self.top_p if self.do_sample else None,
            top_k=self.top_k if self.do_sample else None,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=(base.eos_token_id if base is not None and base.eos_token_id is not None
                          else tokenizer.eos_token_id),
            bos_token_id=tokenizer.bos_token_id,
        )
        return cfg
