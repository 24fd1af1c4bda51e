"""Image-prompt matchers for AGLA: which parts of an image a prompt is about, as a 2-D score map.

    blip            BLIP ITM (LAVIS `blip_image_text_matching/large`; in HF `Salesforce/blip-itm-large-coco`)
                    GradCAM of the ITM "match" logit on the cross-attention of text layer L/2 (6 of 12),
                    averaged over heads and over the text tokens without [CLS]/[SEP]; plus the ITC cosine.
                    Needs the checkpoint on disk (it is never downloaded at run time).
    lvlm-attention  The LVLM's own attention, at one decoder layer, from the prompt's text tokens after
                    the image to the image tokens (mean over heads and text tokens), laid out on the
                    image's token grid (`adapter.image_spans`). No second model.

Both return `Match(scores (h, w), box, itc)`: `box` is the part of the image the map covers (w, h pixels).
The second models (AGLA's BLIP ITM; HALC's Grounding DINO and BLIP scorer, used in `halluc.engine.grounding`)
load here, from local files only, each cached until `clear_matcher_cache()`.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch
from PIL import Image

from halluc.engine.image_views import visible_box
from halluc.engine.shared_images import distinct_images_once
from halluc.errors import HallucError

BLIP_ITM = "Salesforce/blip-itm-large-coco"


@dataclass(frozen=True)
class Match:
    scores: torch.Tensor  # (h, w) relevance of each cell of the grid
    box: tuple[int, int, int, int]  # the pixels of the image the grid covers
    itc: float | None = None  # image-text cosine similarity (BLIP only)


class MatcherUnavailable(HallucError):
    """The matcher's weights are not on this machine."""


# ---- BLIP ITM + GradCAM ------------------------------------------------------------------------
def load_local(model_class, processor_class, name: str, device: str, who: str, fallback: str, **options):
    """(model, processor) of a checkpoint from a local path or the local HF cache only (never downloaded);
    MatcherUnavailable in one line naming `who` needs it and the `fallback` choice otherwise."""
    try:
        processor = processor_class.from_pretrained(name, local_files_only=True)
        model = model_class.from_pretrained(name, local_files_only=True, **options)
    except (OSError, ValueError) as err:
        raise MatcherUnavailable(f"{who} '{name}' is not available offline ({type(err).__name__}); put the "
                                 f"checkpoint in the HF cache or pass {fallback}") from None
    return model.to(device).eval(), processor


@functools.lru_cache(maxsize=2)
def load_blip(name: str, device: str):
    """AGLA's BLIP ITM checkpoint (fp32)."""
    from transformers import BlipForImageTextRetrieval, BlipProcessor

    return load_local(BlipForImageTextRetrieval, BlipProcessor, name, device, "AGLA's BLIP matcher",
                      "matcher_model=<local dir>, or use matcher='lvlm-attention'", dtype=torch.float32)


@functools.lru_cache(maxsize=2)
def load_grounding_dino(name: str, device: str):
    """HALC's detector, Grounding DINO."""
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    return load_local(AutoModelForZeroShotObjectDetection, AutoProcessor, name, device, "HALC's detector",
                      "detector_model=<local dir>, or use detector='lvlm-attention'")


@functools.lru_cache(maxsize=2)
def load_blip_scorer(name: str, device: str):
    """HALC's matcher, BLIP's image-text similarity."""
    from transformers import BlipModel, BlipProcessor

    return load_local(BlipModel, BlipProcessor, name, device, "HALC's matcher",
                      "matcher_model=<local dir>, or use matcher='lvlm-likelihood'")


def clear_matcher_cache() -> None:
    """Forget the loaded second models (AGLA's BLIP, HALC's Grounding DINO and BLIP); the next use loads again."""
    for loader in (load_blip, load_grounding_dino, load_blip_scorer):
        loader.cache_clear()


def blip_match(image: Image.Image, text: str, name: str = BLIP_ITM, device: str = "cpu") -> Match:
    """GradCAM of BLIP's ITM match logit over its patch grid, and the ITC similarity (LAVIS `compute_gradcam`)."""
    model, processor = load_blip(name, device)
    text = re.sub(r"\s+", " ", re.sub(r"([.!\"()*#:;~])", " ", text.lower())).strip()  # LAVIS blip_caption
    inputs = processor(images=image.convert("RGB"), text=text, return_tensors="pt").to(device)
    layers = model.text_encoder.encoder.layer
    cross = layers[len(layers) // 2].crossattention.self
    seen = []
    handle = cross.register_forward_hook(lambda _m, _a, out: seen.append(out[1]))
    try:
        with torch.inference_mode(False), torch.enable_grad():
            match = model(**inputs, use_itm_head=True).itm_score[:, 1].sum()
            probs = seen[0]  # (1, heads, L, 1 + P) text -> [CLS] + patches
            grads = torch.autograd.grad(match, probs)[0]
    finally:
        handle.remove()
    with torch.no_grad():
        cam = (probs[..., 1:] * grads[..., 1:].clamp_min(0)).mean(1)[0]  # (L, P): heads averaged
        tokens = int(inputs["attention_mask"].sum()) - 2  # without [CLS] and [SEP]
        cam = cam[1:tokens + 1].mean(0)
        side = model.config.vision_config.image_size // model.config.vision_config.patch_size
        itc = model(**inputs, use_itm_head=False).itm_score.item()
    return Match(cam.view(side, side).float().cpu(), (0, 0, *image.size), itc)


# ---- the LVLM's own text-to-image attention ---------------------------------------------------
class _Captured(Exception):
    """Stops the matcher's forward once the chosen layer has been read."""


def lvlm_attention_match(lvlm, image: Image.Image, prompt: str, layer: int) -> Match:
    """Attention of decoder layer `layer` from the text after the image to the image tokens, on the image grid."""
    return lvlm_attention_matches(lvlm, [image], [prompt], layer)[0]


def lvlm_attention_matches(lvlm, images: list, prompts: list[str], layer: int) -> list[Match]:
    """`lvlm_attention_match` of every (image, prompt) pair. Pairs whose inputs have the same shapes run as one
    batch without padding (so each row is what it is alone), each distinct image through the vision tower
    once (POPE asks six questions about each image), and the forward stops at `layer`."""
    adapter, model = lvlm.adapter, lvlm.model
    rows = [_match_inputs(lvlm, image, prompt) for image, prompt in zip(images, prompts)]
    groups: dict[tuple, list[int]] = {}
    for i, (inputs, span) in enumerate(rows):
        key = (int(span.positions.max()), *((k, tuple(v.shape)) for k, v in inputs.items() if torch.is_tensor(v)))
        groups.setdefault(key, []).append(i)
    scores: dict[int, torch.Tensor] = {}
    tower = adapter.resolve(model, "vision") if adapter.paths.vision_tower else None
    for members in groups.values():
        first = rows[members[0]][0]
        batch = {k: torch.cat([rows[i][0][k] for i in members]) if torch.is_tensor(v) else v for k, v in first.items()}
        with distinct_images_once(tower):
            attention = _layer_attention(adapter, model, batch, layer, int(rows[members[0]][1].positions.max()) + 1)
        scores.update(zip(members, attention))
    matches = []
    for i, (image, (_, span)) in enumerate(zip(images, rows)):
        grid = scores[i][span.positions.to(scores[i].device)].view(*span.grid).cpu()  # the layer's own device
        if span.kind == "tiles":  # the last column holds LLaVA-NeXT's row-newline tokens; the grid covers the image
            matches.append(Match(grid[:, :-1], (0, 0, *image.size)))
        else:
            matches.append(Match(grid, visible_box(lvlm.processor.image_processor, image.size)))
    return matches


def _match_inputs(lvlm, image: Image.Image, prompt: str):
    """One pair's unpadded inputs on the model's device, and the span of its image grid."""
    adapter, model = lvlm.adapter, lvlm.model
    inputs = adapter.build_inputs(lvlm.processor, [image], [prompt])
    inputs = lvlm.inputs_for_model(inputs)
    spans = adapter.image_spans(model, inputs)[0]
    span = next((s for s in spans if s.kind == "tiles"), None) or next((s for s in spans if s.kind == "image"), None)
    if span is None:
        kinds = ", ".join(sorted({s.kind for s in spans})) or "none"
        raise HallucError(f"matcher 'lvlm-attention' needs image tokens laid out on a 2-D grid; {lvlm.family} has "
                          f"{kinds} (use matcher='blip')")
    return inputs, span


def _layer_attention(adapter, model, inputs: dict, layer: int, first_text: int) -> torch.Tensor:
    """(B, T) text-to-key attention of decoder layer `layer` for a batch of unpadded rows; the forward stops there."""
    seen = []

    def capture(module, args, kwargs):
        seen.append(_text_to_key_attention(module, kwargs.get("hidden_states", args[0] if args else None),
                                           kwargs["position_embeddings"], first_text))
        raise _Captured

    handle = adapter.attention(model, layer).register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs, use_cache=False)
    except _Captured:
        pass
    finally:
        handle.remove()
    return seen[0]


def _text_to_key_attention(attn, hidden: torch.Tensor, position_embeddings, first_text: int) -> torch.Tensor:
    """(B, T) attention of the queries at positions >= first_text to every key, mean over heads and queries,
    recomputed in fp32 from the module's q/k projections and rotary embedding (unpadded rows)."""
    if not (hasattr(attn, "q_proj") and hasattr(attn, "k_proj")) or position_embeddings is None:
        raise HallucError(f"matcher 'lvlm-attention' needs a rotary q_proj/k_proj attention; got {type(attn).__name__}")
    b, t, d = hidden.shape[0], hidden.shape[1], attn.head_dim
    q = attn.q_proj(hidden).float().view(b, t, -1, d).transpose(1, 2)  # (B, H, T, D)
    k = attn.k_proj(hidden).float().view(b, t, -1, d).transpose(1, 2)  # (B, Hkv, T, D)
    cos, sin = (x.float()[:, None] for x in position_embeddings)  # (B or 1, 1, T, D)
    q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = q[:, :, first_text:] @ k.transpose(-1, -2) * attn.scaling  # (B, H, Tq, T)
    keys, queries = torch.arange(t, device=hidden.device), torch.arange(first_text, t, device=hidden.device)
    causal = keys[None, :] <= queries[:, None]
    return scores.masked_fill(~causal, float("-inf")).softmax(-1).mean((1, 2))  # (B, T)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
