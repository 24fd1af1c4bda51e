"""toy-llava, a few of the toy world's scenes as PNG files, and a live server on 127.0.0.1."""
from __future__ import annotations

import pytest

from tests.serve.live import LiveServer


@pytest.fixture(scope="session")
def toy_llava(tiny_models):
    return tiny_models("toy-llava")


@pytest.fixture(scope="session")
def scenes(tmp_path_factory):
    """Four rendered toy-world scenes (what toy-llava was trained on), saved as PNG, with a question each."""
    from halluc.world.scenes import NAMES, WorldConfig, render_scene, scene_at

    folder = tmp_path_factory.mktemp("scenes")
    out = []
    for i in range(4):
        scene = scene_at(WorldConfig(), "val", i)
        path = folder / f"scene{i}.png"
        render_scene(scene).save(path)
        present = {o.category for o in scene.objects}
        asked = scene.objects[0].category if i % 2 == 0 else next(n for n in NAMES if n not in present)
        out.append((path, f"Is there a {asked} in the image?"))
    return out


@pytest.fixture(scope="module")
def server(toy_llava):
    with LiveServer(toy_llava, max_wait_ms=150, max_tokens=64, default_max_tokens=32, max_prompt_chars=400,
                    max_image_pixels=200 * 200, max_body_bytes=2**20) as live:
        yield live
