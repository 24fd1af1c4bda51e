"""The adapter contract: where a model family keeps its parts, and the few behaviours that differ.

Methods reach a model only through its adapter, never through HF attribute paths of their own.
An adapter is data (`ModulePaths`) plus image geometry: prompting, image positions, grids and
vision CLS attention are small per-family overrides in `halluc/modeling/<family>.py`.

Canonical hook points, resolved by `Adapter.resolve`:
    "layers.{i}"             decoder layer i (input: residual stream before its input norm)
    "layers.{i}.attn"        its self-attention module
    "layers.{i}.attn.o_proj" the output projection (input: concatenated head outputs (B, T, H*D))
    "layers.{i}.mlp"         its MLP
    "layers.{i}.input_norm"  the norm before its attention (its output is the attention's input)
    "layers.{i}.post_attn_norm"  the norm before its MLP
    "norm"                   the final norm before the LM head
    "lm_head"                the LM head
    "vision"                 the vision tower
    "vision.layers.{i}"      encoder layer i of the vision tower (its longest module list, as VTI's code finds it)
    "vision.layers.{i}.mlp"  that layer's MLP (`mlp`, or Pixtral's `feed_forward`)
    "projector"              the vision-to-LM projector (output: per image, one feature per image token)
    "model"                  the whole HF model
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from halluc.errors import HallucError, MethodRefused
from halluc.modeling.distinct_images import images_processed_once

# A transformers model as the adapters read it: its submodules and config are reached by attribute, which
# `nn.Module.__getattr__` types as `Tensor | Module`; the adapters' own checks say what each family has.
HFModel = Any


@dataclass(frozen=True)
class ImageSpan:
    """One image's tokens inside one row of a batch.

    `positions` are indices into the row (after left padding) of the tokens that carry this image,
    in the order the model reads them; `grid` is (rows, cols) with rows * cols == len(positions),
    so `positions.view(rows, cols)` lays the tokens out as the image. `kind` says which view of the
    image it is ("image", or for LLaVA-NeXT "base" and "tiles"; the tiles grid includes the
    per-row newline column).
    """

    positions: torch.Tensor  # (n,) long
    grid: tuple[int, int]
    kind: str = "image"


@dataclass(frozen=True)
class ModulePaths:
    """Where one family keeps its parts: dotted attribute paths from the HF model (plain data).

    The first four differ between families and have no default. Inside a decoder layer, every HF
    decoder names its attention `self_attn`, its output projection `o_proj`, its MLP `mlp` and its two
    norms `input_layernorm` / `post_attention_layernorm`; a family that differs overrides them.
    """

    layers: str  # the decoder layer list of the language model
    final_norm: str  # the norm before the LM head
    lm_head: str
    vision_tower: str | None  # None: no separate vision tower (or none halluc needs)
    projector: str | None = None  # the vision-to-LM projector (its output: one feature per image token)
    attn: str = "self_attn"
    o_proj: str = "o_proj"
    mlp: str = "mlp"
    input_norm: str = "input_layernorm"
    post_attn_norm: str = "post_attention_layernorm"


@dataclass(frozen=True)
class Adapter:
    """How halluc reaches one family's model: its module paths (data) and its image geometry (code).

    Subclasses override only geometry and input building (`image_spans`, `vision_cls_attention`,
    `build_inputs`, `prompt`); everything else is read from `paths`.
    """

    family: str
    paths: ModulePaths
    text_config_key: str = "text_config"  # the sub-config whose attention is the LM's
    # what the geometry gives beyond image positions: "grid" (2-D image grids), "vision_cls"; and
    # "pre_norm_block": every decoder layer is x + attn(norm(x)), then + mlp(post_attn_norm(x)) (not Gemma's
    # sandwich norms, not Cohere's parallel block)
    provides: frozenset[str] = frozenset({"grid", "pre_norm_block"})
    # the processor pairs images with prompts only when given one list of images per prompt (Gemma 3, SmolVLM2)
    nested_images: bool = False

    # ---- geometry -------------------------------------------------------------------------
    def text_config(self, model: HFModel) -> Any:
        return getattr(model.config, self.text_config_key)

    def num_layers(self, model: HFModel) -> int:
        return len(self.decoder_layers(model))

    def num_heads(self, model: HFModel) -> int:
        return self.text_config(model).num_attention_heads

    def num_kv_heads(self, model: HFModel) -> int:
        # grouped-query attention shares each key/value head among several query heads
        config = self.text_config(model)
        return getattr(config, "num_key_value_heads", None) or config.num_attention_heads

    def head_dim(self, model: HFModel) -> int:
        return self.attention(model, 0).head_dim

    def image_token_id(self, model: HFModel) -> int:
        config = model.config
        token = getattr(config, "image_token_id", None)
        return token if token is not None else config.image_token_index

    # ---- modules --------------------------------------------------------------------------
    def decoder_layers(self, model: HFModel) -> HFModel:
        return self._get(model, self.paths.layers, "layers")

    def attention(self, model: HFModel, layer: int) -> HFModel:
        return self._get(self.decoder_layers(model)[layer], self.paths.attn, f"layers.{layer}.attn")

    def text_model(self, model: HFModel) -> HFModel:
        """What runs text-only inputs (no pixels): the model itself, unless the family says otherwise."""
        return model

    def resolve(self, model: HFModel, point: str) -> HFModel:
        """Module for a canonical hook point (see the module docstring); HallucError if unknown."""
        named = {"norm": self.paths.final_norm, "lm_head": self.paths.lm_head, "vision": self.paths.vision_tower,
                 "projector": self.paths.projector}
        if point == "model":
            return model
        if point in named:
            path = named[point]
            if path is None:
                raise HallucError(f"hook point '{point}': {self.family} declares no such module")
            return self._get(model, path, point)
        if point.startswith("vision.layers."):
            return self._vision_point(model, point)
        m = re.fullmatch(r"layers\.(-?\d+)(?:\.(attn\.o_proj|attn|mlp|input_norm|post_attn_norm))?", point)
        if not m:
            raise HallucError(f"unknown hook point '{point}' for {self.family}")
        layers = self.decoder_layers(model)
        index = int(m.group(1))
        if not -len(layers) <= index < len(layers):
            raise HallucError(f"hook point '{point}': {self.family} has {len(layers)} layers")
        module, part = layers[index], m.group(2)
        if part is None:
            return module
        if part.startswith("attn"):
            module = self._get(module, self.paths.attn, point)
            return self._get(module, self.paths.o_proj, point) if part == "attn.o_proj" else module
        return self._get(module, getattr(self.paths, part), point)

    def vision_layers(self, model: HFModel) -> HFModel:
        """The vision tower's encoder layers: its longest `nn.ModuleList` (CLIP's `encoder.layers`, Qwen2-VL's
        `blocks`, InternViT's `encoder.layer`); HallucError when the family declares no vision tower."""
        tower = self.resolve(model, "vision")
        lists = [m for m in tower.modules() if isinstance(m, nn.ModuleList)]
        if not lists:
            raise HallucError(f"{self.family}: the vision tower {type(tower).__name__} has no list of layers")
        return max(lists, key=len)  # the first of the longest, in module order

    def _vision_point(self, model: HFModel, point: str) -> HFModel:
        m = re.fullmatch(r"vision\.layers\.(\d+)(\.mlp)?", point)
        if not m:
            raise HallucError(f"unknown hook point '{point}' for {self.family}")
        layers = self.vision_layers(model)
        index = int(m.group(1))
        if index >= len(layers):
            raise HallucError(f"hook point '{point}': {self.family}'s vision tower has {len(layers)} layers")
        if m.group(2) is None:
            return layers[index]
        mlp = next((getattr(layers[index], name) for name in ("mlp", "feed_forward") if hasattr(layers[index], name)),
                   None)
        if mlp is None:
            raise HallucError(f"{self.family}: vision layer {type(layers[index]).__name__} has no 'mlp' or "
                              "'feed_forward'")
        return mlp

    def _get(self, root: HFModel, path: str, point: str) -> Any:
        """The module at dotted `path` under `root`; a missing part names the point and the family."""
        obj = root
        for part in path.split("."):
            try:
                obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
            except (AttributeError, IndexError, TypeError):
                raise HallucError(f"{self.family}: hook point '{point}' is at '{path}', but "
                                  f"{type(obj).__name__} has no '{part}' (fix the family's module paths)") from None
        return obj

    # ---- inputs ---------------------------------------------------------------------------
    def prompt(self, processor: Any, text: str, with_image: bool = True, system: str | None = None) -> str:
        """The family's chat prompt for one user turn, with or without the image placeholder, and with
        `system` as the system turn when given (else the template's default)."""
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
        messages = [{"role": "user", "content": content}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
        return processor.apply_chat_template(messages, add_generation_prompt=True)

    def build_inputs(self, processor: Any, images: Sequence[Any] | None, prompts: Sequence[str],
                     system: str | None = None, answers: Sequence[str] | None = None) -> dict:
        """A left-padded batch; `images=None` gives the text-only branch of the same prompts; `answers`, one per
        prompt, are written after the generation prompt (an answer to read, as VTI's calibration does).
        The caller's processor is not changed (padding side is passed per call)."""
        texts = [self.prompt(processor, p, with_image=images is not None, system=system) for p in prompts]
        if answers is not None:
            texts = [t + a if t.endswith((" ", "\n")) else f"{t} {a}" for t, a in zip(texts, answers)]
        kwargs: dict[str, Any] = {}
        if images is not None:
            kwargs["images"] = [[image] for image in images] if self.nested_images else list(images)
        if _starts_with_bos(processor, texts):  # the template wrote it (Gemma 3, Mistral, Llama 3): no second one
            kwargs["add_special_tokens"] = False
        with images_processed_once(processor):  # POPE's questions share images: each preprocessed once
            try:
                return dict(processor(text=texts, padding=True, padding_side="left", return_tensors="pt", **kwargs))
            except ValueError as err:  # an image the family's processor cannot take (a size its resize zeroes)
                if images is None or isinstance(err, HallucError):
                    raise
                sizes = ", ".join(sorted({f"{i.size[0]}x{i.size[1]}" for i in images if hasattr(i, "size")}))
                reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
                raise HallucError(f"the {self.family} processor cannot take images of size {sizes}: {reason}") from None

    def image_mask(self, model: HFModel, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: which prompt positions carry image tokens."""
        return input_ids == self.image_token_id(model)

    def system_mask(self, model: HFModel, inputs: dict) -> torch.Tensor:
        """(B, T) bool: the prompt's system part, where the chat template puts it: every token before the
        row's first image token (BOS, the system turn if any, the user turn's header), padding excluded;
        all False in a row without an image. With LLaVA-1.5's vicuna system prompt these are positions
        0..34, the span ClearSight's code hard-codes. A family whose template puts the image first
        (InstructBLIP's query tokens) has none. The image's opening markers that a processor writes before
        the first image token (Qwen2-VL's vision start, InternVL's <img>, Gemma 3's <start_of_image>,
        Idefics3's <fake_token_around_image><row_1_col_1>) count as part of this span."""
        image = self.image_mask(model, inputs["input_ids"])
        mask = (image.cumsum(-1) == 0) & image.any(-1, keepdim=True)
        if inputs.get("attention_mask") is not None:
            mask &= inputs["attention_mask"].bool()
        return mask

    def image_spans(self, model: HFModel, inputs: dict) -> list[list[ImageSpan]]:
        """Per row, per image: positions and 2-D grid. Default: one square grid per image."""
        spans = []
        for row in self.image_mask(model, inputs["input_ids"]):
            positions = row.nonzero().flatten()
            side = int(round(len(positions) ** 0.5))
            if side * side != len(positions):
                raise MethodRefused(f"{self.family}: {len(positions)} image tokens are not a square grid")
            spans.append([ImageSpan(positions, (side, side))] if len(positions) else [])
        return spans

    def vision_cls_attention(self, model: HFModel, inputs: dict, merged_heads: bool = False) -> torch.Tensor:
        """(B, n_image_tokens) attention of the vision CLS token to the patches the LM sees: the mean of the
        per-head softmaxes, or with `merged_heads` one softmax of q·kᵀ over the full width (DAMRO's code)."""
        raise MethodRefused(f"{self.family} has no vision CLS token attention")



def _starts_with_bos(processor: Any, texts: Sequence[str]) -> bool:
    """Whether every rendered prompt already starts with the tokenizer's BOS token."""
    bos = getattr(getattr(processor, "tokenizer", processor), "bos_token", None)
    if not bos:
        return False
    return all(text.startswith(bos) for text in texts)


def spans_by_image_size(adapter: Adapter, model: HFModel, inputs: dict, image_spans) -> list[list[ImageSpan]]:
    """Per row, the spans of its images in reading order, for processors that describe each image by
    `inputs["image_sizes"]` (numbered across the batch). `image_spans(row, positions, size)` gives the
    spans of one image whose tokens start at `positions[0]` (row: the batch row; positions: the row's
    image positions from there on); each image consumes the positions its spans hold, plus any row breaks
    between them that are not image tokens."""
    sizes = iter(inputs["image_sizes"].tolist())
    spans = []
    for index, row in enumerate(adapter.image_mask(model, inputs["input_ids"])):
        positions, row_spans, start = row.nonzero().flatten(), [], 0
        while start < len(positions):
            size = next(sizes, None)
            if size is None:
                raise HallucError(f"{adapter.family}: more image tokens than image_sizes describes")
            image = image_spans(index, positions[start:], size)
            row_spans += image
            start += sum(len(span.positions) for span in image)
        if start != len(positions):
            raise HallucError(f"{adapter.family}: {len(positions)} image tokens do not match image_sizes")
        spans.append(row_spans)
    return spans


def grid_spans(positions: torch.Tensor, grids) -> list[ImageSpan]:
    """Consecutive spans from the front of `positions`, one per (kind, (rows, cols)) in `grids`."""
    spans, start = [], 0
    for kind, grid in grids:
        spans.append(ImageSpan(positions[start:start + grid[0] * grid[1]], grid, kind))
        start += grid[0] * grid[1]
    return spans


def contiguous_runs(positions: torch.Tensor) -> list[torch.Tensor]:
    """Split sorted positions (n,) into runs of consecutive indices (an image between text tokens)."""
    if not len(positions):
        return []
    breaks = (positions[1:] - positions[:-1] != 1).nonzero().flatten() + 1  # first index of each later run
    return list(positions.tensor_split(breaks.tolist()))


def square_side(tokens: int, family: str) -> int:
    """The side of a square grid of `tokens` tokens (HallucError when it is not a square)."""
    side = int(round(tokens ** 0.5))
    if side * side != tokens:
        raise MethodRefused(f"{family}: {tokens} image tokens per image do not form a square grid")
    return side
