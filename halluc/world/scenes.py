"""Procedural scenes with strong object co-occurrence priors: the toy world a small LVLM learns to hallucinate in.

A scene is a type (kitchen, street, ...) plus objects drawn from that type's prior, laid out back to front
with controlled occlusion. Everything is a pure function of a local `random.Random`, so the same config
gives byte-identical images and annotations in any process, whatever the global RNG state.

    rng = random.Random(0)
    scene = sample_scene(rng, WorldConfig())
    image = render_scene(scene)                      # PIL RGB, config.image_size square
    scene = scene_at(WorldConfig(seed=3), "val", 17) # the 17th val scene, as generate_world writes it
"""
from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

from halluc.world.backgrounds import BACKGROUNDS
from halluc.world.shapes import render_sprite
from halluc.world.vocab import BY_NAME, NAMES

# Relative weights of the objects each scene type draws from. Everything not listed is "out of prior"
# and appears only at `WorldConfig.out_of_prior_rate`. As in COCO, a few objects are common everywhere
# (person in every scene type, then chair, dog, cup, potted plant, bottle): they are POPE "popular"'s
# negatives, and a model that leans on frequency says "Yes" to them.
SCENE_PRIORS: dict[str, dict[str, float]] = {
    "kitchen": {"dining table": 6.0, "cup": 5.0, "bowl": 3.0, "person": 3.0, "fork": 2.5, "knife": 2.5,
                "chair": 2.0, "bottle": 1.5, "banana": 1.0, "potted plant": 1.0},
    "street": {"car": 6.0, "person": 5.0, "traffic light": 3.0, "bus": 2.0, "stop sign": 2.0,
               "bicycle": 1.5, "umbrella": 1.0, "dog": 1.0},
    "living room": {"couch": 6.0, "tv": 5.0, "person": 3.0, "potted plant": 2.5, "cat": 2.0, "chair": 2.0,
                    "clock": 1.5, "book": 1.5, "dog": 1.0, "cup": 1.0},
    "park": {"dog": 5.0, "bench": 5.0, "person": 4.0, "bird": 3.0, "kite": 1.5, "bicycle": 1.0,
             "umbrella": 1.0, "chair": 1.0, "bottle": 0.5},
    "office": {"laptop": 6.0, "keyboard": 5.0, "mouse": 3.0, "person": 3.0, "chair": 2.5, "cup": 1.5,
               "book": 1.5, "potted plant": 1.0, "clock": 1.0, "bottle": 1.0},
}
SCENE_TYPES: tuple[str, ...] = tuple(SCENE_PRIORS)
SPLITS: dict[str, int] = {"train": 0, "val": 1_000_000, "test": 2_000_000}   # image-id offsets
MIN_OBJECT_PX = 14   # sqrt(area) floor: below ~2 patches of 8 px a tiny ViT cannot resolve a glyph
_PLACEMENT_TRIES = 40


@dataclass(frozen=True)
class WorldConfig:
    """All knobs of the toy world. Defaults suit a patch-8 ViT at 96 px (12 x 12 patches).

    Args:
        image_size: side of the square image, px.
        min_objects, max_objects: objects sampled per image (uniform); a few may be dropped if they
            cannot be placed without hiding another object below `min_visibility`.
        object_size: range of an object's sqrt(box area) as a fraction of `image_size`, before the
            category's own scale (tables 1.35x, mice 0.85x). Must give >= 14 px.
        occlusion_rate: probability that an object (after the first) is placed on top of an earlier one;
            otherwise it is placed where it overlaps as little as possible. 0 = no deliberate occlusion.
        prior_strength: exponent on the scene's prior weights: 0 = all in-prior objects equally likely,
            1 = the weights in SCENE_PRIORS, >1 = concentrate on each scene's signature objects.
        out_of_prior_rate: probability that an object is drawn uniformly from the categories outside the
            scene's prior (a cat in a street). 0 = scenes never break their prior.
        min_visibility: no object is left with less than this fraction of its pixels visible.
        caption_min_visibility: objects less visible than this (e.g. > 60% hidden) are annotated in
            instances but not mentioned in captions, and get no "Yes" question.
        captions_per_image: captions written per image (each an independent template draw).
        seed: root seed; each (split, index) derives its own seed from it.
    """
    image_size: int = 96
    min_objects: int = 2
    max_objects: int = 5
    object_size: tuple[float, float] = (0.22, 0.4)
    occlusion_rate: float = 0.3
    prior_strength: float = 1.0
    out_of_prior_rate: float = 0.05
    min_visibility: float = 0.15
    caption_min_visibility: float = 0.4
    captions_per_image: int = 1
    seed: int = 0

    def __post_init__(self):
        lo, hi = self.object_size
        if not 1 <= self.min_objects <= self.max_objects <= 8:
            raise ValueError(f"need 1 <= min_objects <= max_objects <= 8, got {self.min_objects}, {self.max_objects}")
        if not 0 < lo <= hi <= 0.6:
            raise ValueError(f"object_size must satisfy 0 < lo <= hi <= 0.6, got {self.object_size}")
        if lo * self.image_size < MIN_OBJECT_PX:
            raise ValueError(f"objects would be {lo * self.image_size:.1f} px (< {MIN_OBJECT_PX}); "
                             f"raise object_size[0] to >= {MIN_OBJECT_PX / self.image_size:.3f} or image_size")
        for name in ("occlusion_rate", "out_of_prior_rate", "min_visibility", "caption_min_visibility"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.min_visibility > self.caption_min_visibility:
            raise ValueError("min_visibility must not exceed caption_min_visibility")
        if self.prior_strength < 0 or self.captions_per_image < 1:
            raise ValueError("prior_strength must be >= 0 and captions_per_image >= 1")


@dataclass(frozen=True)
class SceneObject:
    category: str
    box: tuple[int, int, int, int]   # x, y, w, h of the whole glyph (amodal), always inside the image
    style: int                       # seeds colour jitter and free details (clock hands): render is pure
    flip: bool
    visibility: float                # fraction of the glyph's pixels not covered by later objects


@dataclass(frozen=True)
class Scene:
    kind: str                          # a key of SCENE_PRIORS
    size: int
    objects: tuple[SceneObject, ...]   # drawing order, back to front
    style: int                         # seeds the background

    def visible(self, min_visibility: float) -> tuple[SceneObject, ...]:
        return tuple(o for o in self.objects if o.visibility >= min_visibility)


def derive_seed(seed: int, split: str, index: int) -> int:
    """Seed of scene `index` of `split`: a hash, so splits never share scenes and any index is O(1)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; choices: {', '.join(SPLITS)}")
    digest = hashlib.sha256(f"halluc.world/{seed}/{split}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def scene_at(config: WorldConfig, split: str, index: int) -> Scene:
    """The `index`-th scene of `split`, identical to what `generate_world` writes for it."""
    return sample_scene(random.Random(derive_seed(config.seed, split, index)), config)


def sample_scene(rng: random.Random, config: WorldConfig, kind: str | None = None) -> Scene:
    """Draw a scene type (uniform unless `kind` is given), its objects, and a layout."""
    kind = kind if kind is not None else rng.choice(SCENE_TYPES)
    if kind not in SCENE_PRIORS:
        raise ValueError(f"unknown scene type '{kind}'; choices: {', '.join(SCENE_TYPES)}")
    names = sample_categories(rng, config, kind, rng.randint(config.min_objects, config.max_objects))
    names.sort(key=lambda n: BY_NAME[n].layer)   # stable: furniture at the back, small things in front
    return Scene(kind, config.image_size, _layout(rng, config, names), rng.getrandbits(32))


def sample_categories(rng: random.Random, config: WorldConfig, kind: str, n: int) -> list[str]:
    """n category names from the scene prior, out-of-prior with `out_of_prior_rate`, honouring max_count."""
    prior = SCENE_PRIORS[kind]
    inside = list(prior)
    weights = [prior[c] ** config.prior_strength for c in inside]
    outside = [c for c in NAMES if c not in prior]
    names: list[str] = []
    for _ in range(n):
        for _ in range(20):   # redraw categories already at max_count (a second dining table)
            out = rng.random() < config.out_of_prior_rate
            name = rng.choice(outside) if out else rng.choices(inside, weights)[0]
            if names.count(name) < BY_NAME[name].max_count:
                names.append(name)
                break
    return names


def _box_size(rng: random.Random, config: WorldConfig, name: str) -> tuple[int, int]:
    cat, size = BY_NAME[name], config.image_size
    side = rng.uniform(*config.object_size) * size * cat.scale   # sqrt of the box area
    w = side * math.sqrt(cat.aspect)
    h = side / math.sqrt(cat.aspect)
    shrink = min(1.0, (size - 2) / max(w, h))   # long glyphs at the top of the range must still fit
    return max(4, round(w * shrink)), max(4, round(h * shrink))


def _layout(rng: random.Random, config: WorldConfig, names: list[str]) -> tuple[SceneObject, ...]:
    """Place objects back to front; keep every object at least `min_visibility` visible."""
    size = config.image_size
    placed: list[SceneObject] = []
    visible: list[np.ndarray] = []   # current visible mask of each placed object, (size, size) bool
    areas: list[int] = []
    for name in names:
        w, h = _box_size(rng, config, name)
        style, flip = rng.getrandbits(32), rng.random() < 0.5
        mask = render_sprite(name, w, h, style, flip)[1]
        spot = None
        if placed and rng.random() < config.occlusion_rate:
            target = rng.randrange(len(placed))
            spot = _find_spot(rng, config, mask, visible, areas, target, placed[target].box)
        if spot is None:   # no occlusion wanted, or none possible without burying an object
            spot = _find_spot(rng, config, mask, visible, areas)
        if spot is None:
            continue   # nowhere at all (a crowded image): drop it rather than hide another object
        full = _paste(mask, spot, size)
        visible = [v & ~full for v in visible]
        visible.append(full)
        areas.append(int(mask.sum()))
        placed.append(SceneObject(name, (spot[0], spot[1], w, h), style, flip, 1.0))
    return tuple(
        SceneObject(o.category, o.box, o.style, o.flip, round(float(v.sum()) / max(a, 1), 4))
        for o, v, a in zip(placed, visible, areas)
    )


def _paste(mask: np.ndarray, xy: tuple[int, int], size: int) -> np.ndarray:
    full = np.zeros((size, size), dtype=bool)
    h, w = mask.shape
    full[xy[1]:xy[1] + h, xy[0]:xy[0] + w] = mask
    return full


def _find_spot(rng: random.Random, config: WorldConfig, mask: np.ndarray, visible: list[np.ndarray],
               areas: list[int], target: int | None = None,
               target_box: tuple[int, int, int, int] | None = None) -> tuple[int, int] | None:
    """A top-left corner for `mask`, or None.

    With a target: a spot covering >= 10% of the target. Without: the first overlap-free spot, else the
    least-overlapping one. Either way every placed object keeps >= min_visibility of its pixels.
    """
    size, (h, w) = config.image_size, mask.shape
    best, best_overlap = None, None
    for _ in range(_PLACEMENT_TRIES):
        xy = _candidate(rng, size, w, h, target_box)
        full = _paste(mask, xy, size)
        left = [int((v & ~full).sum()) for v in visible]
        if any(n < config.min_visibility * a for n, a in zip(left, areas)):
            continue
        if target is not None:
            if left[target] <= 0.9 * areas[target]:
                return xy
            continue
        overlap = sum(a - n for n, a in zip(left, areas))
        if overlap == 0:
            return xy
        if best_overlap is None or overlap < best_overlap:
            best, best_overlap = xy, overlap
    return best


def _candidate(rng: random.Random, size: int, w: int, h: int, target_box) -> tuple[int, int]:
    if target_box is None:
        return rng.randint(0, size - w), rng.randint(0, size - h)
    tx, ty, tw, th = target_box   # centre the new object on a random point of the target's box
    cx, cy = tx + rng.random() * tw, ty + rng.random() * th
    return (min(max(0, round(cx - w / 2)), size - w), min(max(0, round(cy - h / 2)), size - h))


def render_scene(scene: Scene) -> Image.Image:
    """The scene as an RGB image: background, then each object's glyph, back to front."""
    canvas = BACKGROUNDS[scene.kind](scene.size, random.Random(scene.style)).convert("RGBA")
    for o in scene.objects:
        sprite = render_sprite(o.category, o.box[2], o.box[3], o.style, o.flip)[0]
        canvas.alpha_composite(sprite, dest=(o.box[0], o.box[1]))
    return canvas.convert("RGB")


def visible_masks(scene: Scene) -> np.ndarray:
    """(n_objects, size, size) bool: the pixels of each object that no later object covers."""
    masks = np.zeros((len(scene.objects), scene.size, scene.size), dtype=bool)
    cover = np.zeros((scene.size, scene.size), dtype=bool)
    for i in range(len(scene.objects) - 1, -1, -1):   # front to back: what is in front is already covered
        o = scene.objects[i]
        full = _paste(render_sprite(o.category, o.box[2], o.box[3], o.style, o.flip)[1], o.box[:2], scene.size)
        masks[i] = full & ~cover
        cover |= full
    return masks
