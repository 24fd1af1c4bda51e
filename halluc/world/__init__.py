"""Toy world: a deterministic generator of synthetic scenes with COCO-format annotations and strong
object co-occurrence priors, for training small LVLMs that hallucinate the way real ones do.

    from halluc.world import WorldConfig, generate_world, scene_at, render_scene, yes_no_pairs
    files = generate_world("data/world/train", WorldConfig(seed=0), n_images=5000, split="train")
"""
from halluc.world.captions import caption, parse_caption
from halluc.world.coco import WORLD_VERSION, WorldFiles, generate_world, image_id
from halluc.world.qa import YesNo, question, yes_no_pairs
from halluc.world.scenes import (
    SCENE_PRIORS,
    SCENE_TYPES,
    Scene,
    SceneObject,
    WorldConfig,
    render_scene,
    sample_categories,
    sample_scene,
    scene_at,
    visible_masks,
)
from halluc.world.vocab import BY_ID, BY_NAME, CATEGORIES, NAMES, Category

__all__ = [
    "BY_ID", "BY_NAME", "CATEGORIES", "NAMES", "Category", "SCENE_PRIORS", "SCENE_TYPES", "Scene", "SceneObject",
    "WORLD_VERSION", "WorldConfig", "WorldFiles", "YesNo", "caption", "generate_world", "image_id", "parse_caption",
    "question", "render_scene", "sample_categories", "sample_scene", "scene_at", "visible_masks", "yes_no_pairs",
]
