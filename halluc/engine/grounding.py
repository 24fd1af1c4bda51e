"""HALC's official second models, loaded only from disk (never downloaded at run time):

    dino   Grounding DINO Swin-T OGC (`IDEA-Research/grounding-dino-tiny` in transformers): boxes for one word
    blip   BLIP (`Salesforce/blip-image-captioning-large`, `BlipModel.logits_per_image`): text-image match

and the offline stand-ins built from the LVLM itself: a box from the word's attention over the image grid
(`halluc.engine.matchers`), and a text's likelihood as the LVLM's answer (or its attention mass on the image).
"""
from __future__ import annotations

import torch

from halluc.engine import focal
from halluc.engine.matchers import load_blip_scorer, load_grounding_dino, lvlm_attention_matches
from halluc.engine.shared_images import distinct_images_once

GROUNDING_DINO = "IDEA-Research/grounding-dino-tiny"
BLIP_SCORER = "Salesforce/blip-image-captioning-large"
TEXT_THRESHOLD = 0.25  # GroundingDINO's default text threshold
AREA_FLOOR = 0.01  # the code's detector drops boxes smaller than this share of the image
SAME_INSTANCE_IOU = 0.6  # ... and keeps one of two boxes that overlap more than this


def iou(a, b) -> float:
    inter = focal.area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    inter = inter if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3] else 0.0
    return inter / (focal.area(a) + focal.area(b) - inter)


@torch.no_grad()
def dino_boxes(image, word: str, name: str, device: str, threshold: float) -> list[tuple[float, ...]]:
    """Normalised boxes Grounding DINO finds for `word` (the code's area floor and same-instance merge)."""
    model, processor = load_grounding_dino(name, device)
    inputs = processor(images=image.convert("RGB"), text=f"{word.lower()}.", return_tensors="pt").to(device)
    found = processor.post_process_grounded_object_detection(model(**inputs), inputs["input_ids"], threshold=threshold,
                                                             text_threshold=TEXT_THRESHOLD)[0]["boxes"]
    boxes: list[tuple[float, ...]] = []
    for box in (tuple(float(v) for v in b) for b in found.cpu()):
        if focal.area(box) >= AREA_FLOOR and not any(iou(box, kept) > SAME_INSTANCE_IOU for kept in boxes):
            boxes.append(box)
    return boxes


@torch.no_grad()
def blip_scores(image, texts: list[str], name: str, device: str) -> torch.Tensor:
    """(n,) softmax over the texts of BLIP's image-text logits."""
    model, processor = load_blip_scorer(name, device)
    inputs = processor(text=texts, images=image.convert("RGB"), return_tensors="pt", padding=True,
                       truncation=True).to(device)
    return model(**inputs).logits_per_image[0].softmax(-1)


def attention_boxes(lvlm, image, word: str, layer: int) -> list[tuple[float, ...]]:
    """The offline detector: the box of the word's attention over the image grid ([] when nothing stands out)."""
    match = lvlm_attention_matches(lvlm, [image], [word], layer)[0]
    box = focal.attention_box(match.scores, match.box, image.size)
    return [] if box is None else [box]


def attention_scores(lvlm, image, texts: list[str], layer: int) -> torch.Tensor:
    """The offline matcher: (n,) each text's attention mass on the image tokens at `layer` (read as the prompt)."""
    return torch.tensor([float(m.scores.sum()) for m in lvlm_attention_matches(lvlm, [image] * len(texts), texts,
                                                                                 layer)])


@torch.no_grad()
def likelihood_scores(lvlm, image, prompt: str, texts: list[str]) -> torch.Tensor:
    """The offline matcher the spec names: (n,) each text's mean per-token log-probability as the LVLM's answer to
    `prompt` about `image` (teacher forcing; one batch, the image through the vision tower once)."""
    adapter, model = lvlm.adapter, lvlm.model
    alone = adapter.build_inputs(lvlm.processor, [image], [prompt])["attention_mask"]  # (1, P)
    inputs = lvlm.inputs_for_model(adapter.build_inputs(lvlm.processor, [image] * len(texts), [prompt] * len(texts),
                                                        answers=texts))
    lengths = (inputs["attention_mask"].sum(1).cpu() - int(alone.sum())).clamp(1, inputs["input_ids"].shape[1] - 1)
    longest = int(lengths.max())  # left padding: every answer ends at the last position
    tower = adapter.resolve(model, "vision") if adapter.paths.vision_tower else None
    with distinct_images_once(tower):
        logits = model(**inputs, use_cache=False).logits[:, -longest - 1:-1]  # (n, longest, V) predicting the answers
    tokens = inputs["input_ids"][:, -longest:].to(logits.device)  # (n, longest)
    picked = logits.float().log_softmax(-1).gather(-1, tokens[..., None])[..., 0].cpu()  # (n, longest)
    answer = torch.arange(longest) >= longest - lengths[:, None]  # (n, longest) the answer's own tokens
    return (picked * answer).sum(1) / lengths


def view_batches(lvlm, crops, prompt: str, prefix: list[int]) -> list[dict]:
    """The model inputs of `prompt` with each crop as its image, then the `prefix` tokens: one batch when every view
    has the same shapes (fixed-resolution families: no padding), else one per view."""
    rows = []
    for image in crops:
        inputs = lvlm.adapter.build_inputs(lvlm.processor, [image], [prompt])
        tail = torch.tensor([prefix], dtype=inputs["input_ids"].dtype)
        for key in ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids"):
            if key in inputs and inputs[key] is not None:
                fill = tail if key == "input_ids" else torch.ones_like(tail) if key == "attention_mask" \
                    else torch.zeros_like(tail)
                inputs[key] = torch.cat([inputs[key], fill.to(inputs[key].dtype)], -1)
        rows.append(lvlm.inputs_for_model(inputs))
    shapes = {tuple((k, tuple(v.shape)) for k, v in r.items() if torch.is_tensor(v)) for r in rows}
    if len(shapes) == 1:
        return [{k: torch.cat([r[k] for r in rows]) if torch.is_tensor(v) else v for k, v in rows[0].items()}]
    return rows
