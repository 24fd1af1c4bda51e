"""Toy world: determinism, COCO validity, drawability, priors, captions, and yes/no pairs."""
from __future__ import annotations

import hashlib
import itertools
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from halluc.world import (
    CATEGORIES,
    NAMES,
    SCENE_PRIORS,
    SCENE_TYPES,
    Scene,
    SceneObject,
    WorldConfig,
    caption,
    generate_world,
    parse_caption,
    render_scene,
    sample_categories,
    sample_scene,
    scene_at,
    visible_masks,
    yes_no_pairs,
)
from halluc.world.shapes import GLYPHS, render_sprite

# Ids and supercategories from the official COCO 2014/2017 instances files.
COCO_TRUTH = {
    "person": (1, "person"), "bicycle": (2, "vehicle"), "car": (3, "vehicle"), "bus": (6, "vehicle"),
    "traffic light": (10, "outdoor"), "stop sign": (13, "outdoor"), "bench": (15, "outdoor"),
    "bird": (16, "animal"), "cat": (17, "animal"), "dog": (18, "animal"), "umbrella": (28, "accessory"),
    "kite": (38, "sports"), "bottle": (44, "kitchen"), "cup": (47, "kitchen"), "fork": (48, "kitchen"),
    "knife": (49, "kitchen"), "bowl": (51, "kitchen"), "banana": (52, "food"), "chair": (62, "furniture"),
    "couch": (63, "furniture"), "potted plant": (64, "furniture"), "dining table": (67, "furniture"),
    "tv": (72, "electronic"), "laptop": (73, "electronic"), "mouse": (74, "electronic"),
    "keyboard": (76, "electronic"), "book": (84, "indoor"), "clock": (85, "indoor"),
}
SMALL = WorldConfig(seed=7)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return generate_world(root, SMALL, n_images=12, split="val")


def test_vocabulary_uses_exact_coco_ids_and_names():
    assert len(CATEGORIES) >= 20
    assert {c.name: (c.id, c.supercategory) for c in CATEGORIES} == COCO_TRUTH


def test_every_category_draws_at_min_and_max_size():
    assert set(GLYPHS) == set(NAMES)
    for c in CATEGORIES:
        for w, h in ((max(6, round(14 * c.aspect ** 0.5)), max(6, round(14 / c.aspect ** 0.5))), (48, 40)):
            img, mask = render_sprite(c.name, w, h, 1, False)
            assert img.size == (w, h) and mask.shape == (h, w)
            assert mask.mean() > 0.2, f"{c.name} at {w}x{h} covers only {mask.mean():.0%} of its box"


def test_glyphs_differ_between_categories():
    # Same box, neutral background: any two glyphs must differ by a clear margin pixel for pixel
    # (closest pair today, bench vs chair, is ~35 grey levels on average).
    def pixels(name):
        canvas = Image.new("RGBA", (32, 32), (128, 128, 128, 255))
        canvas.alpha_composite(render_sprite(name, 32, 32, 1, False)[0])
        return np.asarray(canvas.convert("RGB"), dtype=float)
    drawn = {name: pixels(name) for name in NAMES}
    for a, b in itertools.combinations(NAMES, 2):
        assert np.abs(drawn[a] - drawn[b]).mean() > 25, (a, b)


def test_generation_is_byte_identical_and_seed_dependent(world, tmp_path):
    random.seed(123)
    np.random.seed(123)   # global RNG state must not matter
    again = generate_world(tmp_path / "again", SMALL, n_images=12, split="val")
    assert _digest(world.root) == _digest(again.root)
    other = generate_world(tmp_path / "other", WorldConfig(seed=8), n_images=12, split="val")
    differ = [k for k, v in _digest(other.root).items() if _digest(world.root).get(k) != v]
    assert len(differ) >= 12


def test_generation_is_identical_in_a_fresh_process(world, tmp_path):
    # A different hash seed catches any dependence on set/dict order of strings. The child loads
    # halluc.world without running halluc/__init__.py, which imports torch (seconds) and is not needed.
    code = ("import sys, types; pkg = types.ModuleType('halluc'); pkg.__path__ = [sys.argv[2]]; "
            "sys.modules['halluc'] = pkg; from halluc.world import generate_world, WorldConfig; "
            "generate_world(sys.argv[1], WorldConfig(seed=7), n_images=12, split='val')")
    env = {**os.environ, "PYTHONHASHSEED": "999"}
    pkg_dir = Path(__file__).resolve().parents[2] / "halluc"
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "fresh"), str(pkg_dir)], check=True, env=env)
    assert _digest(tmp_path / "fresh") == _digest(world.root)


def test_splits_have_their_own_scenes_and_disjoint_ids(world, tmp_path):
    train = generate_world(tmp_path / "train", SMALL, n_images=12, split="train")
    def ids(f):
        return set(COCO(str(f.instances)).getImgIds())
    assert not ids(train) & ids(world)
    assert scene_at(SMALL, "train", 0) != scene_at(SMALL, "val", 0)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools vs numpy 2
def test_annotations_load_with_pycocotools_and_match_scenes(world):
    coco = COCO(str(world.instances))
    assert sorted(coco.getCatIds()) == sorted(i for i, _ in COCO_TRUTH.values())
    for index, img_id in enumerate(sorted(coco.getImgIds())):
        scene = scene_at(SMALL, "val", index)
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=img_id)), key=lambda a: a["id"])
        assert [coco.cats[a["category_id"]]["name"] for a in anns] == [o.category for o in scene.objects]
        for ann, obj, vis in zip(anns, scene.objects, visible_masks(scene)):
            assert ann["amodal_bbox"] == list(obj.box) and ann["visibility"] == obj.visibility
            assert ann["iscrowd"] == 0 and ann["area"] == vis.sum() > 0
            assert np.array_equal(coco.annToMask(ann).astype(bool), vis)
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= scene.size and y + h <= scene.size
        assert (Path(world.images) / coco.imgs[img_id]["file_name"]).exists()


def test_captions_file_loads_and_mentions_exactly_the_visible_objects(world):
    caps = COCO(str(world.captions))
    for index, img_id in enumerate(sorted(caps.getImgIds())):
        scene = scene_at(SMALL, "val", index)
        [ann] = caps.loadAnns(caps.getAnnIds(imgIds=img_id))
        visible = Counter(o.category for o in scene.visible(SMALL.caption_min_visibility))
        assert parse_caption(ann["caption"]) == visible, ann["caption"]


def test_captions_over_many_scenes_match_visibility():
    rng = random.Random(0)
    hidden_seen = 0
    for _ in range(300):
        scene = sample_scene(rng, WorldConfig(occlusion_rate=0.6))
        text = caption(scene, rng, 0.4)
        assert parse_caption(text) == Counter(o.category for o in scene.visible(0.4)), text
        hidden_seen += any(o.visibility < 0.4 for o in scene.objects)
    assert hidden_seen > 10   # the rule was actually exercised


def test_heavily_occluded_object_is_annotated_but_not_captioned():
    scene = Scene("kitchen", 96, (SceneObject("dining table", (5, 40, 60, 38), 1, False, 0.3),
                                  SceneObject("cup", (10, 10, 24, 22), 2, False, 1.0),
                                  SceneObject("cup", (50, 10, 24, 22), 3, False, 1.0)), 4)
    text = caption(scene, random.Random(0), 0.4)
    assert parse_caption(text) == Counter({"cup": 2}) and "two cups" in text


def test_boxes_inside_image_and_visibility_matches_masks():
    rng = random.Random(1)
    for _ in range(100):
        scene = sample_scene(rng, SMALL)
        assert SMALL.min_objects - 1 <= len(scene.objects) <= SMALL.max_objects   # at most one rare drop
        for obj, vis in zip(scene.objects, visible_masks(scene)):
            x, y, w, h = obj.box
            assert x >= 0 and y >= 0 and x + w <= scene.size and y + h <= scene.size
            assert min(w, h) >= 6 and (w * h) ** 0.5 >= 14
            full = render_sprite(obj.category, w, h, obj.style, obj.flip)[1].sum()
            assert obj.visibility == pytest.approx(vis.sum() / full, abs=1e-4)
            assert obj.visibility >= SMALL.min_visibility
        assert render_scene(scene).size == (scene.size, scene.size)


def _presence(config: WorldConfig, kind: str, n: int = 3000) -> Counter:
    rng = random.Random(0)
    return Counter(c for _ in range(n) for c in set(sample_categories(rng, config, kind, 4)))


def test_cooccurrence_follows_the_configured_priors():
    kitchen, street = _presence(SMALL, "kitchen"), _presence(SMALL, "street")
    assert kitchen["cup"] / 3000 > 0.5 and kitchen["dining table"] / 3000 > 0.5
    assert kitchen["bus"] / 3000 < 0.03 and street["fork"] / 3000 < 0.03
    assert street["car"] / 3000 > 0.5 and street["traffic light"] / 3000 > 0.3
    pure = _presence(WorldConfig(out_of_prior_rate=0.0), "kitchen")
    assert set(pure) <= set(SCENE_PRIORS["kitchen"])


def test_prior_strength_and_out_of_prior_rate_act_as_documented():
    flat = _presence(WorldConfig(prior_strength=0.0), "office")
    sharp = _presence(WorldConfig(prior_strength=3.0), "office")
    assert flat["clock"] > 2 * sharp["clock"] and sharp["laptop"] > flat["laptop"]
    rng, cfg = random.Random(0), WorldConfig(out_of_prior_rate=0.2)
    names = [(k, c) for k in SCENE_TYPES for _ in range(500) for c in sample_categories(rng, cfg, k, 1)]
    outside = sum(c not in SCENE_PRIORS[k] for k, c in names) / len(names)
    assert outside == pytest.approx(0.2, abs=0.03)


def test_yes_no_pairs_are_truthful_and_use_the_prior_for_hard_negatives():
    rng, sources = random.Random(0), Counter()
    for _ in range(200):
        scene = sample_scene(rng, SMALL)
        present = {o.category for o in scene.objects}
        for qa in yes_no_pairs(scene, rng, SMALL, prior_negative_rate=0.5):
            sources[qa.source] += 1
            assert qa.question == f"Is there {'an' if qa.category[0] in 'aeiou' else 'a'} {qa.category} in the image?"
            assert (qa.answer == "Yes") == (qa.category in present)
            if qa.source == "prior":
                assert qa.category in SCENE_PRIORS[scene.kind]
            if qa.answer == "Yes":
                assert qa.category in {o.category for o in scene.visible(SMALL.caption_min_visibility)}
    assert sources["prior"] > 150 and sources["random"] > 150 and sources["present"] > 400


def test_config_rejects_objects_a_patch8_vit_cannot_see():
    with pytest.raises(ValueError, match="px"):
        WorldConfig(image_size=64, object_size=(0.15, 0.3))
    WorldConfig(image_size=64)   # the defaults work at 64 px too
