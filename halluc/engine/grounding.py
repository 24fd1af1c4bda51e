"""HALC's official second models, loaded only from disk (never downloaded at run time):

    dino   Grounding DINO Swin-T OGC (`IDEA-Research/grounding-dino-tiny` in transformers): boxes for one word
    blip   BLIP (`Salesforce/blip-image-captioning-large`, `BlipModel.logits_per_image`): text-image match

and the offline stand-ins built from the LVLM's own attention (`halluc.engine.matchers`): a box from the
word's attention over the image grid, and a text's attention mass on the image.
"""
from __future__ import annotations

import functools

import torch

from halluc.engine import focal
from halluc.engine.matchers import MatcherUnavailable, lvlm_attention_matches

GROUNDING_DINO = "IDEA-Research/grounding-dino-tiny"
BLIP_SCORER = "Salesforce/blip-image-captioning-large"
TEXT_THRESHOLD = 0.25  # GroundingDINO's default text threshold
AREA_FLOOR = 0.01  # the code's detector drops boxes smaller than this share of the image
SAME_INSTANCE_IOU = 0.6  # ... and keeps one of two boxes that overlap more than this


def _load_local(model_class, processor_class, name: str, device: str, role: str):
    """A checkpoint from local files only (HF cache or a directory); MatcherUnavailable, in one line, otherwise."""
    try:
        processor = processor_class.from_pretrained(name, local_files_only=True)
        model = model_class.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as err:
        raise MatcherUnavailable(f"HALC's {role} '{name}' is not available offline ({type(err).__name__}); put it "
                                 f"in the HF cache or pass {role}_model=<local dir>, or use {role}='lvlm-attention'"
                                 ) from None
    return model.to(device).eval(), processor


@functools.lru_cache(maxsize=2)
def load_grounding_dino(name: str, device: str):
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    return _load_local(AutoModelForZeroShotObjectDetection, AutoProcessor, name, device, "detector")


@functools.lru_cache(maxsize=2)
def load_blip_scorer(name: str, device: str):
    from transformers import BlipModel, BlipProcessor

    return _load_local(BlipModel, BlipProcessor, name, device, "matcher")


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
