"""toy-llava: a small LLaVA-1.5-architecture model trained on the toy world, shipped in `halluc/world/toy_llava/`.

Stock transformers classes only, so every halluc method and adapter treats it like the real thing:

    LlavaForConditionalGeneration
      vision   CLIPVisionModel, 64 px images, 8 px patches -> 64 patch tokens (+ CLS, dropped)
      project  LLaVA's 2-layer GELU MLP
      LM       LlamaForCausalLM (GQA), attention on halluc's backend
    LlavaProcessor = CLIPImageProcessorPil + a word-level PreTrainedTokenizerFast + LLaVA-1.5's chat template
      "USER: <image>\\n{text} ASSISTANT:"

The tokenizer is one id per word of the world's language (captions, questions, prompts) plus
<pad> <s> </s> <unk> <image>, so the LM is tiny and every id it emits decodes to a word.

    model, processor = load_toy_llava()            # the shipped weights, offline, float32, eval mode
    model, processor = build_toy_llava(ToyModelConfig(), seed=0)   # random init, what `train` starts from
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from halluc.errors import HallucError
from halluc.world.captions import _NUMBERS, _PLACES, _SURFACE_TEMPLATES, _TEMPLATES
from halluc.world.scenes import WorldConfig
from halluc.world.vocab import CATEGORIES

SHIPPED = Path(__file__).with_name("toy_llava")
# The world toy-llava is trained on (and evaluated on, with min_objects >= 3: `halluc.world.benchmark`).
# 64 px images, objects 16-29 px before the category's scale; a third of the objects are pushed onto an
# earlier one, so some end up 60-85% hidden (annotated, never captioned or asked about in training).
TRAIN_WORLD = WorldConfig(image_size=64, min_objects=2, max_objects=5, object_size=(0.25, 0.45),
                          occlusion_rate=0.35, prior_strength=1.0, out_of_prior_rate=0.05)

CAPTION_PROMPTS = ("Please describe this image in detail.", "Describe this image.",
                   "What is in this image?", "Write a short caption for this image.")
QUESTION_SUFFIXES = ("", "\nAnswer the question using a single word or phrase.",
                     " Please answer this question with one word.")   # none, LLaVA's POPE, VCD's POPE
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]


@dataclass(frozen=True)
class ToyModelConfig:
    """The world toy-llava sees and the size of each part.

    Args:
        world: scene generator settings (image size, object sizes, occlusion, priors).
        patch_size: ViT patch side, px; (image_size / patch_size)^2 image tokens per image.
        vision_hidden, vision_layers, vision_heads, vision_mlp: the CLIP ViT.
        text_hidden, text_layers, text_heads, text_kv_heads, text_mlp: the Llama decoder.
        max_positions: LM context (64 image tokens + prompt + answer fit in 256).
    """
    world: WorldConfig = TRAIN_WORLD
    patch_size: int = 8
    vision_hidden: int = 96
    vision_layers: int = 3
    vision_heads: int = 4
    vision_mlp: int = 384
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    text_kv_heads: int = 2
    text_mlp: int = 384
    max_positions: int = 256

    def __post_init__(self):
        if self.world.image_size % self.patch_size:
            raise ValueError(f"image_size {self.world.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.text_hidden % self.text_heads or self.text_heads % self.text_kv_heads:
            raise ValueError("text_hidden must divide into text_heads, and text_heads into text_kv_heads")
        if self.vision_hidden % self.vision_heads:
            raise ValueError("vision_hidden must divide into vision_heads")

    @property
    def image_tokens(self) -> int:
        return (self.world.image_size // self.patch_size) ** 2

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- tokenizer

def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.BertPreTokenizer()   # split on whitespace and punctuation


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """Every word the world writes or asks: caption templates, places, numbers, object names and plurals,
    the questions, prompts and chat roles; each also capitalised (captions start with any of them)."""
    blanks = dict(a_place="", place="", things="", be="is", a_surface="")
    texts = [*(t.format(**blanks) for t in (*_TEMPLATES, *_SURFACE_TEMPLATES)), *CAPTION_PROMPTS,
             *QUESTION_SUFFIXES, "Is there a an in the image? USER: ASSISTANT: Yes No are, and",
             *(p for places in _PLACES.values() for p in places), *_NUMBERS.values(),
             *(name for c in CATEGORIES for name in (c.name, c.plural))]
    split = _pre_tokenizer().pre_tokenize_str
    words = {w for text in texts for w, _ in split(text)}
    return tuple(sorted(words | {w[0].upper() + w[1:] for w in words}))


def word_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer: ids 0-4 are SPECIALS, then one id per word of `vocabulary()`.

    Texts start with <s> (Llama style); decoding joins words with spaces and re-attaches punctuation.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(vocabulary()))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = _pre_tokenizer()
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tk.add_special_tokens(SPECIALS)
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B:1",
                                                      special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", extra_special_tokens={"image_token": "<image>"},
                                   padding_side="left")


# ---------------------------------------------------------------- model and processor

def toy_processor(config: ToyModelConfig) -> Any:
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    from halluc.modeling.tiny import LLAVA_TEMPLATE

    side = config.world.image_size
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    # num_additional_image_tokens=1 counts the CLS that the "default" strategy drops
    return LlavaProcessor(image_processor=image_processor, tokenizer=word_tokenizer(), patch_size=config.patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=LLAVA_TEMPLATE)


def toy_llava_config(config: ToyModelConfig, tokenizer: PreTrainedTokenizerFast) -> Any:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=config.vision_hidden, intermediate_size=config.vision_mlp,
                              num_hidden_layers=config.vision_layers, num_attention_heads=config.vision_heads,
                              image_size=config.world.image_size, patch_size=config.patch_size,
                              projection_dim=config.vision_hidden)
    text = LlamaConfig(hidden_size=config.text_hidden, intermediate_size=config.text_mlp,
                       num_hidden_layers=config.text_layers, num_attention_heads=config.text_heads,
                       num_key_value_heads=config.text_kv_heads, max_position_embeddings=config.max_positions,
                       vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    # the last ViT layer's output feeds the LM (LLaVA-1.5 takes -2 of a 24-layer CLIP; here a
    # 3-layer tower is trained from scratch and a layer nothing reads would be dead weight)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=tokenizer.image_token_id,
                       image_seq_length=config.image_tokens, vision_feature_layer=-1,
                       vision_feature_select_strategy="default",
                       # transformers' config dataclasses take extra keyword arguments at run time (kept as
                       # attributes) but do not type them
                       pad_token_id=tokenizer.pad_token_id)  # type: ignore[call-arg]


def attn_implementation() -> dict[str, str]:
    """The LM on halluc's backend (equal to SDPA until a method edits it), the ViT on SDPA."""
    from halluc.kernels.backend import register_backend

    register_backend()
    return {"text_config": "halluc", "vision_config": "sdpa"}


def build_toy_llava(config: ToyModelConfig = ToyModelConfig(), seed: int = 0) -> tuple[Any, Any]:
    """A randomly initialised toy-llava (train mode) and its processor; the same seed gives the same
    weights, and the global torch RNG is left as it was."""
    from transformers import LlavaForConditionalGeneration

    processor = toy_processor(config)
    hf_config = toy_llava_config(config, processor.tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration._from_config(hf_config, attn_implementation=attn_implementation(),
                                                           dtype=torch.float32)
    return model.train(), processor


def check_shipped(path: str | Path = SHIPPED) -> None:
    """A HallucError saying how to get weights when `path` holds none."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise HallucError(f"no toy-llava weights in {path}; train them with `halluc world train --out {path}`")


def load_toy_llava(path: str | Path = SHIPPED) -> tuple[Any, Any]:
    """The shipped toy-llava (or a `train` output directory), float32, eval mode, fully offline."""
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    path = Path(path)
    check_shipped(path)
    processor = LlavaProcessor.from_pretrained(path, local_files_only=True)
    model = LlavaForConditionalGeneration.from_pretrained(path, local_files_only=True, dtype=torch.float32,
                                                          attn_implementation=attn_implementation())
    return model.eval(), processor


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["CAPTION_PROMPTS", "QUESTION_SUFFIXES", "SHIPPED", "check_shipped", "TRAIN_WORLD", "ToyModelConfig",
           "build_toy_llava", "load_toy_llava", "parameter_count", "toy_processor", "vocabulary", "word_tokenizer"]
