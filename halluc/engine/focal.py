"""HALC's pieces that do not touch a model (Chen et al., ICML 2024; official `halc.py`): which finished words are
checked, the fields of view around a detected box, the contrast of the most divergent view pairs, the
matching-based choice of distinct beams, and a box from an attention map (the offline detector).

Boxes are (x0, y0, x1, y1) normalised to [0, 1] of the image.
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

# the official lists (halc.py: words never checked; words always checked, whatever their part of speech)
EXEMPT = ("image", "side", "background", "feature", "features", "center", "left", "right", "scene", "view", "s",
          "Birthday", "detail", "red", "white", "cat", "horse", "bus", "group", "manner", "her", "birds", "teddy",
          "stack", "cell", "toaster", "mirror", "toilet", "captures", "boat", "bench")
ADDED = ("sink", "microwave", "toaster", "puppy", "bottle", "table", "oven", "orange", "toothbrush", "cars")
# the offline stand-in for spaCy's NOUN/PROPN test: the COCO object words (the heads of two-word names)
NOUNS = ("person", "man", "woman", "people", "child", "boy", "girl", "bicycle", "car", "motorcycle", "airplane",
         "bus", "train", "truck", "boat", "light", "hydrant", "sign", "meter", "bench", "bird", "cat", "dog",
         "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag",
         "tie", "suitcase", "frisbee", "skis", "snowboard", "ball", "kite", "bat", "glove", "skateboard",
         "surfboard", "racket", "bottle", "glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
         "sandwich", "orange", "broccoli", "carrot", "dog", "pizza", "donut", "cake", "chair", "couch", "plant",
         "bed", "table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "phone", "microwave", "oven",
         "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "bear", "drier", "toothbrush")
UNDETECTED = (0.2, 0.2, 0.8, 0.8)  # the official box when the detector finds nothing
MOST_BOXES = 3  # more detections than this: the word is left alone ("invalid")


def entity(word: str) -> str:
    """The official clean-up of a finished word: outer punctuation stripped, then one trailing "s"."""
    word = word.strip().strip(".").strip(",").strip("'").strip("]").strip("[").strip(")")
    return word[:-1] if word.endswith("s") else word


def checked(word: str, nouns: frozenset[str], skip_rate: float, rng: random.Random) -> bool:
    """Whether HALC re-decodes this cleaned word: an added word always; else a noun that is not exempt, has no
    "."/"," and survives the random skip. The draw is made for every word, as the official code draws
    (`random.random() < skip_rate` before the added-word override), from a seeded generator."""
    skip = rng.random() < skip_rate
    if word in ADDED:
        return True
    return bool(word) and word.lower() in nouns and word not in EXEMPT and "." not in word and "," not in word \
        and not skip


def grow(box, ratio: float) -> tuple[float, ...]:
    """Each side moved out by ratio·w/2 (ratio·h/2), clipped to the image; a negative ratio shrinks."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return (max(0.0, x0 - w * ratio / 2), max(0.0, y0 - h * ratio / 2),
            min(1.0, x1 + w * ratio / 2), min(1.0, y1 + h * ratio / 2))


def area(box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def fields_of_view(box, ratio: float, windows: int = 4) -> tuple[list[tuple[float, ...]], int]:
    """The official FOVs: [shrink(box), box, grow(box), grow(grow(box)), ...] (`windows` of them; the
    shrink is capped at 0.8), and the index of the one whose area is closest to the box's."""
    if windows == 1:
        return [tuple(box)], 0
    boxes = [grow(box, -min(ratio, 0.8)), tuple(box)]
    while len(boxes) < windows:
        boxes.append(grow(boxes[-1], ratio))
    target = min(range(len(boxes)), key=lambda i: abs(area(boxes[i]) - area(box)))
    return boxes, target


def crop(image: Image.Image, box) -> Image.Image:
    w, h = image.size
    return image.convert("RGB").crop((box[0] * w, box[1] * h, box[2] * w, box[3] * h))


def pair_divergence(logits: torch.Tensor) -> torch.Tensor:
    """(F, V) logits of F views -> (F, F) ½[KL(M‖p_i) + KL(M‖p_j)] summed over the vocabulary (the code's
    `kl_div(..., "batchmean")` on one row), zero on and below the diagonal."""
    p, logp = logits.float().softmax(-1), logits.float().log_softmax(-1)
    m = 0.5 * (p[:, None] + p[None])  # (F, F, V)
    kl = F.kl_div(logp[:, None].expand_as(m), m, reduction="none").sum(-1)  # KL(M_ij‖p_i)
    return (0.5 * (kl + kl.T)).triu(diagonal=1)


def pair_contrast(logits: torch.Tensor, candidates: int, weight: float) -> torch.Tensor:
    """(F, V) -> (candidates, V): for each of the candidates/2 most divergent pairs (i < j), z_j − w·z_i and
    z_i − w·z_j, in the order of their divergence (raw logits: no softmax, no cutoff)."""
    if candidates % 2:
        raise ValueError("HALC's candidates must be even")
    views = logits.shape[0]
    top = pair_divergence(logits).flatten().topk(candidates // 2).indices
    out = []
    for flat in top.tolist():
        i, j = divmod(flat, views)
        out += [logits[j] - weight * logits[i], logits[i] - weight * logits[j]]
    return torch.stack(out).float()


def distinct_best(texts: list[str], scores: torch.Tensor, beams: int) -> list[int]:
    """Indices of the `beams` best-scoring distinct texts (first of equals), padded with the best one."""
    chosen, seen = [], set()
    for i in scores.argsort(descending=True, stable=True).tolist():
        if texts[i] not in seen:
            seen.add(texts[i])
            chosen.append(i)
        if len(chosen) == beams:
            break
    return chosen + [chosen[0]] * (beams - len(chosen))


def attention_box(scores: torch.Tensor, covered: tuple[int, int, int, int], size: tuple[int, int]):
    """The box of the largest connected set of grid cells above mean + σ of an (h, w) attention map whose grid
    covers the `covered` pixels of an image of `size` (w, h), normalised; None when no cell stands out."""
    grid = scores.float()
    hot = (grid > grid.mean() + grid.std()).numpy()
    labels, count = ndimage.label(hot)
    if count == 0:
        return None
    largest = 1 + int(torch.bincount(torch.from_numpy(labels).flatten())[1:].argmax())
    rows, cols = (labels == largest).nonzero()
    (gh, gw), (x0, y0, x1, y1) = grid.shape, covered
    cw, ch = (x1 - x0) / gw, (y1 - y0) / gh
    box = (x0 + cols.min() * cw, y0 + rows.min() * ch, x0 + (cols.max() + 1) * cw, y0 + (rows.max() + 1) * ch)
    return tuple(min(1.0, max(0.0, v / d)) for v, d in zip(box, (*size, *size)))
