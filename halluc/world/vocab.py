"""The toy world's object vocabulary: a subset of COCO with the exact COCO ids, names and supercategories.

Exact ids matter: POPE/CHAIR code written for real COCO (category lookups, synonym tables keyed by
node word) must run unchanged on the toy world's `instances.json`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    id: int              # COCO category id (ids have gaps: 12, 26, 29, ... do not exist in COCO)
    name: str            # COCO node word, also what captions and questions say
    supercategory: str
    plural: str
    aspect: float        # width / height of the glyph's box
    scale: float = 1.0   # size relative to the sampled object size (tables are big, mice small)
    max_count: int = 3   # instances per image; 1 for things a scene rarely has two of
    layer: int = 1       # 0 = drawn first (furniture, big vehicles), so small objects sit in front of it


CATEGORIES: tuple[Category, ...] = (
    Category(1, "person", "person", "people", 0.5),
    Category(2, "bicycle", "vehicle", "bicycles", 1.55, max_count=2),
    Category(3, "car", "vehicle", "cars", 1.7, scale=1.1),
    Category(6, "bus", "vehicle", "buses", 2.0, scale=1.25, max_count=1, layer=0),
    Category(10, "traffic light", "outdoor", "traffic lights", 0.45, max_count=2),
    Category(13, "stop sign", "outdoor", "stop signs", 0.72, max_count=1),
    Category(15, "bench", "outdoor", "benches", 1.8, scale=1.15, max_count=1, layer=0),
    Category(16, "bird", "animal", "birds", 1.25, scale=0.9),
    Category(17, "cat", "animal", "cats", 0.9, max_count=2),
    Category(18, "dog", "animal", "dogs", 1.35, max_count=2),
    Category(28, "umbrella", "accessory", "umbrellas", 1.1, max_count=2),
    Category(38, "kite", "sports", "kites", 0.75, max_count=2),
    Category(44, "bottle", "kitchen", "bottles", 0.42),
    Category(47, "cup", "kitchen", "cups", 1.05, scale=0.9),
    Category(48, "fork", "kitchen", "forks", 0.5, max_count=2),
    Category(49, "knife", "kitchen", "knives", 0.45, max_count=2),
    Category(51, "bowl", "kitchen", "bowls", 1.7, max_count=2),
    Category(52, "banana", "food", "bananas", 1.5, scale=0.9),
    Category(62, "chair", "furniture", "chairs", 0.72, max_count=2),
    Category(63, "couch", "furniture", "couches", 1.9, scale=1.3, max_count=1, layer=0),
    Category(64, "potted plant", "furniture", "potted plants", 0.8, max_count=2),
    Category(67, "dining table", "furniture", "dining tables", 1.6, scale=1.35, max_count=1, layer=0),
    Category(72, "tv", "electronic", "tvs", 1.35, scale=1.1, max_count=1, layer=0),
    Category(73, "laptop", "electronic", "laptops", 1.3, max_count=1),
    Category(74, "mouse", "electronic", "mice", 0.7, scale=0.85, max_count=1),
    Category(76, "keyboard", "electronic", "keyboards", 2.2, scale=1.1, max_count=1),
    Category(84, "book", "indoor", "books", 0.75),
    Category(85, "clock", "indoor", "clocks", 1.0, max_count=1),
)

BY_NAME: dict[str, Category] = {c.name: c for c in CATEGORIES}
BY_ID: dict[int, Category] = {c.id: c for c in CATEGORIES}
NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)


def coco_categories() -> list[dict]:
    """The `categories` list of a COCO instances file."""
    return [{"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in CATEGORIES]
