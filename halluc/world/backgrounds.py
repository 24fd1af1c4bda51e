"""Scene backgrounds: each scene type has its own layout and palette, so the scene is recognisable
even where no object is, which is exactly the cue a model can over-trust ("kitchen, so a cup").

Backgrounds stay desaturated and low-contrast: object glyphs are saturated and outlined, so the two never blend.
"""
from __future__ import annotations

import random
from collections.abc import Callable

from PIL import Image, ImageDraw

RGB = tuple[int, int, int]


def _jit(rng: random.Random, rgb: RGB, spread: int = 10) -> RGB:
    shift = rng.randint(-spread, spread)
    r, g, b = (max(0, min(255, v + shift + rng.randint(-4, 4))) for v in rgb)
    return r, g, b


def _split(rng: random.Random, size: int, lo: float, hi: float) -> int:
    """Row of the wall/floor (or sky/ground) boundary."""
    return int(size * rng.uniform(lo, hi))


def _tiles(d: ImageDraw.ImageDraw, box: tuple[int, int, int, int], step: int, col: RGB) -> None:
    x0, y0, x1, y1 = box
    for y in range(y0, y1, step):
        d.line([(x0, y), (x1, y)], fill=col)
    for x in range(x0, x1, step):
        d.line([(x, y0), (x, y1)], fill=col)


def kitchen(size: int, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (size, size), _jit(rng, (236, 226, 200)))
    d, h = ImageDraw.Draw(img), _split(rng, size, 0.5, 0.65)
    _tiles(d, (0, 0, size, h), max(4, size // 12), _jit(rng, (212, 200, 176)))
    d.rectangle([0, h, size, size], fill=_jit(rng, (150, 158, 168)))
    _tiles(d, (0, h, size, size), max(6, size // 6), _jit(rng, (128, 136, 146)))
    return img


def street(size: int, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (size, size), _jit(rng, (172, 208, 236)))
    d = ImageDraw.Draw(img)
    top, walk = _split(rng, size, 0.25, 0.35), _split(rng, size, 0.42, 0.5)
    x = 0
    while x < size:   # skyline blocks: flat grey, no windows (windows would read as a bus)
        w = rng.randint(size // 8, size // 4)
        d.rectangle([x, top - rng.randint(0, size // 6), x + w, walk], fill=_jit(rng, (158, 150, 146), 14))
        x += w
    d.rectangle([0, walk - size // 16, size, walk], fill=_jit(rng, (196, 192, 186)))
    d.rectangle([0, walk, size, size], fill=_jit(rng, (92, 92, 98)))
    lane, dash = int(size * rng.uniform(0.72, 0.8)), max(4, size // 10)
    for x in range(rng.randint(0, dash), size, 2 * dash):
        d.rectangle([x, lane, x + dash - 1, lane + max(1, size // 48)], fill=(235, 235, 230))
    return img


def living_room(size: int, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (size, size), _jit(rng, (214, 190, 200)))
    d, h = ImageDraw.Draw(img), _split(rng, size, 0.58, 0.7)
    stripe, col = max(3, size // 16), _jit(rng, (200, 174, 188))
    for x in range(0, size, 2 * stripe):
        d.rectangle([x, 0, x + stripe - 1, h], fill=col)
    d.rectangle([0, h, size, size], fill=_jit(rng, (176, 126, 82)))
    plank = max(3, size // 14)
    for y in range(h + plank, size, plank):
        d.line([(0, y), (size, y)], fill=_jit(rng, (150, 104, 64)))
    d.rectangle([0, h - max(1, size // 48), size, h], fill=(240, 236, 228))
    return img


def park(size: int, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (size, size), _jit(rng, (165, 205, 242)))
    d, h = ImageDraw.Draw(img), _split(rng, size, 0.3, 0.42)
    d.rectangle([0, h, size, size], fill=_jit(rng, (118, 178, 96)))
    dark = _jit(rng, (92, 150, 74))
    for _ in range(size * size // 40):   # grass tufts: texture the ground without forming shapes
        x, y = rng.randrange(size), rng.randrange(h + 1, size)
        d.line([(x, y), (x + rng.choice((-1, 0, 1)), y - 2)], fill=dark)
    return img


def office(size: int, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (size, size), _jit(rng, (204, 212, 220)))
    d, h = ImageDraw.Draw(img), _split(rng, size, 0.55, 0.68)
    panel = max(8, size // 4)
    for x in range(rng.randint(0, panel), size, panel):   # wall panel seams
        d.line([(x, 0), (x, h)], fill=_jit(rng, (186, 194, 204)))
    d.rectangle([0, h, size, size], fill=_jit(rng, (118, 124, 140)))
    speck = _jit(rng, (104, 110, 126))
    for _ in range(size * size // 30):   # carpet grain
        d.point((rng.randrange(size), rng.randrange(h + 1, size)), fill=speck)
    return img


BACKGROUNDS: dict[str, Callable[[int, random.Random], Image.Image]] = {
    "kitchen": kitchen, "street": street, "living room": living_room, "park": park, "office": office,
}
